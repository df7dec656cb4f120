"""
How long each kind of task may last.

Every task of the DAGs has a bound, so that no run lasts forever whatever stalls (a database that
never answers, an EC2 API that hangs, a trickling transfer). There is no bound on a whole training run
(``dagrun_timeout``): reaching it skips the unfinished tasks, the teardown and the final state among
them, which would leave an instance billed and a submission in flight. A task past its bound fails,
and the teardown and the final state still run.
"""

from __future__ import annotations

import datetime

DATABASE_STEP = datetime.timedelta(minutes=5)
EC2_CALLS = datetime.timedelta(minutes=10)
UPLOAD_SECS = 1800
# The organiser's own commands: trusted, but a hung one must not hold a run forever.
EVENT_COMMANDS = datetime.timedelta(hours=1)
# How long past the training's time limit the training wait may last: its poll, killing the training.
TRAINING_WAIT_MARGIN_SECS = 600


def download_secs(max_output_mb: float) -> float:
    """Ten minutes, plus a second per MiB allowed: a download at 1 MiB/s fits."""
    return 600 + max_output_mb


def seconds(secs: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=secs)
