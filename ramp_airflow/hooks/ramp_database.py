"""Read, claim and record RAMP submissions in the RAMP database, as ramp-board does.

Every write mirrors what ramp-database 0.10.1's setters store when ramp-engine's dispatcher
drives them (see ``CONTRACT.md``): a state is written on the submission AND its fold rows,
timestamps are naive UTC, and each method is one transaction (all or nothing).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from airflow.providers.common.compat.sdk import Connection, mask_secret
from airflow.providers.postgres.hooks.postgres import PostgresHook

from ramp_airflow.config import DatabaseSettings
from ramp_airflow.hooks.ramp_claims import RampClaimsMixin
from ramp_airflow.utils import claim_sql
from ramp_airflow.utils import ramp_sql as sql
from ramp_airflow.utils import submission_states as states
from ramp_airflow.utils.claim_sql import ClaimLost, RunRef
from ramp_airflow.utils.ramp_sql import ResultError, SubmissionNotFound
from ramp_airflow.utils.submission_states import StateTransitionError

__all__ = ["ClaimLost", "RampDatabaseHook", "ResultError", "RunRef", "StateTransitionError", "SubmissionNotFound"]


class RampDatabaseHook(RampClaimsMixin, PostgresHook):
    """
    The RAMP database of one platform: submissions to train, their claims (see
    :class:`~ramp_airflow.hooks.ramp_claims.RampClaimsMixin`), states and results.

    :param postgres_conn_id: an Airflow Postgres connection id; wins over ``database``.
    :param database: the event config's ``sqlalchemy`` section; its ``postgres_conn_id`` is
        used when set, otherwise a connection is built from its host, port, username,
        password and database.
    """

    hook_name = "RAMP database"

    def __init__(
        self, postgres_conn_id: str | None = None, database: DatabaseSettings | None = None, **kwargs: Any
    ) -> None:
        conn_id = postgres_conn_id or (database.postgres_conn_id if database else None)
        if conn_id is None:
            if database is None:
                raise ValueError(
                    "RampDatabaseHook needs postgres_conn_id or database (the config's sqlalchemy section)"
                )
            kwargs["connection"] = _connection(database)
        super().__init__(postgres_conn_id=conn_id, **kwargs)

    def __repr__(self) -> str:
        conn = self.connection
        return (
            f"RampDatabaseHook(postgres_conn_id={self.postgres_conn_id!r}, host={conn.host!r}, "
            f"port={conn.port!r}, database={conn.schema!r})"
        )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A cursor in one transaction: committed on success, rolled back on any error."""
        conn = self.get_conn()
        try:
            with conn.cursor() as cur:
                yield cur
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()

    # Reads

    def get_submission(self, submission_id: int) -> dict:
        """
        One submission by id.

        :param submission_id: ``submissions.id``.
        :raises SubmissionNotFound: when there is none.
        """
        with self._transaction() as cur:
            return sql.fetch_one(cur, "s.id = %s", (int(submission_id),), f"submission id {submission_id}")

    def find_submission(self, event_name: str, team_name: str, submission_name: str) -> dict:
        """
        One submission by its event, team and name.

        :param event_name: ``events.name``.
        :param team_name: ``teams.name``.
        :param submission_name: ``submissions.name``.
        :raises SubmissionNotFound: when there is none.
        """
        what = f"submission {submission_name!r} of team {team_name!r} in event {event_name!r}"
        params = (event_name, team_name, submission_name)
        with self._transaction() as cur:
            return sql.fetch_one(cur, "e.name = %s AND t.name = %s AND s.name = %s", params, what)

    def n_cv_folds(self, event_name: str) -> int:
        """
        The event's number of CV folds (the folds a complete ``training_output`` holds).

        :param event_name: ``events.name``.
        :raises SubmissionNotFound: when the event does not exist.
        """
        with self._transaction() as cur:
            cur.execute(sql.N_CV_FOLDS, (event_name,))
            row = cur.fetchone()
        if row is None:
            raise SubmissionNotFound(f"no event named {event_name!r} in the RAMP database; check ramp.event_name")
        return int(row[0])

    def official_score(self, submission_id: int) -> dict[str, Any] | None:
        """
        The submission's score of the event's official score type, bagged over the CV folds:
        ``name``, ``valid`` and ``test`` (the private one); None when the event names no such type.

        :param submission_id: ``submissions.id``.
        """
        with self._transaction() as cur:
            cur.execute(sql.OFFICIAL_SCORE, (int(submission_id),))
            row = cur.fetchone()
        return None if row is None else dict(zip(("name", "valid", "test"), row))

    # Transitions

    def _transition(
        self,
        submission_id: int,
        target: str,
        assignments: str,
        params: tuple = (),
        repeatable: bool = False,
        owner: RunRef | None = None,
    ) -> None:
        with self._transaction() as cur:
            sub = sql.lock(cur, submission_id)
            claim_sql.check_owner(cur, sub, owner)
            if repeatable and sub["state"] == target:  # an Airflow retry after the commit
                self.log.info("Submission %s is already %s", sub["id"], target)
                return
            states.check_transition(sub["id"], sub["state"], target)
            sql.set_state(cur, sub["id"], target, assignments, params)
        states.log_transition(self.log, sub["id"], sub["state"], target, owner)

    def set_training(self, submission_id: int, owner: RunRef | None = None) -> None:
        """
        ``sent_to_training`` -> ``training``: stamps ``training_timestamp``, leaves the queue.
        A submission already ``training`` is left as it is (a retried task).

        :param submission_id: ``submissions.id``.
        :param owner: when given, the run that must own the submission's claim (else nothing is written).
        """
        stamps = f"training_timestamp = {sql.UTC_NOW}, queue_position = -1"
        self._transition(submission_id, states.TRAINING, stamps, repeatable=True, owner=owner)

    def set_checking_error(self, submission_id: int, message: str, owner: RunRef | None = None) -> None:
        """
        The platform failed, not the submission: ``checking_error``, saying so to its team.

        :param submission_id: ``submissions.id``.
        :param message: what went wrong, appended to ramp-board's "problem on RAMP side" text.
        :param owner: when given, the run that must own the submission's claim (else nothing is written).
        """
        text = states.checking_error_message(str(message))
        assignments = "error_msg = %s, queue_position = -1"
        self._transition(submission_id, states.CHECKING_ERROR, assignments, (text,), owner=owner)

    def return_to_new(self, submission_id: int) -> None:
        """
        ``sent_to_training`` or ``training`` -> ``new``, so that it is claimed and trained again.

        :param submission_id: ``submissions.id``.
        """
        self._transition(submission_id, states.NEW, "queue_position = -1")

    # Results

    def record_results(self, submission_id: int, result: Mapping[str, Any], owner: RunRef | None = None) -> str:
        """
        Store a training result in one transaction: ``scored`` with fold times, fold scores,
        bagged scores, ``error_msg`` "" and ``max_ram``; or ``training_error`` with its message.

        Recording the same result again (an Airflow retry) rewrites the same rows; a submission
        in any state but ``sent_to_training``, ``training`` or that final state is refused.

        :param submission_id: the submission the result belongs to.
        :param result: what :func:`ramp_airflow.utils.training_results.parse_training_results` returns.
        :param owner: when given, the run that must own the submission's claim (else nothing is written).
        :return: the submission's new state.
        :raises ResultError: when the result does not fit the event (nothing is written).
        :raises StateTransitionError: when the submission is in another state (nothing is written).
        """
        if int(result.get("submission_id", submission_id)) != int(submission_id):
            raise ResultError(f"the result is for submission {result['submission_id']}, not {submission_id}")
        success = bool(result["success"])
        target = states.SCORED if success else states.TRAINING_ERROR
        max_ram = result.get("max_ram")
        max_ram = None if max_ram is None else sql.plain_float(max_ram, "max_ram")
        error_msg = "" if success else str(result.get("error_msg", ""))
        with self._transaction() as cur:
            sub = sql.lock(cur, submission_id)
            claim_sql.check_owner(cur, sub, owner)
            if sub["state"] != target:  # the same final state again is a retried recording
                states.check_transition(sub["id"], sub["state"], target)
            if success:
                sql.write_folds(cur, sub["id"], result["folds"])
                sql.write_bagged_scores(cur, sub["id"], result["bagged_scores"])
            columns = "error_msg = %s, max_ram = COALESCE(%s, max_ram), queue_position = -1"
            sql.set_state(cur, sub["id"], target, columns, (error_msg, max_ram))
        if sub["state"] == target:
            self.log.info("Submission %s is already %s: its result was written again", sub["id"], target)
        else:
            states.log_transition(self.log, sub["id"], sub["state"], target, owner)
        return target


def _connection(database: DatabaseSettings) -> Connection:
    """An Airflow connection from the config's ``sqlalchemy`` fields, its password masked in logs."""
    if database.password:
        mask_secret(database.password)
    return Connection(
        conn_id="ramp_database_config",
        conn_type="postgres",
        host=database.host,
        port=database.port,
        login=database.username,
        password=database.password,
        schema=database.database,
    )
