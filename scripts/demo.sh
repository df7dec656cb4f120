#!/usr/bin/env bash
# The demo: installs what is missing, then runs the whole RAMP training backend on this machine
# (RAMP database, EC2 stand-in, SSH "instance", Airflow) on loopback and trains a demo event.
# Interactive runs keep going until Ctrl-C; `--exit-when-done` (or no terminal, or CI=true) stops
# after the leaderboard. Runs as root (PostgreSQL, sshd and the `ubuntu` user need it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# A network namespace of its own, when the machine allows it: nothing can leave, even by mistake.
if unshare -n true 2>/dev/null; then
    exec unshare -n bash -c 'ip link set lo up && exec .venv/bin/python -m testbench.demo "$@"' demo "$@"
fi
echo "note: no network namespace could be created here; the demo still binds only to 127.0.0.1" >&2
exec .venv/bin/python -m testbench.demo "$@"
