"""Task logs read back from a running stack through the REST API: Airflow's own log reader, as the UI shows them."""

from __future__ import annotations

import urllib.parse


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def task_instance(stack, dag_id: str, run_id: str, task_id: str) -> dict:
    """The task instance's record (``state``, ``try_number``, ...) of one run (not mapped)."""
    return stack.request("GET", f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}")


def task_log(stack, dag_id: str, run_id: str, task_id: str, try_number: int) -> list[str]:
    """
    The messages of one try's log, in the order the log endpoint gives them: ``GET .../logs/{try_number}``
    (JSON) answers ``{"content": [{"event": ..., "timestamp": ..., ...}, ...], "continuation_token": ...}``.
    An entry's exceptions (``error_detail``) follow its event, one ``<type>: <value>`` line each, as the UI shows them.
    """
    path = f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/logs/{try_number}"
    return [_message(entry) for entry in stack.request("GET", path + "?full_content=true")["content"]]


def _message(entry) -> str:
    if not isinstance(entry, dict):
        return str(entry)
    errors = [f"{e.get('exc_type')}: {e.get('exc_value')}" for e in entry.get("error_detail") or ()]
    return "\n".join([str(entry.get("event", "")), *errors])


def all_tries_log(stack, dag_id: str, run_id: str, task_id: str) -> list[str]:
    """The messages of every try of a task, oldest try first."""
    tries = task_instance(stack, dag_id, run_id, task_id)["try_number"]
    return [line for number in range(1, tries + 1) for line in task_log(stack, dag_id, run_id, task_id, number)]
