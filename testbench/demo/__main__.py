"""``python -m testbench.demo [--exit-when-done]``.

The demo runs in a child process of its own session: Ctrl-C in the terminal reaches every
process of the terminal's foreground group, and PostgreSQL and sshd (started in the demo's
group) would stop under Airflow's feet. This parent turns Ctrl-C (or SIGTERM) into one SIGTERM
to the child, which stops everything it started, in order, by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys

# Bound on the child's own clean-up after it was asked to stop.
STOP_TIMEOUT = 120


def _interrupted(signum, frame):
    raise KeyboardInterrupt


def supervise(interactive: bool) -> int:
    argv = [sys.executable, "-m", "testbench.demo", "--child"]
    argv += ["--interactive"] if interactive else []
    child = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL)
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        return child.wait()
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child.terminate()
        try:
            return child.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            return child.wait()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--exit-when-done",
        action="store_true",
        help="stop everything once the leaderboard is printed (default when stdin is not a terminal or CI=true)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--interactive", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        from testbench.demo.run import run

        return run(args.interactive)
    ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    interactive = not (args.exit_when_done or ci or not sys.stdin.isatty())
    return supervise(interactive)


if __name__ == "__main__":
    sys.exit(main())
