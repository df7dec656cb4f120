"""
ramp-engine 0.10.1's own dispatcher against ``ramp_aws_train_loop``, side by side on one stack in one run.

One bench stack (PostgreSQL with the RAMP database seeded by ramp-database, moto for EC2 with
loopback addresses, the bench sshd on port 22 as every instance, real ``ramp-test`` under ``mprof``)
serves both sides, one after the other, on fresh copies of the seeded ``random_forest`` made ``new``
in one transaction:

- dispatcher: ``ramp-launch dispatcher`` from the RAMP virtualenv, ``worker_type: aws`` (AWSWorker),
  ``n_workers: 3``, ``hunger_policy: exit``; started after each case's submissions are new, it
  exits once they are all done.
- ramp_aws_train_loop: ``<venv>/bin/ramp_aws_train_loop config.yml`` as the README tells a user, on a
  fresh empty AIRFLOW_HOME with no AIRFLOW* variable in its environment; started once, after the first
  case's submissions are new, and kept running across the cases (start-up is the first case's): from
  the second case on, submissions arrive at a running, idle loop, as they do during a challenge, and
  halfway between two of its looks at the database (every 5 s): the wait a submission has on average.

Both: check_status_interval_secs 1, check_finished_training_interval_secs 1, train_loop_interval_secs 5,
memory_profiling on. Cases (``--cases``, run in this order): ``start``, one submission new as the side
starts (its start-up, to the claim and to ``training``); ``3`` at once with instant boots, ``10`` at once with EC2
status checks held ``initializing`` for 20 s, ``50`` at once with instant boots.

Figures per side and case: start-up (process started -> first ``sent_to_training_timestamp``, and -> first
``training``; in the first case only), detection (new -> claimed, median; for a running loop, the part
until its next look, from its logs), makespan (new -> last final state), latency (new -> final, median),
CPU seconds per submission (user+system of the side's whole process tree, exited children included),
billed idle seconds per submission (each instance's moto launch time -> its termination, summed, minus
each training's own duration from its ``mprof.dat``), the machine's busy share, peak RSS of the side's process
tree (0.5 s samples) and its PSS (2 s samples); for ramp_aws_train_loop, CPU by kind of process.
Final-state times come from a trigger on ``submissions.state`` (benchmarks/ramp_submissions.py).

Runs as root inside a fresh network namespace only (the dispatcher's ssh has no port option: the
bench sshd must listen on 127.0.0.1:22):

    unshare -n bash -c 'ip link set lo up && .venv/bin/python benchmarks/versus_dispatcher.py'

Options: ``--cases start 3 10 50``, ``--sides dispatcher airflow``, ``--idle 30`` (seconds of the idle loop's
CPU measured after the first case), ``--metadata sqlite|postgres`` (Airflow's metadata database), ``--venv PATH`` (default: this checkout's
``.venv``), ``--json FILE``, ``--keep``, ``--timeout``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.loop_polls import halfway_between_looks, loop_looks, wait_for_look  # noqa: E402
from benchmarks.orchestration import utc_epoch  # noqa: E402
from benchmarks.ramp_submissions import (  # noqa: E402
    add_new_submissions,
    final_times,
    first_time,
    log_state_changes,
    remove_folders,
    retire_seeded,
)
from benchmarks.stack_probe import PeakRss, ProcessTrees  # noqa: E402
from ramp_airflow.utils import ec2_tags, layout  # noqa: E402
from testbench._proc import group_members, stop_pid, wait_until  # noqa: E402
from testbench.ec2 import assert_loopback, recorded_terminations, running_ec2  # noqa: E402
from testbench.event_config import write_event_config  # noqa: E402
from testbench.instance import RAMP_VENV_BIN, running_instance  # noqa: E402
from testbench.netguard import loopback_only  # noqa: E402
from testbench.postgres import running_postgres  # noqa: E402
from testbench.ramp_database import seed_ramp_database  # noqa: E402

# name -> (submissions arriving at once, seconds EC2 status checks stay initializing)
# "start" is one submission, new as the side starts: it measures the start-up; run first (the default),
# it leaves ramp_aws_train_loop running and idle when the other cases' submissions arrive.
CASES = {"start": (1, 0.0), "3": (3, 0.0), "10": (10, 20.0), "50": (50, 0.0)}
INTERVALS = {"check_status_interval_secs": 1, "check_finished_training_interval_secs": 1, "train_loop_interval_secs": 5}
SIDES = ("dispatcher", "airflow")
# The dispatcher's worker config takes these from ramp_aws_train_loop's config: same names, same values.
SHARED_AWS_FIELDS = (
    "region_name",
    "ami_image_name",
    "ami_user_name",
    "instance_type",
    "key_name",
    "key_path",
    "security_group",
    "memory_profiling",
    *INTERVALS,
)
LABELS = {"dispatcher": "ramp-engine dispatcher", "airflow": "ramp_aws_train_loop"}
N_WORKERS = 3
# AWSWorker runs `ssh -o 'StrictHostKeyChecking no'`: the host keys it accepts go to a file of this run,
# not to root's known_hosts (OpenSSH reads the passwd home, not $HOME). Its spot-reclaim check runs curl
# on the instance against EC2's metadata address, which has no route in the namespace: pointed at a
# closed loopback port instead, it fails the same way without a connection attempt off loopback.
SSH_WRAPPER = """#!/bin/bash
exec /usr/bin/ssh -o UserKnownHostsFile={known_hosts} -o GlobalKnownHostsFile=/dev/null \\
    "${{@//169.254.169.254/127.0.0.1:9}}"
