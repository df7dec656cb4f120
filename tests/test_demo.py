"""The demo command, run the way CI runs it: non-interactively, to the printed leaderboard."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import urllib.request
from pathlib import Path

import yaml

from testbench._proc import group_members, pid_alive, wait_until

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 900
UP = "  Airflow is up at "
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def run_demo(while_up=None) -> subprocess.CompletedProcess:
    """``bash scripts/demo.sh`` with CI=true, its own process group, stopped by PID if it hangs.

    :param while_up: called with the output so far once the demo says Airflow is up (it then
        trains for a minute or more before it stops).
    """
    proc = subprocess.Popen(
        ["bash", "scripts/demo.sh"],
        cwd=REPO,
        env=dict(os.environ, CI="true"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        if while_up is not None:
            wait_until(lambda: UP in "".join(lines) or proc.poll() is not None, TIMEOUT, "the demo's Airflow to be up")
            assert UP in "".join(lines), "".join(lines)[-6000:]
            while_up("".join(lines))
        proc.wait(timeout=TIMEOUT)
        reader.join(timeout=30)
    finally:
        if proc.poll() is None:
            # SIGTERM lets the demo stop what it started; its clean-up is bounded.
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=180)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert not group_members(proc.pid), "the demo's process group outlived it"
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(lines), "")


def leaderboard(out: str) -> dict[str, dict]:
    """The printed leaderboard's rows by submission name (columns split on two spaces)."""
    lines = out.split("Leaderboard of ", 1)[1].splitlines()[1:]
    header = re.split(r"\s{2,}", lines[0].strip())
    rows = {}
    for line in lines[2:]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def refused(port: int) -> bool:
    """Whether a TCP connect to 127.0.0.1:``port`` from this namespace is refused."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def check_ui_from_outside(out: str) -> None:
    """The printed UI address answers here, and the demo's other services do not.

    scripts/test.sh runs this test in a network namespace of its own; the demo makes another one
    for its backend. So this test's namespace is the demo's "host", the place where a person's
    browser would be: a page fetched here went through the forwarder, not through the demo's own
    loopback, and the RAMP database and the SSH "instance" listening in the demo must be refused.
    """
    url = re.search(r"Airflow is up at (http://127\.0\.0\.1:\d+)", out).group(1)
    with _DIRECT.open(url + "/", timeout=30) as page:
        assert page.status == 200 and "<title>Airflow" in page.read().decode()
    with _DIRECT.open(url + "/api/v2/monitor/health", timeout=30) as health:
        assert json.load(health)["metadatabase"]["status"] == "healthy"
    config = yaml.safe_load(Path(re.search(r"event config: (\S+)", out).group(1)).read_text())
    assert refused(config["sqlalchemy"]["port"]) and refused(config["aws"]["ssh_port"])


def test_demo_trains_the_event_and_prints_the_leaderboard():
    result = run_demo(while_up=check_ui_from_outside)
    out = result.stdout
    assert result.returncode == 0, out[-6000:]
    rows = leaderboard(out)
    assert set(rows) == {"random_forest", "error_in_fit", "x;touch PWNED$(id)"}, out[-4000:]
    score = next(k for k in rows["random_forest"] if k.endswith(" valid"))[: -len(" valid")]
    for name in ("random_forest", "x;touch PWNED$(id)"):
        row = rows[name]
        assert row["state"] == "scored"
        for column in (f"{score} valid", f"{score} test"):
            assert 0 <= float(row[column]) <= 1
        assert float(row["train time (s)"]) > 0 and float(row["max RAM (MB)"]) > 0
    assert rows["error_in_fit"]["state"] == "training_error"
    assert rows["error_in_fit"][f"{score} valid"] == "-"
    ui_port = int(re.search(r"Airflow UI:\s+http://127\.0\.0\.1:(\d+)", out).group(1))
    assert "Stopped; no process left." in out
    forwarder = int(re.search(r"UI forwarder: pid (\d+)", out).group(1))
    assert not pid_alive(forwarder) and refused(ui_port)
    pids = [int(p) for p in re.findall(r"=(\d+)", re.search(r"Process ids: (.*)", out).group(1))]
    assert len(pids) == 6 and not [p for p in pids if pid_alive(p) or group_members(p)]
    shutil.rmtree(re.search(r"Everything of this run is kept in (\S+) ", out).group(1))
