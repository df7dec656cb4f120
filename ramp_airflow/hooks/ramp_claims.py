"""Claims in the RAMP database: which submissions a training run takes, and which run owns each."""

from __future__ import annotations

from ramp_airflow.utils import claim_sql
from ramp_airflow.utils import ramp_sql as sql
from ramp_airflow.utils import submission_states as states
from ramp_airflow.utils.claim_sql import RunRef
from ramp_airflow.utils.dag_ids import training_run_id
from ramp_airflow.utils.submission_states import StateTransitionError


class RampClaimsMixin:
    """
    The claim methods of :class:`~ramp_airflow.hooks.ramp_database.RampDatabaseHook`, which gives
    them ``_transaction`` (a cursor in one transaction) and ``log``.
    """

    def room_for_training(
        self, event_name: str, max_concurrent_instances: int, max_concurrent_per_team: int | None = None
    ) -> int:
        """
        How many of the event's new submissions can be claimed now: no more than are waiting (and fit
        under their team's cap), and no more than leave at most ``max_concurrent_instances`` of them
        ``sent_to_training`` or ``training``.

        :param event_name: the RAMP event (``events.name``).
        :param max_concurrent_instances: the cap on trainings at once (``aws.max_concurrent_instances``).
        :param max_concurrent_per_team: the cap on one team's (``aws.max_concurrent_per_team``; None: none).
        """
        team_cap = max_concurrent_per_team or sql.NO_TEAM_CAP
        with self._transaction() as cur:
            cur.execute(sql.IN_FLIGHT_AND_WAITING, (list(states.IN_FLIGHT), event_name, team_cap))
            in_flight, waiting = cur.fetchone()
        return max(0, min(int(waiting), max_concurrent_instances - int(in_flight)))

    def claim_new_submissions(
        self, event_name: str, limit: int, dag_id: str, max_concurrent_per_team: int | None = None
    ) -> list[dict]:
        """
        Move up to ``limit`` new submissions of the event to ``sent_to_training``, oldest first, each
        claimed for a training run of ``dag_id`` whose run id comes from the claim (see
        :func:`~ramp_airflow.utils.dag_ids.training_run_id`).

        Rows locked by a concurrent claimer are skipped, so two claimers never get the same one; each
        claimer only takes from a team's oldest waiting submissions that fit under its cap, so the cap
        holds under concurrency too. Each claimed submission gets ``sent_to_training_timestamp`` and
        ``queue_position`` 1..N.

        :param event_name: ``events.name``.
        :param limit: the most submissions to claim.
        :param dag_id: the training DAG whose runs will own the claims.
        :param max_concurrent_per_team: the most of one team's submissions in flight once claimed
            (``aws.max_concurrent_per_team``; None: no such cap); a team's oldest go first.
        :return: the claimed submissions (state ``sent_to_training``), oldest first, each with the
            ``run_id`` of the run that owns it.
        """
        if int(limit) <= 0:
            return []
        with self._transaction() as cur:
            claim_sql.ensure_table(cur)
            team_cap = max_concurrent_per_team or sql.NO_TEAM_CAP
            params = (event_name, list(states.IN_FLIGHT), event_name, team_cap, int(limit), states.SENT_TO_TRAINING)
            cur.execute(sql.CLAIM, params)
            stamps = dict(cur.fetchall())
            if not stamps:
                return []
            sql.set_fold_states(cur, list(stamps), states.SENT_TO_TRAINING)
            claimed = sql.fetch_submissions(cur, f"s.id = ANY(%s) {sql.OLDEST_FIRST}", (list(stamps),))
            for sub in claimed:
                sub["run_id"] = training_run_id(sub["id"], stamps[sub["id"]])
                claim_sql.set_owner(cur, sub["id"], RunRef(dag_id, sub["run_id"]))
        for sub in claimed:
            states.log_transition(self.log, sub["id"], states.NEW, sub["state"], RunRef(dag_id, sub["run_id"]))
        return claimed

    def claim_submission(self, submission_id: int, owner: RunRef, retrain: bool = False) -> dict:
        """
        Claim one submission for the run ``owner``: ``new`` -> ``sent_to_training``. A submission
        that this run claimed already (the loop claimed it for this run, or this is a retry) is
        returned unchanged.

        :param submission_id: ``submissions.id``.
        :param owner: the training run that claims it.
        :param retrain: claim a submission already trained (``scored``, ``training_error`` or
            ``checking_error``) too, as if it had been put back to ``new`` first.
        :raises StateTransitionError: for the sandbox, for a submission another run claimed, for one
            already trained without ``retrain``, and for any other state; nothing is written.
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
            if sub["state"] in states.TRAINED and not retrain:
                raise StateTransitionError(
                    f'submission {sub["id"]} is {sub["state"]} already: to train it again, tick "Train again" in '
                    "the trigger form (conf retrain: true), or run ramp_aws_train with --retrain, or put it back "
                    f"to new (ramp-database set-submission-state --submission-id {sub['id']} --state new)"
                )
            if sub["state"] not in states.TRAINED:
                states.check_transition(sub["id"], sub["state"], states.SENT_TO_TRAINING)
            stamps = f"sent_to_training_timestamp = {sql.UTC_NOW}, queue_position = 1"
            sql.set_state(cur, sub["id"], states.SENT_TO_TRAINING, stamps)
            claim_sql.set_owner(cur, sub["id"], owner)
        states.log_transition(self.log, sub["id"], sub["state"], states.SENT_TO_TRAINING, owner)
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
