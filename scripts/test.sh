#!/usr/bin/env bash
# Runs the test suite, inside a fresh network namespace when the machine allows it, so that
# nothing can reach beyond loopback even by mistake. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if unshare -n true 2>/dev/null; then
    exec unshare -n bash -c 'ip link set lo up && exec .venv/bin/python -m pytest "$@"' pytest "$@"
fi
echo "note: no network namespace could be created here; running on the host's network" >&2
exec .venv/bin/python -m pytest "$@"
