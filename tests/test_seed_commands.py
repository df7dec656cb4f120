"""The seed's `ramp_aws_train`, run as a user would: a console script in the foreground."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from testbench.event_config import write_event_config

RAMP_AWS_TRAIN = str(Path(sys.executable).with_name("ramp_aws_train"))


@pytest.fixture
def config(tmp_path, fresh_ramp_db, instance, ec2, airflow_home):
    return write_event_config(tmp_path / "config.yml", fresh_ramp_db, instance, ec2)


def ramp_aws_train(config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RAMP_AWS_TRAIN, str(config), *args], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )


def test_trains_one_submission_in_the_foreground(config, fresh_ramp_db):
    team = fresh_ramp_db.teams[0]
    done = ramp_aws_train(config, f"--event={fresh_ramp_db.event}", f"--team={team}", "--name=random_forest")
    submission_id = fresh_ramp_db.submissions["random_forest"]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"submission {submission_id} ({team}/random_forest) of {fresh_ramp_db.event}: scored" in done.stdout
    assert fresh_ramp_db.query("SELECT state FROM submissions WHERE id = %s", (submission_id,)) == [("scored",)]

    failing = ramp_aws_train(config, f"--event={fresh_ramp_db.event}", f"--team={team}", "--name=error_in_fit")
    assert failing.returncode == 1
    assert ": training_error" in failing.stdout


def test_wrong_event_is_refused_before_anything_runs(config, fresh_ramp_db):
    done = ramp_aws_train(config, "--event=other", "--team=test_user", "--name=random_forest")
    assert done.returncode == 2
    assert f"--event=other does not match ramp.event_name ({fresh_ramp_db.event})" in done.stderr
    assert "Traceback" not in done.stderr
