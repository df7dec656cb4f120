"""OpenSSH ``sshd`` on 127.0.0.1: the stand-in for every EC2 instance.

The provider talks to instances only over SSH/rsync, so a real sshd with a
real ``ubuntu`` user is the most faithful fake: the user's home holds the kit at
``~/ramp-kits/iris`` (with generated data, owned by ubuntu) and its ``~/.profile``
puts the RAMP virtualenv on PATH, the way the seed's Step 1 prepares an AMI;
so ``ramp-test`` and ``mprof`` are found by a *login* shell only, as on the AMI.

Host and client keys are generated per run, and a ``known_hosts`` file is
provided so clients verify the host key instead of accepting any. sshd runs in
the foreground (``-D -e``) so the PID we hold is sshd's own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import tempfile

from testbench._proc import children_of, free_port, stop_pid, tail, tcp_banner, wait_until

USER = "ubuntu"
RAMP_VENV_BIN = "/opt/ramp-airflow/ramp-venv/bin"
KIT_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kit")
# Relative to the user's home: the remote kit folder. One per test process, so that runs sharing
# this machine (and its one `ubuntu` user) never pull a kit away from each other mid-training.
KIT_REL = f"ramp-kits/bench-{os.getpid()}/iris"
MARK_BEGIN, MARK_END = "# >>> ramp-airflow bench >>>", "# <<< ramp-airflow bench <<<"
PROFILE_BLOCK = f'{MARK_BEGIN}\nexport PATH="{RAMP_VENV_BIN}:$PATH"\n{MARK_END}\n'


@dataclasses.dataclass
class SSHInstance:
    """A running bench sshd. ``key_path``/``known_hosts`` are for the clients."""

    host: str
    port: int
    user: str
    home: str
    key_path: str
    public_key: str
    known_hosts: str
    known_hosts_line: str
    base_dir: str
    config: str
    proc: subprocess.Popen | None = None

    remote_kit_folder = "~/" + KIT_REL
    kit_path_from_home = KIT_REL

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def kit_dir(self) -> str:
        """The kit's absolute path on the (local) instance filesystem."""
        return os.path.join(self.home, KIT_REL)

    def ssh_argv(self) -> list[str]:
        """``ssh`` with the bench key and strict host key checking, no host."""
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            self.key_path,
            "-p",
            str(self.port),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=10",
        ]

    def rsync_rsh(self) -> str:
        """The value for ``rsync -e`` (rsync splits it like a shell would)."""
        return shlex.join(self.ssh_argv())

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}"

    def run(
        self, argv: list[str], cwd: str | None = KIT_REL, login: bool = True, timeout: float = 120, **kwargs
    ) -> subprocess.CompletedProcess:
        """Run ``argv`` on the instance through a login shell, in ``cwd``."""
        inner = shlex.join(argv)
        if cwd:
            inner = f"cd {shlex.quote(cwd)} && {inner}"
        remote = shlex.join(["bash", "-lc", inner]) if login else inner
        return subprocess.run(
            self.ssh_argv() + [self.destination, remote], capture_output=True, text=True, timeout=timeout, **kwargs
        )

    def start(self, timeout: float = 15.0) -> None:
        log = open(os.path.join(self.base_dir, "sshd.log"), "a")
        with log:
            self.proc = subprocess.Popen(
                ["/usr/sbin/sshd", "-D", "-e", "-f", self.config],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            wait_until(lambda: self.proc.poll() is not None or tcp_banner(self.port, b"SSH-"), timeout, "sshd banner")
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"sshd not ready:\n{self.log_tail()}") from None
        if self.proc.poll() is not None:
            raise RuntimeError(f"sshd exited {self.proc.returncode}:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc.pid, proc=self.proc)

    def session_pids(self) -> list[int]:
        """PIDs of the per-connection sshd processes (children of our sshd)."""
        return children_of(self.proc.pid) if self.proc else []

    def drop_connections(self) -> None:
        """End every open SSH connection, as a network drop would, by PID."""
        for pid in self.session_pids():
            stop_pid(pid, timeout=5)

    def restart(self, drop_connections: bool = True) -> None:
        """Stop sshd and start it again on the same port with the same keys.

        With ``drop_connections`` (default) open sessions are ended too;
        otherwise they survive the listener, as with a real sshd restart.
        """
        if drop_connections:
            self.drop_connections()
        self.stop()
        self.start()

    def kill_training(self, submission_id: int) -> None:
        """
        Kill a submission's training job by the PID its record holds, as terminating a real instance
        would: the bench's instances are one machine, and a job left running there would write into
        the next test's training of the same submission.
        """
        record = os.path.join(self.kit_dir, "submissions", f"submission_{submission_id:09d}", "training_job", "pid")
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
            with open(record) as f:
                os.killpg(int(f.read()), signal.SIGKILL)

    def log_tail(self, n: int = 40) -> str:
        return tail(os.path.join(self.base_dir, "sshd.log"), n)


def _keygen(path: str, comment: str) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path], check=True, stdin=subprocess.DEVNULL
    )
    with open(path + ".pub") as f:
        return f.read().strip()