"""


def require_fresh_namespace() -> None:
    """Refuse to run unless the only network interface is loopback, and as root (sshd on port 22)."""
    interfaces = sorted(name for _, name in socket.if_nameindex())
    if interfaces != ["lo"]:
        sys.exit(
            f"network interfaces {interfaces}: run in a fresh network namespace, "
            "unshare -n bash -c 'ip link set lo up && ...'"
        )
    if os.geteuid() != 0:
        sys.exit("run as root: the bench sshd listens on port 22, where ramp-engine's ssh goes")


def training_seconds(instance, sid: int) -> float:
    """The training's own duration: the first to the last sample of its mprof.dat on the instance."""
    path = Path(instance.home, layout.remote_submission_dir(instance.remote_kit_folder, sid), layout.MPROF_FILE)
    try:
        stamps = [float(line.split()[2]) for line in path.read_text().splitlines() if line.startswith("MEM ")]
    except (OSError, IndexError, ValueError):
        return 0.0
    return stamps[-1] - stamps[0] if len(stamps) > 1 else 0.0


def instances_since(ec2, since: float) -> list:
    """moto's instances launched at or after ``since`` (the bench's backend is a thread of this process)."""
    for _ in range(5):
        with contextlib.suppress(RuntimeError):  # the server thread changed the dict meanwhile
            return [
                inst
                for reservation in list(ec2.backend().reservations.values())
                for inst in list(reservation.instances)
                if utc_epoch(inst.launch_time) >= since - 1
            ]
    raise RuntimeError("moto's reservations kept changing")


def submission_of(inst) -> int | None:
    """The submission an instance trained: ramp-airflow's tag, or AWSWorker's Name tag (the folder name)."""
    tags = {t["key"]: t["value"] for t in inst.get_tags()}
    if ec2_tags.SUBMISSION_ID in tags:
        return int(tags[ec2_tags.SUBMISSION_ID])
    match = re.fullmatch(r"submission_(\d+)", tags.get("Name", ""))
    return int(match.group(1)) if match else None


