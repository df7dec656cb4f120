"""The state of another Airflow run, asked of the API server through the Task SDK."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk.api.client import ServerResponseError
from airflow.sdk.exceptions import AirflowRuntimeError

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

# A worker asks the API server through its supervisor (AirflowRuntimeError); dag.test() asks it directly.
RUN_STATE_ERRORS = (AirflowRuntimeError, ServerResponseError)
LIVE_RUN_STATES = ("queued", "running")


def dag_run_state(context: Context, dag_id: str, run_id: str) -> str | None:
    """
    The state of the run ``run_id`` of ``dag_id``; None when Airflow does not know it.

    :raises AirflowRuntimeError | ServerResponseError: when the API server cannot say now.
    """
    try:
        state = context["ti"].get_dagrun_state(dag_id, run_id)
    except RUN_STATE_ERRORS as err:
        if _status_code(err) == 404:
            return None
        raise
    return getattr(state, "value", state)


def _status_code(err: Exception) -> int | None:
    """The API server's HTTP status behind an error of the Task SDK."""
    if isinstance(err, AirflowRuntimeError):
        return (err.error.detail or {}).get("status_code")
    return err.response.status_code  # ServerResponseError: raised as is by dag.test()'s in-process API
