"""Run a trigger in a test as the triggerer would: bounded, and with the XComs it pushes recorded."""

from __future__ import annotations

import asyncio

import pytest


class RecordingTaskInstance:
    """Stands in for the task instance of a sensor started in the triggerer; ``xcoms`` holds what it pushed."""

    dag_id, task_id, run_id, map_index = "dag", "task", "run", -1

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        from airflow.sdk.execution_time.xcom import XCom

        self.xcoms: dict = {}

        async def aset(key, value, **where):
            assert where == {"dag_id": "dag", "task_id": "task", "run_id": "run", "map_index": -1}
            self.xcoms[key] = value

        # The triggerer sends it to the execution API; here nothing listens.
        monkeypatch.setattr(XCom, "aset", aset)


def run_trigger(trigger, timeout: float = 120):
    """The trigger's first event; a ``TimeoutError`` after ``timeout`` seconds."""

    async def first_event():
        async for event in trigger.run():
            return event

    return asyncio.run(asyncio.wait_for(first_event(), timeout))


def async_clients_made(monkeypatch: pytest.MonkeyPatch) -> list:
    """The hooks for which an aiobotocore client was made, one entry per client, from now on."""
    from ramp_airflow.hooks.ec2 import RampEc2Hook

    made = []
    make_client = RampEc2Hook.get_async_conn

    async def counted(self):
        made.append(self)
        return await make_client(self)

    monkeypatch.setattr(RampEc2Hook, "get_async_conn", counted)
    return made
