"""The names Airflow knows an event's DAGs and a submission's training run by."""

from __future__ import annotations

from ramp_airflow.utils.layout import submission_folder


def training_dag_id(event_name: str) -> str:
    """``ramp_train_<event>``: one run trains one submission."""
    return f"ramp_train_{event_name}"


def loop_dag_id(event_name: str) -> str:
    """``ramp_train_loop_<event>``: trains every new submission of the event."""
    return f"ramp_train_loop_{event_name}"


def training_run_id(submission_id: int) -> str:
    """The run id the loop gives a submission's training run, e.g. ``train_submission_000000042``."""
    return f"train_{submission_folder(submission_id)}"
