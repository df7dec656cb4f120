"""
How long each kind of task may last, and how often it is tried.

Every task of the DAGs has a bound, so that no run lasts forever whatever stalls (a database that
never answers, an EC2 API that hangs, a trickling transfer). There is no bound on a whole training run
(``dagrun_timeout``): reaching it skips the unfinished tasks, the teardown and the final state among
them, which would leave an instance billed and a submission in flight. A task past its bound fails,
and the teardown and the final state still run.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ramp_airflow.config import AwsSettings

# Every task retries: a database restart, a throttled EC2 call or a dropped SSH connection heals within
# seconds, and every step is safe to run again (a retried launch gets its instance back, a retried
# upload never trains twice, a retried recording writes the same rows). A failure already recorded in
# the RAMP database fails its task for good (AirflowFailException), never retried. The retries are the
# DAGs' own, whatever the deployment's default_task_retries; they also absorb apache/airflow#72716
# (Airflow 3.3 can fail a task that defers when its trigger fires at once).
RETRIES = {
    "retries": 3,
    "retry_delay": datetime.timedelta(seconds=2),
    "retry_exponential_backoff": 3.0,  # 2, 6 and 18 s: a PostgreSQL restart fits
    "max_retry_delay": datetime.timedelta(minutes=1),
}
DATABASE_STEP = datetime.timedelta(minutes=5)
EC2_CALLS = datetime.timedelta(minutes=10)
UPLOAD_SECS = 1800
# ramp-database rebuilding an event's leaderboards: it reads every scored submission of the event.
LEADERBOARDS = datetime.timedelta(minutes=30)
# The organiser's own commands: trusted, but a hung one must not hold a run forever.
EVENT_COMMANDS = datetime.timedelta(hours=1)
# How long past the training's time limit the training wait may last: its poll, killing the training.
TRAINING_WAIT_MARGIN_SECS = 600
# Beyond the longest an attempt can need its instance, before the instance's own failsafe stops it.
INSTANCE_LIFETIME_MARGIN_SECS = 1800


def instance_lifetime_secs(aws: AwsSettings) -> float:
    """
    How long an instance may live at most (see :func:`ramp_airflow.utils.ec2_lifecycle.power_off_script`):
    its boot, the upload, the training and its wait's margin, the download, and a margin.
    """
    return (
        aws.instance_ready_timeout_secs
        + UPLOAD_SECS
        + aws.training_timeout_secs
        + TRAINING_WAIT_MARGIN_SECS
        + download_secs(aws.max_output_mb)
        + INSTANCE_LIFETIME_MARGIN_SECS
    )


def download_secs(max_output_mb: float) -> float:
    """Ten minutes, plus a second per MiB allowed: a download at 1 MiB/s fits."""
    return 600 + max_output_mb


def seconds(secs: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=secs)