class Case:
    """One batch of one side: its submissions, when they became new, and what the side did with them."""

    def __init__(self, name: str, bench: Bench, side: str, arrive_at: float | None = None):
        self.name, self.bench, self.side = name, bench, side
        self.n, self.boot_delay = CASES[name]
        bench.ec2.set_status_delay(self.boot_delay)
        self.ids, self.t_new = add_new_submissions(
            bench.ramp, bench.template, self.n, prefix=f"vs{side[0]}{name}_", commit_at=arrive_at
        )
        self.machine = psutil.cpu_times()

    def wait_final(self, timeout: float, alive=lambda: True) -> dict:
        """Wait (bounded) until every submission is final; stop early if ``alive()`` turns false."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_addresses()
            final = final_times(self.bench.ramp, self.ids)
            if len(final) == self.n or not alive():
                return final
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.side} case {self.name}: {len(final)}/{self.n} final after {timeout:.0f} s")
            time.sleep(0.25)

    def check_addresses(self) -> None:
        """Network safety: the addresses moto reports for the case's instances (what both sides contact) are loopback."""
        for inst in instances_since(self.bench.ec2, self.t_new):
            for address in (inst.public_ip, inst.private_ip):
                if address is not None:  # a terminated instance has none
                    assert_loopback(address)

    def wait_terminated(self, timeout: float = 120) -> list:
        """Wait (bounded) until every instance launched since the case began is terminated; return them."""
        terminated = self.bench.terminations
        with contextlib.suppress(TimeoutError):
            wait_until(
                lambda: all(i.id in terminated for i in instances_since(self.bench.ec2, self.t_new)),
                timeout,
                "the case's instances to be terminated",
                0.5,
            )
        return instances_since(self.bench.ec2, self.t_new)

    def figures(self, final: dict, started: float | None, cpu: float, peak: tuple[int, int]) -> dict:
        """The case's figures, from the RAMP database, moto and the instance's files."""
        bench = self.bench
        machine_now = psutil.cpu_times()
        machine_idle = sum(getattr(machine_now, f) - getattr(self.machine, f) for f in ("idle", "iowait"))
        machine_busy = 1 - machine_idle / (sum(machine_now) - sum(self.machine))
        bench.ec2.set_status_delay(0)  # boots of later launches (none of this case's) are instant again
        with bench.ramp.cursor() as cur:
            cur.execute("SELECT id, sent_to_training_timestamp FROM submissions WHERE id = ANY(%s)", (self.ids,))
            claimed = {sid: utc_epoch(at) for sid, at in cur.fetchall()}
        bench.ramp.commit()
        instances = self.wait_terminated()
        now = time.time()
        billed = 0.0
        for inst in instances:
            billed += bench.terminations.get(inst.id, now) - utc_epoch(inst.launch_time)
        trained = {sid: training_seconds(bench.instance, sid) for sid in self.ids}
        claims = [claimed[sid] for sid in self.ids if claimed.get(sid)]
        ends = [final[sid][1] for sid in self.ids if sid in final]
        states: dict[str, int] = {}
        for sid in self.ids:
            state = final[sid][0] if sid in final else "not final"
            states[state] = states.get(state, 0) + 1
        remove_folders(bench.ramp, bench.template, self.ids)
        return {
            "n": self.n,
            "boot_delay": self.boot_delay,
            "states": states,
            "startup": min(claims) - started if started is not None and claims else None,
            "startup_training": (
                training - started
                if started is not None and (training := first_time(bench.ramp, self.ids, "training"))
                else None
            ),
            "detect": statistics.median(c - self.t_new for c in claims) if claims else None,
            "makespan": max(ends) - self.t_new if ends else None,
            "latency": statistics.median(e - self.t_new for e in ends) if ends else None,
            "cpu_per_sub": cpu / self.n,
            "idle_per_sub": (billed - sum(trained.values())) / self.n,
            # Every process of the machine: the side, moto, sshd, the trainings, this script.
            "machine_busy_pct": 100 * machine_busy,
            "rss_peak_mib": peak[0] / 2**20,
            "pss_peak_mib": peak[1] / 2**20,
            "instances": len(instances),
            "unterminated": sum(i.id not in bench.terminations for i in instances),
            "train_median": statistics.median(trained.values()),
            "submissions": [
                {
                    "id": sid,
                    "state": final.get(sid, ("not final",))[0],
                    "claimed": claimed.get(sid),
                    "final": final[sid][1] if sid in final else None,
                    "train": trained[sid],
                }
                for sid in self.ids
            ],
            "instance_submissions": [submission_of(i) for i in instances],
            "t_new": self.t_new,
        }


class Bench:
    """The shared stack and the RAMP database connection the cases use."""

    def __init__(self, cluster, ramp_db, instance, ec2, terminations, work: Path, args):
        self.cluster, self.ramp_db, self.instance, self.ec2 = cluster, ramp_db, instance, ec2
        self.terminations, self.work, self.args = terminations, work, args
        self.ramp = ramp_db.connect(autocommit=False)
        self.template = ramp_db.submissions["random_forest"]
        # ramp_aws_train_loop's config.yml, written as the test bench writes one for its event.
        (work / "airflow").mkdir()
        self.config = write_event_config(work / "airflow" / "config.yml", ramp_db, instance, ec2, **INTERVALS)
        self.aws_config = yaml.safe_load(self.config.read_text())["aws"]

    def timeout(self, case: Case) -> float:
        return self.args.timeout + 20 * case.n + 20 * case.boot_delay