def _ensure_profile_block(profile: str, uid: int, gid: int) -> None:
    """Put the RAMP venv on the login PATH, once: like an AMI's setup it is never taken away."""
    text = open(profile).read() if os.path.exists(profile) else ""
    if MARK_BEGIN in text:
        return
    with open(profile, "a") as f:
        f.write(PROFILE_BLOCK)
    os.chown(profile, uid, gid)


def install_kit(home: str, uid: int, gid: int) -> str:
    """Copy the bench kit to ``home/KIT_REL`` with data, owned by the user."""
    kit = os.path.join(home, KIT_REL)
    shutil.rmtree(kit, ignore_errors=True)  # a leftover of a killed run
    shutil.copytree(KIT_SRC, kit, ignore=shutil.ignore_patterns("data", "training_output", "__pycache__"))
    subprocess.run([f"{RAMP_VENV_BIN}/python", "prepare_data.py", kit], cwd=kit, check=True)
    root = kit
    while root != home:
        os.chown(root, uid, gid)
        root = os.path.dirname(root)
    for root, dirs, files in os.walk(kit):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid)
    return kit


def _write_config(base: str, port: int) -> str:
    config = os.path.join(base, "sshd_config")
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {base}/host_ed25519",
        f"PidFile {base}/sshd.pid",
        f"AuthorizedKeysFile {base}/authorized_keys",
        "StrictModes no",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        # PAM: the AMI-like user has a locked password ("!"), which
        # sshd rejects without PAM even for key logins.
        "UsePAM yes",
        f"AllowUsers {USER}",
        "PermitRootLogin no",
        "X11Forwarding no",
        "PrintMotd no",
        "MaxStartups 50:30:100",
        "MaxSessions 50",
        "Subsystem sftp internal-sftp",
        "LogLevel VERBOSE",
    ]
    with open(config, "w") as f:
        f.write("\n".join(lines) + "\n")
    return config


@contextlib.contextmanager
def running_instance(port: int | None = None):
    """Start the bench sshd, yield an :class:`SSHInstance`, always clean up."""
    pw = pwd.getpwnam(USER)
    port = port or free_port()
    base = tempfile.mkdtemp(prefix="bench-ssh-")
    os.chmod(base, 0o711)  # sshd reads authorized_keys as the user
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation
    profile = os.path.join(pw.pw_dir, ".profile")
    kits = os.path.join(pw.pw_dir, "ramp-kits")
    inst = None
    try:
        host_pub = _keygen(os.path.join(base, "host_ed25519"), "bench-host")
        client_pub = _keygen(os.path.join(base, "client_ed25519"), "bench-client")
        authorized = os.path.join(base, "authorized_keys")
        with open(authorized, "w") as f:
            f.write(client_pub + "\n")
        os.chmod(authorized, 0o644)
        kh_line = f"[127.0.0.1]:{port} " + " ".join(host_pub.split()[:2])
        known_hosts = os.path.join(base, "known_hosts")
        with open(known_hosts, "w") as f:
            f.write(kh_line + "\n")
        install_kit(pw.pw_dir, pw.pw_uid, pw.pw_gid)
        _ensure_profile_block(profile, pw.pw_uid, pw.pw_gid)
        inst = SSHInstance(
            host="127.0.0.1",
            port=port,
            user=USER,
            home=pw.pw_dir,
            key_path=os.path.join(base, "client_ed25519"),
            public_key=client_pub,
            known_hosts=known_hosts,
            known_hosts_line=kh_line,
            base_dir=base,
            config=_write_config(base, port),
        )
        inst.start()
        yield inst
    finally:
        if inst is not None:
            inst.stop()
        shutil.rmtree(os.path.join(pw.pw_dir, os.path.dirname(KIT_REL)), ignore_errors=True)
        with contextlib.suppress(OSError):  # only when no other run's kit is left in it
            os.rmdir(kits)
        shutil.rmtree(base, ignore_errors=True)
