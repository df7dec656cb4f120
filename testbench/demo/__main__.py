"""``python -m testbench.demo [--exit-when-done]``.

The demo runs in a child process of its own session: Ctrl-C in the terminal reaches every
process of the terminal's foreground group, and PostgreSQL and sshd (started in the demo's
group) would stop under Airflow's feet. This parent turns Ctrl-C (or SIGTERM) into one SIGTERM
to the child, which stops everything it started, in order, by PID.

When the machine allows it, the child runs in a network namespace of its own (``unshare -n``):
nothing it starts can reach beyond its own loopback, even by mistake. This parent stays in the
machine's namespace and forwards the UI's port, and only that, from the machine's loopback into
the child's (see ``forward``), so that the printed UI address opens in the machine's browser.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys

from testbench._proc import stop_pid
from testbench.demo import forward

# Bound on the child's own clean-up after it was asked to stop.
STOP_TIMEOUT = 120
# The child's loopback is down in a new namespace; it brings it up, then becomes the demo.
_IN_NAMESPACE = ["unshare", "-n", "bash", "-c", 'ip link set lo up && exec "$@"', "demo"]


def _interrupted(signum, frame):
    raise KeyboardInterrupt


def _isolated() -> bool:
    """Whether this machine lets us create a network namespace."""
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


def _stop_child(child: subprocess.Popen) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child.terminate()
    try:
        return child.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        return child.wait()


def supervise(interactive: bool) -> int:
    argv = [sys.executable, "-m", "testbench.demo", "--child"]
    argv += ["--interactive"] if interactive else []
    listener = relay = None
    if _isolated():
        listener = forward.listen()
        argv = _IN_NAMESPACE + argv + ["--ui-port", str(listener.getsockname()[1])]
    else:
        print(
            "note: no network namespace could be created here; the demo still binds only to 127.0.0.1", file=sys.stderr
        )
    child = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL)
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        if listener is not None:
            with listener:
                relay = forward.start(listener, child.pid)
            print(f"UI forwarder: pid {relay.pid}", flush=True)
        return child.wait()
    except BaseException as err:
        status = _stop_child(child)
        if not isinstance(err, KeyboardInterrupt):
            raise
        return status
    finally:
        if relay is not None:
            stop_pid(relay.pid, proc=relay)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--exit-when-done",
        action="store_true",
        help="stop everything once the leaderboard is printed (default when stdin is not a terminal or CI=true)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--interactive", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ui-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        from testbench.demo.run import run

        return run(args.interactive, ui_port=args.ui_port)
    ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    interactive = not (args.exit_when_done or ci or not sys.stdin.isatty())
    return supervise(interactive)


if __name__ == "__main__":
    sys.exit(main())
