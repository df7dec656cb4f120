"""
Keep claims and runs in step: every submission in flight has a training run that will end it, and
every instance trains a submission that its run still owns.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from ramp_airflow.operators.ramp_database import _RampDatabaseOperator
from ramp_airflow.operators.terminations import terminate_recorded
from ramp_airflow.utils import ec2_tags
from ramp_airflow.utils.aws_credentials import AwsCredentials
from ramp_airflow.utils.claim_sql import RunRef
from ramp_airflow.utils.dag_ids import training_dag_id, training_run_prefix
from ramp_airflow.utils.run_states import LIVE_RUN_STATES, RUN_STATE_ERRORS, dag_run_state
from ramp_airflow.utils.submission_states import IN_FLIGHT, SENT_TO_TRAINING, StateTransitionError

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from ramp_airflow.hooks.ec2 import RampEc2Hook


class ReconcileClaimsOperator(_RampDatabaseOperator):
    """
    Find the event's submissions in ``sent_to_training`` or ``training`` that no live run owns, and
    set each right, so that nothing stays in flight (holding a place under ``max_concurrent_instances``)
    without an owner:

    - claimed by the loop for a run that was never started (the loop died between its claim and the
      trigger): that run is started now;
    - claimed by a run that has ended without recording a result (marked failed or successful by an
      operator, or its final task failed): ``checking_error``, saying so;
    - claimed by no run of ours: back to ``new``, to be claimed again (as ramp-engine resets its
      submissions in flight when it starts).

    :return: one ``{"trigger_run_id", "conf"}`` per run to start, ready for
        ``TriggerDagRunOperator.partial(...).expand_kwargs``.
    """

    def execute(self, context: Context) -> list[dict[str, Any]]:
        to_start = []
        for submission_id, state, owner in self.hook.in_flight_claims(self.event_name):
            try:
                to_start += self._set_right(context, submission_id, state, owner)
            except StateTransitionError as err:
                # Its run (or the other DAG that reconciles) got there first.
                self.log.info("Submission %s: %s", submission_id, err)
        return to_start

    def _set_right(self, context: Context, submission_id: int, state: str, owner: RunRef | None) -> list[dict]:
        """Set one submission in flight right; return the run to start for it, if any."""
        if owner is None:
            self.log.warning("Submission %s is %s and no run of ours claimed it: back to new", submission_id, state)
            self.hook.return_to_new(submission_id)
            return []
        try:
            run_state = dag_run_state(context, owner.dag_id, owner.run_id)
        except RUN_STATE_ERRORS as err:
            self.log.warning("Submission %s: the state of %s cannot be read now (%s)", submission_id, owner, err)
            return []
        if run_state in LIVE_RUN_STATES:
            return []
        never_started = (
            run_state is None
            and state == SENT_TO_TRAINING
            and owner.dag_id == training_dag_id(self.event_name)
            and owner.run_id.startswith(training_run_prefix(submission_id))
        )
        if never_started:
            self.log.warning("Submission %s was claimed for %s, which never started: starting it", submission_id, owner)
            return [{"trigger_run_id": owner.run_id, "conf": {"submission_id": submission_id}}]
        message = (
            f"Its training run ({owner.run_id}) ended ({run_state or 'deleted'}) before recording a result: "
            "it was cancelled by an operator, or stopped."
        )
        self.log.warning("Submission %s is %s: %s It is now checking_error.", submission_id, state, message)
        self.hook.set_checking_error(submission_id, message, owner)
        return []


class StopDisownedInstancesOperator(_RampDatabaseOperator):
    """
    Terminate the event's instances whose run no longer owns the submission they train: an organiser
    re-queued it (``ramp-database set-submission-state ... --state new``) or moved it to another state
    meanwhile. The run then finds its instance lost and, owning no claim, launches no other and writes
    nothing.

    The instances are listed before the claims are read: a run commits its claim before it launches,
    so the claim of every instance listed is already visible, and a run just starting keeps its instance.

    :param aws_credentials: how to reach EC2 (the config's ``aws`` section)
    :param ledger_path: the event's cost ledger, where each instance it terminates is recorded (None: nowhere)
    :return: the ids of the instances it terminated
    """

    def __init__(self, *, aws_credentials: AwsCredentials, ledger_path: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.aws_credentials = aws_credentials
        self.ledger_path = ledger_path

    @cached_property
    def ec2(self) -> RampEc2Hook:
        from ramp_airflow.hooks.ec2 import RampEc2Hook

        return RampEc2Hook(**self.aws_credentials.hook_kwargs())

    def execute(self, context: Context) -> list[str]:
        trainings = {}  # instance id -> (submission id, the run that launched it, EC2's description)
        for instance in self.ec2.list_backend_instances(self.event_name):
            tags = ec2_tags.tags_of(instance)
            run = RunRef(tags.get(ec2_tags.DAG_ID, ""), tags.get(ec2_tags.RUN_ID, ""))
            if run.dag_id and run.run_id and tags.get(ec2_tags.SUBMISSION_ID, "").isdigit():
                trainings[instance["InstanceId"]] = (int(tags[ec2_tags.SUBMISSION_ID]), run, instance)
        claims = self.hook.claims_of(sorted({sid for sid, _, _ in trainings.values()}))
        terminated = []
        for instance_id, (submission_id, run, instance) in trainings.items():
            state, owner = claims.get(submission_id, ("deleted", None))
            if state in IN_FLIGHT and owner == run:
                continue
            self.log.warning(
                "Terminating instance %s of %s: submission %s is %s, claimed by %s",
                instance_id,
                run,
                submission_id,
                state,
                owner or "no known run",
            )
            terminate_recorded(self.ec2, instance, self.ledger_path, self.task_id, self.log)
            terminated.append(instance_id)
        return terminated
