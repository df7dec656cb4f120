"""Pure decisions about an instance's life: is it ready to train on, is it an orphan to terminate."""

from __future__ import annotations

import datetime
from collections.abc import Mapping

from airflow.sdk import DagRunState

from ramp_airflow.utils import ec2_tags
from ramp_airflow.utils.ec2_states import GONE_STATES, market_of

READY = "ready"
WAITING = "waiting"
GONE = "gone"
# What the readiness trigger reports when its deadline passed first.
TIMEOUT = "timeout"
# The ready wait's XCom (and event field) saying when it saw the instance ready: ISO 8601, UTC.
READY_AT = "ready_at"

_ENDED_RUN_STATES = (DagRunState.SUCCESS, DagRunState.FAILED)


def readiness(status: Mapping | None) -> tuple[str, str]:
    """
    Classify one ``describe_instance_status`` entry (``IncludeAllInstances=True``).

    :param status: the entry, or None when EC2 does not know the instance
    :return: (:data:`READY`, :data:`WAITING` or :data:`GONE`; a plain description for the log)
    """
    if status is None:
        return GONE, "EC2 does not know the instance (terminated long ago, or never existed)"
    state = status["InstanceState"]["Name"]
    instance = status.get("InstanceStatus", {}).get("Status", "unknown")
    system = status.get("SystemStatus", {}).get("Status", "unknown")
    description = f"state {state}, instance status {instance}, system status {system}"
    if state in GONE_STATES:
        return GONE, description
    if state == "running" and instance == "ok" and system == "ok":
        return READY, description
    return WAITING, description


def launched(instance: Mapping) -> dict[str, str]:
    """
    What a launch task pushes about its instance (for a cost ledger), from the instance's EC2 description.

    :return: ``instance_id``, ``instance_type`` and ``market``: EC2's ``InstanceLifecycle`` (``spot``),
        or ``on-demand`` when EC2 gives none, as it does for on-demand instances
    """
    return {
        "instance_id": instance["InstanceId"],
        "instance_type": instance["InstanceType"],
        "market": market_of(instance),
    }


def now_stamp() -> str:
    """The current time as :data:`READY_AT` holds it."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def unready_error(instance_id: str, verdict: str, description: str, timeout_secs: float) -> str | None:
    """The error to fail with when an instance will not become ready to train; None otherwise."""
    if verdict == GONE:
        return (
            f"Instance {instance_id} stopped or disappeared while waiting for it to be ready ({description}); "
            "it cannot train this submission."
        )
    if verdict == TIMEOUT:
        return (
            f"Instance {instance_id} was not ready after {timeout_secs:.0f}s ({description}); "
            "raise aws.instance_ready_timeout_secs if the AMI boots slowly."
        )
    return None


def orphan_reason(
    tags: Mapping[str, str],
    launch_time: datetime.datetime,
    now: datetime.datetime,
    run_state: str | None,
    grace_period_secs: float,
) -> str | None:
    """
    Why a backend instance should be terminated by the sweep, or None to leave it alone.

    :param tags: the instance's tags (see :mod:`ramp_airflow.utils.ec2_tags`)
    :param launch_time: when EC2 launched it (timezone-aware)
    :param now: the current time (timezone-aware)
    :param run_state: the state of the Airflow run named by its tags; None when Airflow does
        not know that run
    :param grace_period_secs: younger instances are left alone, so that a run that is just
        starting (or a clock skew) never loses its instance
    """
    age = (now - launch_time).total_seconds()
    if age < grace_period_secs:
        return None
    dag_id, run_id = tags.get(ec2_tags.DAG_ID), tags.get(ec2_tags.RUN_ID)
    if not dag_id or not run_id:
        return f"it carries no Airflow run tags and is {age:.0f}s old"
    if run_state is None:
        return f"its Airflow run {dag_id} / {run_id} is unknown to Airflow"
    if run_state in _ENDED_RUN_STATES:
        return f"its Airflow run {dag_id} / {run_id} has ended ({run_state})"
    return None


def power_off_script(max_lifetime_secs: float) -> str:
    """
    The user data of a launched instance: power off once its longest possible use is over.

    Launched with ``InstanceInitiatedShutdownBehavior=terminate``, the instance is then terminated by
    EC2 itself, even when Airflow is gone. ``shutdown`` counts in whole minutes: rounded up.
    """
    minutes = max(1, -(-int(max_lifetime_secs) // 60))
    return f"#!/bin/sh\n# ramp-airflow's failsafe: never outlive a training by much, whatever happens to Airflow.\nshutdown -P +{minutes}\n"
