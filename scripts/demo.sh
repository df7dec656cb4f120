#!/usr/bin/env bash
# The demo: installs what is missing, then runs the whole RAMP training backend on this machine
# (RAMP database, EC2 stand-in, SSH "instance", Airflow) on loopback and trains a demo event.
# Interactive runs keep going until Ctrl-C; `--exit-when-done` (or no terminal, or CI=true) stops
# after the leaderboard. Runs as root (PostgreSQL, sshd and the `ubuntu` user need it).
# The backend runs in a network namespace of its own when the machine allows it; only the UI's
# port is forwarded to it from this machine's loopback (testbench/demo/__main__.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m testbench.demo "$@"