def start_side(argv: list[str], cwd: Path, env: dict, log) -> tuple[subprocess.Popen, ProcessTrees]:
    """Start a side in a session of its own (stopped by its process groups), and follow its process tree."""
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    return proc, ProcessTrees([], roots=[proc.pid])


def exited(pid: int) -> bool:
    """Whether a child has exited, without reaping it (its rusage is read when it is reaped)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def stop_tree(proc: subprocess.Popen, trees: ProcessTrees, first: int, grace: float) -> None:
    """Send ``first`` to the process, wait ``grace`` s, then SIGKILL every process group of its tree, by id."""
    trees.processes()  # follows the process groups of the tree as it is now
    pgids = trees.pgids - {os.getpgrp()}
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, first)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    for pgid in pgids:
        if group_members(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
    if proc.poll() is None:
        stop_pid(proc.pid, signal.SIGKILL, proc=proc)


def dispatcher_files(bench: Bench) -> tuple[Path, list[str], dict]:
    """The dispatcher's folder, its command line and its environment."""
    folder = bench.work / "dispatcher"
    (folder / "bin").mkdir(parents=True)
    ramp_db, instance, ec2 = bench.ramp_db, bench.instance, bench.ec2
    database = folder / "config.yml"
    database.write_text(yaml.safe_dump({"sqlalchemy": ramp_db.sqlalchemy_config}))
    event = folder / "event_config.yml"
    event_config = {
        "ramp": {
            "problem_name": ramp_db.problem,
            "event_name": ramp_db.event,
            "event_title": "ramp-airflow bench",
            "event_is_public": True,
            "sandbox_dir": ramp_db.sandbox_name,
            "kit_dir": ramp_db.ramp_kit_dir,
            "data_dir": ramp_db.ramp_data_dir,
            "submissions_dir": ramp_db.submissions_dir,
            "predictions_dir": str(folder / "predictions"),
            "logs_dir": str(folder / "logs"),
        },
        "worker": {
            "worker_type": "aws",
            **{field: bench.aws_config[field] for field in SHARED_AWS_FIELDS},
            "access_key_id": ec2.env["AWS_ACCESS_KEY_ID"],
            "secret_access_key": ec2.env["AWS_SECRET_ACCESS_KEY"],
            # Absolute: with "~/..." its `mprof run --output=~/...` gets no tilde expansion and every training fails.
            "remote_ramp_kit_folder": instance.kit_dir,
        },
        "dispatcher": {"n_workers": N_WORKERS, "hunger_policy": "exit"},
    }
    event.write_text(yaml.safe_dump(event_config, sort_keys=False))
    wrapper = folder / "bin" / "ssh"
    wrapper.write_text(SSH_WRAPPER.format(known_hosts=folder / "known_hosts"))
    wrapper.chmod(0o755)
    env = {
        **ec2.env,  # AWS_ENDPOINT_URL: boto3 goes to moto
        "PATH": f"{folder / 'bin'}:{RAMP_VENV_BIN}:/usr/bin:/bin",
        "HOME": str(folder),
        "LANG": "C.UTF-8",
    }
    argv = [f"{RAMP_VENV_BIN}/ramp-launch", "dispatcher", "--config", str(database), "--event-config", str(event)]
    return folder, argv, env


def run_dispatcher(bench: Bench, cases: list[str]) -> dict:
    """Each case: submissions new, then the dispatcher started; it exits when they are all done."""
    folder, argv, env = dispatcher_files(bench)
    results = {}
    for name in cases:
        case = Case(name, bench, "dispatcher")
        log = open(folder / f"dispatcher-{name}.log", "w")
        started = time.time()
        # cwd: ramp-engine writes its log files (dispatcher.log, aws_worker.log) to the current folder.
        proc, trees = start_side(argv, folder, env, log)
        rss = PeakRss(trees)
        rss.start()
        usage = None
        try:
            final = case.wait_final(bench.timeout(case), alive=lambda pid=proc.pid: not exited(pid))
            # hunger_policy exit: it stops by itself once it has collected the last result.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                # wait4, not Popen.wait: its rusage has the CPU of the process and of every child it reaped.
                pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode, usage = os.waitstatus_to_exitcode(status), rusage
                    break
                time.sleep(0.2)
            cpu = usage.ru_utime + usage.ru_stime if usage else trees.cpu_seconds()
        finally:
            peak = rss.stop()
            stop_tree(proc, trees, signal.SIGTERM, 10)
            log.close()
        if usage is None:
            print(f"  dispatcher did not exit by itself (returncode {proc.returncode}): stopped", flush=True)
        results[name] = {**case.figures(final, started, cpu, peak), "sampler_cpu": rss.own_cpu}
        print_progress("dispatcher", name, results[name])
    return results


