"""
Which training run owns a submission's claim: one table of ours in the RAMP database.

A claim (``new`` -> ``sent_to_training``) belongs to exactly one Airflow run, recorded in the same
transaction as the claim, so that no other run (a second trigger, a manual trigger racing the loop)
trains or records that submission, and so that the loop can find claims whose run never started or
ended without a result. The RAMP server never reads the table. It has no foreign key, so that
ramp-database can drop or recreate its own tables as it always did; a stale row is harmless, since
a row only counts for a submission that is in flight.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ramp_airflow.utils.ramp_sql import UTC_NOW, WITH_EVENT
from ramp_airflow.utils.submission_states import IN_FLIGHT, StateTransitionError

TABLE = "ramp_airflow_claims"
# Serialises the table's creation between processes (CREATE TABLE IF NOT EXISTS alone can race).
_CREATE_LOCK = 4_231_907_113
_CREATE = f"""
    CREATE TABLE IF NOT EXISTS {TABLE} (
        submission_id integer PRIMARY KEY,
        dag_id text NOT NULL,
        run_id text NOT NULL,
        claimed_at timestamp NOT NULL
    )
"""
# Claimed when the claim's transaction began: the same instant as its sent_to_training_timestamp.
_SET_OWNER = f"""
    INSERT INTO {TABLE} (submission_id, dag_id, run_id, claimed_at) VALUES (%s, %s, %s, {UTC_NOW})
    ON CONFLICT (submission_id) DO UPDATE
    SET dag_id = EXCLUDED.dag_id, run_id = EXCLUDED.run_id, claimed_at = EXCLUDED.claimed_at
"""


class ClaimLost(StateTransitionError):
    """The run writing about a submission no longer owns its claim."""


@dataclasses.dataclass(frozen=True)
class RunRef:
    """One Airflow run: the owner of a claim."""

    dag_id: str
    run_id: str

    def __str__(self) -> str:
        return f"run {self.run_id} of {self.dag_id}"


def ensure_table(cur: Any) -> None:
    """Create the claims table if it is missing (inside the caller's transaction)."""
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
    cur.execute(_CREATE)


def set_owner(cur: Any, submission_id: int, owner: RunRef) -> None:
    """Record ``owner`` as the run of the claim made in this transaction."""
    cur.execute(_SET_OWNER, (int(submission_id), owner.dag_id, owner.run_id))


def owner_of(cur: Any, submission_id: int) -> RunRef | None:
    cur.execute(f"SELECT dag_id, run_id FROM {TABLE} WHERE submission_id = %s", (int(submission_id),))
    row = cur.fetchone()
    return RunRef(*row) if row else None


def check_owner(cur: Any, sub: dict, owner: RunRef | None, in_flight: bool = False) -> None:
    """
    Refuse a write (or a launch) for a run that no longer owns the submission's claim: it was re-queued
    or moved by an organiser.

    :param sub: the submission, locked by the caller's transaction (``id`` and ``state``)
    :param owner: the run that must own the claim; None: anyone may write
    :param in_flight: also refuse when the submission is no longer ``sent_to_training`` or ``training``
    :raises ClaimLost: naming the submission's state and its claim's owner
    """
    if owner is None:
        return
    claimed_by = owner_of(cur, sub["id"])
    if claimed_by != owner or (in_flight and sub["state"] not in IN_FLIGHT):
        raise ClaimLost(
            f"submission {sub['id']} is no longer this run's to train: it is {sub['state']}, claimed by "
            f"{claimed_by or 'no known run'} (re-queued or moved by an organiser?); nothing was done"
        )


def claims_of(cur: Any, submission_ids: list[int]) -> dict[int, tuple[str, RunRef | None]]:
    """``id -> (state, owner or None)`` of the submissions ``submission_ids`` that exist."""
    cur.execute(
        f"""
        SELECT s.id, s.state, c.dag_id, c.run_id FROM submissions s
        LEFT JOIN {TABLE} c ON c.submission_id = s.id WHERE s.id = ANY(%s)
        """,
        ([int(i) for i in submission_ids],),
    )
    return {sid: (state, RunRef(dag_id, run_id) if run_id else None) for sid, state, dag_id, run_id in cur.fetchall()}


def in_flight_claims(cur: Any, event_name: str, in_flight: tuple[str, ...]) -> list[tuple[int, str, RunRef | None]]:
    """``(id, state, owner or None)`` of each of the event's submissions in flight."""
    cur.execute(
        f"""
        SELECT s.id, s.state, c.dag_id, c.run_id FROM {WITH_EVENT}
        LEFT JOIN {TABLE} c ON c.submission_id = s.id
        WHERE e.name = %s AND s.state = ANY(%s) ORDER BY s.id
        """,
        (event_name, list(in_flight)),
    )
    return [(sid, state, RunRef(dag_id, run_id) if run_id else None) for sid, state, dag_id, run_id in cur.fetchall()]
