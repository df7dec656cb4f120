"""The tasks that terminate instances (a run's teardowns, the orphan sweep), each recorded in the event's cost ledger."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ramp_airflow.cost_report import run_summary
from ramp_airflow.operators.ec2 import _Ec2Operator
from ramp_airflow.utils import cost_ledger, ec2_lifecycle, ec2_tags
from ramp_airflow.utils.run_states import RUN_STATE_ERRORS, dag_run_state
from ramp_airflow.utils.run_values import given

if TYPE_CHECKING:
    import logging

    from airflow.sdk import Context

    from ramp_airflow.hooks.ec2 import RampEc2Hook


def terminate_recorded(
    hook: RampEc2Hook, instance: dict, ledger_path: str | None, terminated_by: str, log: logging.Logger, **row_facts
) -> None:
    """
    Terminate an instance, then append its row to the cost ledger, if there is one.

    A ledger that cannot be written never fails the termination: the error and the row are logged.

    :param hook: the EC2 hook to terminate with
    :param instance: EC2's description of the instance, read before
    :param ledger_path: the event's cost ledger (None: no record)
    :param terminated_by: the terminating task's id
    :param log: where to say what happened
    :param row_facts: ``submission`` and ``ready_at``, when known (see :func:`cost_ledger.ledger_row`)
    """
    terminated_at = datetime.datetime.now(datetime.timezone.utc)
    state = hook.terminate_instance(instance["InstanceId"])
    if not ledger_path:
        return
    row = cost_ledger.ledger_row(
        instance, terminated_at=terminated_at, state_at_termination=state, terminated_by=terminated_by, **row_facts
    )
    try:
        if not cost_ledger.append(ledger_path, row):
            log.info("Instance %s is in the cost ledger already", instance["InstanceId"])
    except OSError as err:
        log.error("Could not write to the cost ledger %s (%s); its row: %s", ledger_path, err, row)


def log_run_cost(log: logging.Logger, ledger_path: str, run_id: str, submission: Any, outcome: str | None) -> None:
    """
    Log one line on what the run ``run_id`` cost, from the ledger rows of its instances.

    In the task log, since Airflow 3.3 lets no task set its run's note (only the REST API, with a
    user's token, can).
    """
    try:
        rows = [row for row in cost_ledger.read_rows(ledger_path) if row["run_id"] == run_id]
    except FileNotFoundError:
        rows = []
    except (OSError, cost_ledger.LedgerError) as err:
        log.error("Cannot read the cost ledger: %s", err)
        return
    log.info("%s", run_summary(rows, submission, outcome))


class _TerminatingOperator(_Ec2Operator):
    """
    Base of the EC2 tasks that terminate instances.

    :param ledger_path: the event's cost ledger, where each instance it terminates is recorded (None: nowhere)
    """

    def __init__(self, *, ledger_path: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ledger_path = ledger_path

    def _terminate(self, instance: dict, **row_facts) -> None:
        terminate_recorded(self.hook, instance, self.ledger_path, self.task_id, self.log, **row_facts)


class TerminateInstanceOperator(_TerminatingOperator):
    """
    Terminate the instance this run launched; meant as the run's teardown task.

    An instance not launched by this DAG run (an existing instance) is left running; one
    already gone, or no instance id (the launch created none), is a success.

    :param instance_id: the instance to terminate (templated), usually the launch task's XCom
    :param submission: the submission as the claim task returned it (templated), for the cost ledger
    :param ready_at: when the ready wait saw the instance ready (templated), for the cost ledger
    """

    template_fields: Sequence[str] = ("instance_id", "submission", "ready_at")
    ui_color = "#e8a0a0"

    def __init__(self, *, instance_id: str | None, submission: Any = None, ready_at: Any = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.instance_id = instance_id
        self.submission = submission
        self.ready_at = ready_at

    def execute(self, context: Context) -> None:
        instance_id = given(self.instance_id)
        instance = self.hook.describe_instance(instance_id) if instance_id else None
        if instance_id is None:
            self.log.info("No instance to terminate: the launch did not create one")
        elif instance is None:
            self.log.info("Instance %s is already gone", instance_id)
        elif not ec2_tags.launched_by(ec2_tags.tags_of(instance), self.dag_id, context["run_id"]):
            self.log.info("Leaving instance %s running: this run did not launch it", instance_id)
        else:
            self._terminate(instance, submission=given(self.submission), ready_at=self.ready_at)


class TerminateRunInstancesOperator(_TerminatingOperator):
    """
    Terminate every instance this run launched that is still alive: the run's last safety net.

    The attempts' teardowns terminate their instances; a teardown does not run when its launch
    failed, though, and a launch task killed after EC2 created the instance, with no retry left,
    leaves one that only the tags know of. This task finds those by the run's tags.

    With a ledger, it then logs one line on what the run cost (Airflow 3.3 gives a task no way to set
    its run's note).

    :param submission: the submission as the claim task returned it (templated)
    :param outcome: the state recorded for it (templated)
    :param ready_times: when the ready waits saw their instances ready (templated), by launch task id
    """

    template_fields: Sequence[str] = ("submission", "outcome", "ready_times")
    ui_color = "#e8a0a0"

    def __init__(
        self, *, submission: Any = None, outcome: Any = None, ready_times: dict | None = None, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.submission = submission
        self.outcome = outcome
        self.ready_times = ready_times or {}

    def execute(self, context: Context) -> list[str]:
        terminated, submission = [], given(self.submission)
        for instance in self.hook.list_run_instances(self.dag_id, context["run_id"]):
            self.log.warning(
                "Terminating instance %s, which this run launched and left running", instance["InstanceId"]
            )
            ready_at = self.ready_times.get(ec2_tags.tags_of(instance).get(ec2_tags.TASK_ID))
            self._terminate(instance, submission=submission, ready_at=ready_at)
            terminated.append(instance["InstanceId"])
        if self.ledger_path:
            log_run_cost(self.log, self.ledger_path, context["run_id"], submission, given(self.outcome))
        return terminated


class SweepOrphanInstancesOperator(_TerminatingOperator):
    """
    Terminate the event's backend instances whose Airflow run has ended or is unknown.

    Pushes the ids of the instances it terminated.

    :param event_name: the RAMP event (templated)
    :param grace_period_secs: instances younger than this are left alone
    """

    template_fields: Sequence[str] = ("event_name",)

    def __init__(self, *, event_name: str, grace_period_secs: float = 600, **kwargs) -> None:
        super().__init__(**kwargs)
        self.event_name = event_name
        self.grace_period_secs = grace_period_secs

    def execute(self, context: Context) -> list[str]:
        now = datetime.datetime.now(datetime.timezone.utc)
        terminated = []
        for instance in self.hook.list_backend_instances(self.event_name):
            instance_id, tags = instance["InstanceId"], ec2_tags.tags_of(instance)
            try:
                run_state = _run_state(context, tags)
            except RUN_STATE_ERRORS as err:
                self.log.warning("Leaving %s alone: the state of its run cannot be read now (%s)", instance_id, err)
                continue
            reason = ec2_lifecycle.orphan_reason(tags, instance["LaunchTime"], now, run_state, self.grace_period_secs)
            if reason is None:
                self.log.info("Keeping instance %s (run state %s)", instance_id, run_state)
                continue
            self.log.warning("Terminating orphan instance %s: %s", instance_id, reason)
            self._terminate(instance)
            terminated.append(instance_id)
        self.log.info("Terminated %d orphan instance(s) of event %s", len(terminated), self.event_name)
        return terminated


def _run_state(context: Context, tags: dict[str, str]) -> str | None:
    """The state of the Airflow run named by the tags; None when there is none or Airflow does not know it."""
    dag_id, run_id = tags.get(ec2_tags.DAG_ID), tags.get(ec2_tags.RUN_ID)
    if not dag_id or not run_id:
        return None
    return dag_run_state(context, dag_id, run_id)
