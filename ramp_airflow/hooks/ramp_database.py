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
from ramp_airflow.utils import claim_sql
from ramp_airflow.utils import ramp_sql as sql
from ramp_airflow.utils import submission_states as states
from ramp_airflow.utils.claim_sql import ClaimLost, RunRef
from ramp_airflow.utils.dag_ids import training_run_id
from ramp_airflow.utils.ramp_sql import ResultError, SubmissionNotFound
from ramp_airflow.utils.submission_states import StateTransitionError

__all__ = ["ClaimLost", "RampDatabaseHook", "ResultError", "RunRef", "StateTransitionError", "SubmissionNotFound"]


class RampDatabaseHook(PostgresHook):
    """
    The RAMP database of one platform: submissions to train, their claims, states and results.

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

    def room_for_training(self, event_name: str, max_concurrent_instances: int) -> int:
        """
        How many of the event's new submissions can be claimed now: no more than are waiting, and
        no more than leave at most ``max_concurrent_instances`` of them ``sent_to_training`` or ``training``.

        :param event_name: the RAMP event (``events.name``).
        :param max_concurrent_instances: the cap on trainings at once (``aws.max_concurrent_instances``).
        """
        with self._transaction() as cur:
            cur.execute(sql.IN_FLIGHT_AND_WAITING, (list(states.IN_FLIGHT), event_name))
            in_flight, waiting = cur.fetchone()
        return max(0, min(waiting, max_concurrent_instances - in_flight))

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

    # Claims

    def claim_new_submissions(self, event_name: str, limit: int, dag_id: str) -> list[dict]:
        """
        Move up to ``limit`` new submissions of the event to ``sent_to_training``, oldest first, each
        claimed for a training run of ``dag_id`` whose run id comes from the claim (see
        :func:`~ramp_airflow.utils.dag_ids.training_run_id`).

        Rows locked by a concurrent claimer are skipped, so two claimers never get the same one.
        Each claimed submission gets ``sent_to_training_timestamp`` and ``queue_position`` 1..N.

        :param event_name: ``events.name``.
        :param limit: the most submissions to claim.
        :param dag_id: the training DAG whose runs will own the claims.
        :return: the claimed submissions (state ``sent_to_training``), oldest first, each with the
            ``run_id`` of the run that owns it.
        """
        if int(limit) <= 0:
            return []
        with self._transaction() as cur:
            claim_sql.ensure_table(cur)
            cur.execute(sql.CLAIM, (event_name, int(limit), states.SENT_TO_TRAINING))
            stamps = dict(cur.fetchall())
            if not stamps:
                return []
            sql.set_fold_states(cur, list(stamps), states.SENT_TO_TRAINING)
            claimed = sql.fetch_submissions(cur, f"s.id = ANY(%s) {sql.OLDEST_FIRST}", (list(stamps),))
            for sub in claimed:
                sub["run_id"] = training_run_id(sub["id"], stamps[sub["id"]])
                claim_sql.set_owner(cur, sub["id"], RunRef(dag_id, sub["run_id"]))
        self.log.info("Claimed submissions %s of event %s", [s["id"] for s in claimed], event_name)
        return claimed

    def claim_submission(self, submission_id: int, owner: RunRef) -> dict:
        """
        Claim one submission for the run ``owner``: ``new`` -> ``sent_to_training``. A submission
        that this run claimed already (the loop claimed it for this run, or this is a retry) is
        returned unchanged.

        :param submission_id: ``submissions.id``.
        :param owner: the training run that claims it.
        :raises StateTransitionError: for the sandbox, for a submission another run claimed, and
            for any other state; nothing is written.
        """
        with self._transaction() as cur:
            claim_sql.ensure_table(cur)
            sub = sql.lock(cur, submission_id)
            if sub["sandbox"]:
                raise StateTransitionError(
                    f"submission {submission_id} is the event's sandbox ({sub['name']!r}); it is never trained"
                )
            if sub["state"] in states.IN_FLIGHT:
                claimed_by = claim_sql.owner_of(cur, sub["id"])
                if claimed_by == owner:
                    return sub
                raise StateTransitionError(
                    f"submission {sub['id']} is already {sub['state']}, claimed by "
                    f"{claimed_by or 'no known run'}: this run does not train it a second time"
                )
            states.check_transition(sub["id"], sub["state"], states.SENT_TO_TRAINING)
            stamps = f"sent_to_training_timestamp = {sql.UTC_NOW}, queue_position = 1"
            sql.set_state(cur, sub["id"], states.SENT_TO_TRAINING, stamps)
            claim_sql.set_owner(cur, sub["id"], owner)
        self.log.info("Claimed submission %s for %s", sub["id"], owner)
        return {**sub, "state": states.SENT_TO_TRAINING}

    def in_flight_claims(self, event_name: str) -> list[tuple[int, str, RunRef | None]]:
        """
        ``(id, state, owner)`` of each of the event's submissions in ``sent_to_training`` or
        ``training``; the owner is None when no run of ours claimed it.

        :param event_name: ``events.name``.
        """
        with self._transaction() as cur:
            claim_sql.ensure_table(cur)
            return claim_sql.in_flight_claims(cur, event_name, states.IN_FLIGHT)

    def check_claim(self, submission_id: int, owner: RunRef) -> None:
        """
        Check that ``owner`` still owns the claim of the submission, and that it is still in flight.

        :raises ClaimLost: when it does not (the submission was re-queued or moved by an organiser).
        """
        with self._transaction() as cur:
            claim_sql.check_owner(cur, sql.lock(cur, submission_id), owner, in_flight=True)

    def claims_of(self, submission_ids: list[int]) -> dict[int, tuple[str, RunRef | None]]:
        """
        ``id -> (state, owner)`` of each of these submissions; the owner is None when no run of ours claimed it.

        :param submission_ids: ``submissions.id`` values; those that do not exist are left out.
        """
        with self._transaction() as cur:
            claim_sql.ensure_table(cur)
            return claim_sql.claims_of(cur, submission_ids)

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
        self.log.info("Submission %s: %s -> %s", sub["id"], sub["state"], target)

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
        self.log.info("Recorded the result of submission %s: %s", sub["id"], target)
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
