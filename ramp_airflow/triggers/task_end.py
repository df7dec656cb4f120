"""How a trigger ends its task in the triggerer, with a return value the next tasks can read."""

from __future__ import annotations

from typing import Any

from airflow.triggers.base import BaseTrigger, TaskSuccessEvent


async def task_success(trigger: BaseTrigger, return_value: Any, **other_xcoms: Any) -> TaskSuccessEvent:
    """
    Push ``return_value`` as the task's XCom, and ``other_xcoms`` under their keys, through the Task
    SDK, then end the task successfully.

    Not ``TaskSuccessEvent(xcoms=...)``: Airflow 3.3 stores those JSON-encoded once more than the
    XComs a task pushes itself, so that ``ti.xcom_pull`` would read a JSON string back. A sensor that
    started in the triggerer has the triggerer's channel to the execution API, as a worker has.
    """
    from airflow.sdk.execution_time.xcom import XCom

    ti = trigger.task_instance
    for key, value in {"return_value": return_value, **other_xcoms}.items():
        await XCom.aset(
            key=key, value=value, dag_id=ti.dag_id, task_id=ti.task_id, run_id=ti.run_id, map_index=ti.map_index
        )
    return TaskSuccessEvent()
