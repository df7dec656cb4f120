"""The demo command, run the way CI runs it: non-interactively, to the printed leaderboard."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

from testbench._proc import group_members, pid_alive

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 900


def run_demo() -> subprocess.CompletedProcess:
    """``bash scripts/demo.sh`` with CI=true, its own process group, stopped by PID if it hangs."""
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
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
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
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


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


def test_demo_trains_the_event_and_prints_the_leaderboard():
    result = run_demo()
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
    assert re.search(r"Airflow UI:\s+http://127\.0\.0\.1:\d+", out)
    assert "Stopped; no process left." in out
    pids = [int(p) for p in re.findall(r"=(\d+)", re.search(r"Process ids: (.*)", out).group(1))]
    assert len(pids) == 6 and not [p for p in pids if pid_alive(p) or group_members(p)]
    shutil.rmtree(re.search(r"Everything of this run is kept in (\S+) ", out).group(1))