def airflow_environment(home: Path, ec2) -> dict:
    """The caller's environment less every AIRFLOW* / RAMP_AIRFLOW* variable, with a fresh AIRFLOW_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RAMP_AIRFLOW"))}
    return {**env, **ec2.env, "AIRFLOW_HOME": str(home)}


def run_airflow(bench: Bench, cases: list[str], venv: Path) -> dict:
    """One ``ramp_aws_train_loop`` for every case, started once the first case's submissions are new."""
    folder = bench.config.parent
    home = folder / "airflow-home"
    home.mkdir()
    argv = [str(venv / "bin" / "ramp_aws_train_loop"), str(bench.config)]
    env = airflow_environment(home, bench.ec2)
    event, interval = bench.ramp_db.event, INTERVALS["train_loop_interval_secs"]
    if bench.args.metadata == "postgres":
        # An organiser's choice the README names: Airflow's metadata in a PostgreSQL database.
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = bench.cluster.url(
            bench.cluster.create_database("airflow_metadata"), "postgresql+psycopg2"
        )
    results = {}
    proc = trees = None
    log = open(folder / "ramp_aws_train_loop.log", "w")
    try:
        for name in cases:
            # Into a running loop, submissions arrive halfway between two of its looks: on average, as
            # they arrive during a challenge (see benchmarks/loop_polls.py).
            arrive_at = None if proc is None else halfway_between_looks(loop_looks(home, event), interval, time.time())
            case = Case(name, bench, "airflow", arrive_at)
            started, cpu0, by_component0 = None, 0.0, {}
            if proc is None:
                started = time.time()
                proc, trees = start_side(argv, folder, env, log)
            else:
                cpu0, by_component0 = trees.cpu_seconds(), trees.cpu_by_component()
            rss = PeakRss(trees)
            rss.start()
            try:
                final = case.wait_final(
                    bench.timeout(case) + (300 if started else 0), alive=lambda loop=proc: loop.poll() is None
                )
                case.wait_terminated()  # its idle time and CPU end with the termination, as the dispatcher's do
                cpu = trees.cpu_seconds() - cpu0
                by_component = trees.cpu_by_component_since(by_component0)
            finally:
                peak = rss.stop()
            if proc.poll() is not None:
                raise RuntimeError(f"ramp_aws_train_loop exited ({proc.returncode}): see {log.name}")
            results[name] = {
                **case.figures(final, started, cpu, peak),
                "look_wait": None if started else wait_for_look(loop_looks(home, event), case.t_new),
                "sampler_cpu": rss.own_cpu,
                "cpu_by_component": by_component,
            }
            print_progress("airflow", name, results[name])
            print(f"  [airflow] case {name}: CPU s by process kind (alive at the end): {by_component}", flush=True)
            if started is not None and bench.args.idle:
                results["idle"] = idle_cpu(trees, bench.args.idle)
                print(f"  [airflow] idle: CPU s per minute by process kind: {results['idle']}", flush=True)
    finally:
        if proc is not None:
            # Ctrl-C, as a user stops it; then whatever is left, by process group.
            stop_tree(proc, trees, signal.SIGINT, 120)
        log.close()
    return results


def idle_cpu(trees: ProcessTrees, seconds: float) -> dict[str, float]:
    """CPU seconds per minute of each kind of process while the loop waits with nothing to train."""
    before = trees.cpu_by_component()
    time.sleep(seconds)
    return trees.cpu_by_component_since(before, per_minute_of=seconds)


FIGURES = [
    ("startup", "start-up to claim s", "{:.1f}"),
    ("startup_training", "start-up to training s", "{:.1f}"),
    ("detect", "detection s (median)", "{:.1f}"),
    ("look_wait", "of which until the loop looked s", "{:.1f}"),
    ("makespan", "makespan s", "{:.1f}"),
    ("latency", "latency new->final s (median)", "{:.1f}"),
    ("cpu_per_sub", "CPU s per submission", "{:.1f}"),
    ("idle_per_sub", "billed idle s per submission", "{:.1f}"),
    ("machine_busy_pct", "machine CPU busy % (case)", "{:.0f}"),
    ("rss_peak_mib", "peak RSS MiB (shared pages once per process)", "{:.0f}"),
    ("pss_peak_mib", "peak PSS MiB (shared pages split)", "{:.0f}"),
]


