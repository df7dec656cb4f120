"""The training path's steps in the RAMP database: claim, start, record, and never leave one stuck."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator

from ramp_airflow.utils import training_states as ts
from ramp_airflow.utils.claim_sql import ClaimLost, RunRef
from ramp_airflow.utils.dag_ids import training_dag_id
from ramp_airflow.utils.ramp_sql import SubmissionNotFound
from ramp_airflow.utils.results_asset import results_asset, results_extra
from ramp_airflow.utils.run_conf import RunConfError, parse_run_conf
from ramp_airflow.utils.submission_states import IN_FLIGHT, NEW, SCORED, StateTransitionError

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from ramp_airflow.config import DatabaseSettings
    from ramp_airflow.hooks.ramp_database import RampDatabaseHook


class _RampDatabaseOperator(BaseOperator):
    """
    Base of the operators that talk to the RAMP database.

    :param event_name: the event the submission belongs to.
    :param postgres_conn_id: an Airflow Postgres connection to the RAMP database; wins over
        ``database``.
    :param database: the event config's ``sqlalchemy`` settings, used without a connection id.
    """

    ui_color = "#dbe7f3"

    def __init__(
        self,
        *,
        event_name: str,
        postgres_conn_id: str | None = None,
        database: DatabaseSettings | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.event_name = event_name
        self.postgres_conn_id = postgres_conn_id
        self.database = database

    @cached_property
    def hook(self) -> RampDatabaseHook:
        # Imported here: DAG files import the operators at every parse.
        from ramp_airflow.hooks.ramp_database import RampDatabaseHook

        return RampDatabaseHook(postgres_conn_id=self.postgres_conn_id, database=self.database)

    def this_run(self, context: Context) -> RunRef:
        """This task's run: the one that owns (or claims) the submission."""
        return RunRef(self.dag_id, context["run_id"])


class ClaimSubmissionOperator(_RampDatabaseOperator):
    """
    Find the submission a training run was asked for and claim it (``new`` -> ``sent_to_training``).

    The run's conf (``submission_id``, or ``team`` and ``name``; optionally ``instance_id`` and
    ``retrain``) is validated first, so that a bad conf fails here, once (no retries), with a message
    naming the field; so does a conf naming no submission of the RAMP database. A submission the loop
    already claimed is taken as it is; one already trained only with ``retrain``. Returns the
    submission (``id``, ``name``, ``team``, ``event``, ``path_ramp_submissions``), the event's number
    of CV folds (``n_folds``) and the requested ``instance_id``.
    """

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            request = parse_run_conf(context["dag_run"].conf or {})
        except RunConfError as err:
            raise AirflowFailException(f"bad conf for this training run: {err}") from None
        hook = self.hook
        try:
            if request.submission_id is not None:
                found = hook.get_submission(request.submission_id)
            else:
                found = hook.find_submission(self.event_name, request.team, request.name)
        except SubmissionNotFound as err:
            # A retry finds no more than this one did.
            fields = "conf.submission_id" if request.submission_id is not None else "conf.team and conf.name"
            raise AirflowFailException(f"bad conf for this training run: {fields}: {err}") from None
        if found["event"] != self.event_name:
            raise AirflowFailException(
                f"{request.describe()} belongs to event {found['event']!r}, not {self.event_name!r}: "
                f"trigger {training_dag_id(found['event'])} instead"
            )
        try:
            submission = hook.claim_submission(found["id"], self.this_run(context), request.retrain)
        except StateTransitionError as err:
            # The sandbox, a submission another run claimed, or one in a state that is not trained:
            # a retry changes nothing.
            raise AirflowFailException(str(err)) from None
        self.log.info(
            "Training submission %s (%r of team %r)", submission["id"], submission["name"], submission["team"]
        )
        return {
            **submission,
            "n_folds": hook.n_cv_folds(self.event_name),
            "instance_id": request.instance_id,
        }


class MarkTrainingOperator(_RampDatabaseOperator):
    """
    Move the submission to ``training`` once its training has started on the instance.

    :param submission_id: the submission (templated).
    """

    template_fields: Sequence[str] = ("submission_id",)

    def __init__(self, *, submission_id: Any, **kwargs):
        super().__init__(**kwargs)
        self.submission_id = submission_id

    def execute(self, context: Context) -> None:
        try:
            self.hook.set_training(int(self.submission_id), self.this_run(context))
        except StateTransitionError as err:
            raise AirflowFailException(str(err)) from None


