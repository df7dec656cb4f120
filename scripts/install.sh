#!/usr/bin/env bash
# Installs everything ramp-airflow and its test bench need on a Debian machine, as root.
# Safe to run again: each step is skipped or cheap when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

RAMP_VENV=${RAMP_VENV:-/opt/ramp-airflow/ramp-venv}
# redis-server: the Celery test stack's broker; chromium and chromium-driver: the trigger form's browser test;
# screen: ramp-engine's AWSWorker runs trainings in `screen -dm` (benchmarks/versus_dispatcher.py).
DEBIAN_PACKAGES=(postgresql openssh-server openssh-client rsync python3-venv iproute2 util-linux redis-server chromium chromium-driver screen)

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "== apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The project's own virtualenv: Airflow 3 with the amazon, ssh, postgres and (for the tests) celery providers.
if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
fi
# Reinstalled only when pyproject.toml changed, so that a second run is quick and works offline.
stamp=.venv/.pyproject.sha256
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "== pip install -e .[test]"
    .venv/bin/pip install -q -e '.[test]'
    echo "$want" > "$stamp"
fi

# The RAMP platform's virtualenv, from Debian's Python so that the instance user can read it.
stamp="$RAMP_VENV/.requirements.sha256"
want=$(sha256sum scripts/ramp-venv-requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "== building the RAMP virtualenv in $RAMP_VENV"
    mkdir -p "$(dirname "$RAMP_VENV")"
    [ -x "$RAMP_VENV/bin/python" ] || /usr/bin/python3 -m venv "$RAMP_VENV"
    "$RAMP_VENV/bin/pip" install -q --upgrade pip
    "$RAMP_VENV/bin/pip" install -q -r scripts/ramp-venv-requirements.txt
    echo "$want" > "$stamp"
fi

# The user that stands in for the AMI's `ubuntu` on the loopback "instances".
id ubuntu >/dev/null 2>&1 || useradd --create-home --shell /bin/bash ubuntu
echo "== installed"