def print_progress(side: str, name: str, fig: dict) -> None:
    print(
        f"  [{side}] case {name}: makespan {fig['makespan'] or float('nan'):.1f} s, states {fig['states']}, "
        f"{fig['instances']} instances ({fig['unterminated']} not terminated); "
        f"the memory sampling cost this script {fig['sampler_cpu']:.1f} CPU s",
        flush=True,
    )


def print_table(results: dict, cases: list[str]) -> None:
    def cell(value, fmt):
        return "-" if value is None else fmt.format(value)

    header = f"{'figure':<32}{LABELS['dispatcher']:>24}{LABELS['airflow']:>22}{'ours / dispatcher':>20}"
    for name in cases:
        n, delay = CASES[name]
        print(f"\ncase {name}: {n} submissions at once, {'%.0f s boots' % delay if delay else 'instant boots'}")
        print(header)
        print("-" * len(header))
        disp, ours = results.get("dispatcher", {}).get(name, {}), results.get("airflow", {}).get(name, {})
        for key, label, fmt in FIGURES:
            a, b = disp.get(key), ours.get(key)
            ratio = f"{b / a:.2f}" if a and b is not None else "-"
            print(f"{label:<32}{cell(a, fmt):>24}{cell(b, fmt):>22}{ratio:>20}")
        print(f"{'final states':<32}{str(disp.get('states', '-')):>24}{str(ours.get('states', '-')):>22}")


def main() -> None:
    parser = argparse.ArgumentParser(description="ramp-engine's dispatcher against ramp_aws_train_loop, same stack")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES)
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv", help="the virtualenv of ramp_aws_train_loop")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (configs, logs, Airflow home)")
    parser.add_argument(
        "--metadata",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="Airflow's metadata database for ramp_aws_train_loop: its default, or a database on the bench PostgreSQL",
    )
    parser.add_argument(
        "--idle", type=float, default=30, help="after the first case, measure the idle loop's CPU this long (0: not)"
    )
    parser.add_argument("--timeout", type=float, default=300, help="bound per case (plus 20 s per submission)")
    args = parser.parse_args()
    require_fresh_namespace()
    if not (args.venv / "bin" / "ramp_aws_train_loop").exists():
        sys.exit(f"no ramp_aws_train_loop in {args.venv}/bin")
    # SIGTERM (e.g. from `timeout`) must unwind through the finally blocks that stop every service.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    work = Path(tempfile.mkdtemp(prefix="bench-versus-"))
    results: dict = {}
    begin = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            violations = stack.enter_context(loopback_only())
            cluster = stack.enter_context(running_postgres())
            instance = stack.enter_context(running_instance(port=22))
            ec2 = stack.enter_context(running_ec2(public_key=instance.public_key))
            terminations = stack.enter_context(recorded_terminations())
            (work / "ramp").mkdir()
            ramp_db = seed_ramp_database(cluster, work_dir=str(work / "ramp"))
            bench = Bench(cluster, ramp_db, instance, ec2, terminations, work, args)
            stack.callback(bench.ramp.close)
            retire_seeded(bench.ramp, state="checking_error")  # the dispatcher computes leaderboards
            log_state_changes(bench.ramp)
            # One side after the other: both would claim the same new submissions. The dispatcher
            # goes first so that its leaderboard updates do not also go over the other side's rows.
            for side in SIDES:
                if side not in args.sides:
                    continue
                print(f"{LABELS[side]}: cases {' '.join(args.cases)}", flush=True)
                if side == "dispatcher":
                    results[side] = run_dispatcher(bench, args.cases)
                else:
                    results[side] = run_airflow(bench, args.cases, args.venv)
            if violations:
                raise RuntimeError(f"non-loopback connections attempted: {violations}")
    finally:
        if args.json:
            args.json.write_text(json.dumps({"venv": str(args.venv), "results": results}, indent=1))
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nmachine: {os.cpu_count()} CPUs; ramp_aws_train_loop from {args.venv}; "
        f"dispatcher n_workers {N_WORKERS}; ours max_concurrent_instances default (10); "
        f"total {time.monotonic() - begin:.0f} s"
    )
    print_table(results, args.cases)


if __name__ == "__main__":
    main()