class RecordResultsOperator(_RampDatabaseOperator):
    """
    Record a finished training: ``scored`` with its times and scores, or ``training_error``.

    A training whose instance was lost (outcome ``lost``, the last attempt's) is recorded as
    ``checking_error`` with ``lost_message``, and the task fails: the platform failed, not the
    submission.

    Its outlet is the event's results Asset (:func:`~ramp_airflow.utils.results_asset.results_asset`):
    a recorded result emits one asset event whose extra names the submission, its state and its
    official score (see :func:`~ramp_airflow.utils.results_asset.results_extra`). A task that fails
    (the lost instance, a lost claim) emits none.

    :param event_name: the event the submission belongs to.
    :param submission_id: the submission (templated).
    :param outcome: how the training ended, as the training wait returned it (templated).
    :param result: the parsed results, as the fetch step returned them (templated).
    :param lost_message: the error message recorded when the instance was lost.
    :return: the state the submission was recorded in.
    """

    template_fields: Sequence[str] = ("submission_id", "outcome", "result")

    def __init__(
        self,
        *,
        event_name: str,
        submission_id: Any,
        outcome: Any,
        result: Any,
        lost_message: str = "The EC2 instance was lost during training (terminated or reclaimed).",
        **kwargs,
    ):
        self.results_asset = results_asset(event_name)
        super().__init__(event_name=event_name, outlets=[self.results_asset], **kwargs)
        self.submission_id = submission_id
        self.outcome = outcome
        self.result = result
        self.lost_message = lost_message

    def execute(self, context: Context) -> str:
        try:
            state = self._record(self.this_run(context))
        except StateTransitionError as err:
            # The claim is gone, or the submission was ended elsewhere (an operator cancelled the run): a
            # retry finds the same.
            raise AirflowFailException(str(err)) from None
        submission_id = int(self.submission_id)
        score = self.hook.official_score(submission_id) if state == SCORED else None
        extra = results_extra(self.hook.get_submission(submission_id), state, score)
        context["outlet_events"][self.results_asset].extra = extra
        return state

    def _record(self, owner: RunRef) -> str:
        if self.outcome.get("outcome") == ts.LOST:
            self.hook.set_checking_error(int(self.submission_id), self.lost_message, owner)
            raise AirflowFailException(f"submission {self.submission_id} is now checking_error: {self.lost_message}")
        result = dict(self.result)
        if self.outcome.get("outcome") == ts.TIMEOUT:
            limit = f"Training was stopped after {self.outcome.get('after_secs', 0):.0f} s: it exceeded the event's training_timeout_secs."
            result.update(success=False, error_msg=f"{limit}\n{result.get('error_msg', '')}".rstrip("\n"))
        return self.hook.record_results(int(self.submission_id), result, owner)


class FinalizeSubmissionOperator(_RampDatabaseOperator):
    """
    Make sure a submission never stays in ``sent_to_training`` or ``training``.

    The training run's last task, which runs whatever failed before it. A submission still in
    an intermediate state goes to ``checking_error`` (a failure on the platform's side) with
    ``message``, and the task fails so that the run shows the failure; it is not retried, since
    another try would find nothing left to do and hide it. A submission that an organiser took
    from the run meanwhile (put back to ``new``, or claimed by another run) is left as it is, and
    the task fails too: the run trained nothing.

    :param submission: the submission as the claim task returned it (templated); when the claim
        itself failed there is nothing to finalize, and the task fails so that the run does.
    :param message: the error message recorded for the submission.
    """

    template_fields: Sequence[str] = ("submission", "message")

    def __init__(self, *, submission: Any, message: str, **kwargs):
        super().__init__(**kwargs)
        self.submission = submission
        self.message = message

    def execute(self, context: Context) -> None:
        if not self.submission:
            # A leaf of the run: failing here is what shows the run failed when its claim did.
            raise AirflowFailException(
                "this run claimed no submission (see claim_submission's log): it trained nothing"
            )
        submission_id = int(self.submission["id"])
        state = self.hook.get_submission(submission_id)["state"]
        if state == NEW:
            # Only an organiser puts a claimed submission back (ramp-database set-submission-state).
            raise AirflowFailException(
                f"submission {submission_id} was put back to new while this run had it: it recorded nothing"
            )
        if state not in IN_FLIGHT:
            self.log.info("Submission %s is %s: nothing to do", submission_id, state)
            return
        try:
            self.hook.set_checking_error(submission_id, self.message, self.this_run(context))
        except ClaimLost as err:
            raise AirflowFailException(str(err)) from None
        raise AirflowFailException(
            f"submission {submission_id} was left {state}; it is now checking_error: {self.message}"
        )
