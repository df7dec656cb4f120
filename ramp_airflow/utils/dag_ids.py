"""The names Airflow knows an event's DAGs and a submission's training run by."""

from __future__ import annotations

import datetime

from ramp_airflow.utils.layout import submission_folder


def training_dag_id(event_name: str) -> str:
    """``ramp_train_<event>``: one run trains one submission."""
    return f"ramp_train_{event_name}"


def loop_dag_id(event_name: str) -> str:
    """``ramp_train_loop_<event>``: trains every new submission of the event."""
    return f"ramp_train_loop_{event_name}"


def housekeeping_dag_id(event_name: str) -> str:
    """``ramp_housekeeping_<event>``: sets right what no run owns (claims, instances)."""
    return f"ramp_housekeeping_{event_name}"


def leaderboards_dag_id(event_name: str) -> str:
    """``ramp_leaderboards_<event>``: refreshes the event's leaderboards after each recorded result."""
    return f"ramp_leaderboards_{event_name}"


def training_run_id(submission_id: int, claimed_at: datetime.datetime) -> str:
    """
    The run id the loop gives the training run of one claim of a submission, e.g.
    ``train_submission_000000042_20261129T104500123456``: a submission claimed again (re-queued by
    an organiser) gets a new run, and the same claim never gets two.
    """
    return f"{training_run_prefix(submission_id)}{claimed_at:%Y%m%dT%H%M%S%f}"


def training_run_prefix(submission_id: int) -> str:
    """What the run ids the loop gives a submission's training runs begin with."""
    return f"train_{submission_folder(submission_id)}_"
