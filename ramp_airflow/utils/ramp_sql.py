"""The SQL that ramp-database 0.10.1's setters amount to, run on a DB-API cursor.

ramp-board writes through SQLAlchemy objects; these statements write the same columns of the
same rows (see ``CONTRACT.md``) with plain Python values only. They run inside the caller's
transaction (:class:`ramp_airflow.hooks.ramp_database.RampDatabaseHook`), never commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ramp_airflow.utils import submission_states as states
from ramp_airflow.utils.cv_bags import encode_cv_bags
from ramp_airflow.utils.training_results import BAGGED_STEPS, STEPS

KEYS = ("id", "name", "team", "event", "state", "path_ramp_submissions", "sandbox")
SUBMISSION = """
    SELECT s.id, s.name, t.name, e.name, s.state, e.path_ramp_submissions, s.name = e.ramp_sandbox_name
    FROM submissions s
    JOIN event_teams et ON et.id = s.event_team_id
    JOIN events e ON e.id = et.event_id
    JOIN teams t ON t.id = et.team_id
"""
_WAITING = f"s.state = '{states.NEW}' AND s.name <> e.ramp_sandbox_name"
READY = f"e.name = %s AND {_WAITING}"
OLDEST_FIRST = "ORDER BY s.submission_timestamp, s.id"
UTC_NOW = "(now() AT TIME ZONE 'UTC')"  # ramp-database stamps naive datetime.utcnow()
WITH_EVENT = "submissions s JOIN event_teams et ON et.id = s.event_team_id JOIN events e ON e.id = et.event_id"
# No cap on a team's submissions in flight: an int4 that no count reaches.
NO_TEAM_CAP = 2**31 - 1
# Of an event's submissions: how many our backend owns now (each holds an instance, or will), and how
# many wait that may be claimed (no more of a team's than fit under its cap, the last parameter). One
# query: the loop's trigger runs it every few seconds.
IN_FLIGHT_AND_WAITING = f"""
    WITH per_team AS (
        SELECT count(*) FILTER (WHERE s.state = ANY(%s)) AS in_flight, count(*) FILTER (WHERE {_WAITING}) AS waiting
        FROM {WITH_EVENT} WHERE e.name = %s GROUP BY et.team_id
    )
    SELECT COALESCE(sum(in_flight), 0), COALESCE(sum(LEAST(waiting, GREATEST(0, %s - in_flight))), 0) FROM per_team
"""
# The oldest waiting submissions, each team's only while they fit under its cap: a team's load is its
# submissions in flight plus its waiting ones up to this one. Window functions cannot share a SELECT
# with FOR UPDATE, hence the separate CTEs. Concurrent claimers all pick from the same oldest few of a
# team, and the state is checked again on the locked row itself (a row another claimer took meanwhile
# is no longer new), so the cap holds without a lock of its own. Parameters: in-flight states, event,
# event, team cap, limit, the claimed state.
CLAIM = f"""
    WITH team_in_flight AS (
        SELECT et.team_id, count(*) AS n FROM {WITH_EVENT}
        WHERE e.name = %s AND s.state = ANY(%s) GROUP BY et.team_id
    ), ranked AS (
        SELECT s.id, COALESCE(f.n, 0)
            + row_number() OVER (PARTITION BY et.team_id ORDER BY s.submission_timestamp, s.id) AS team_load
        FROM {WITH_EVENT} LEFT JOIN team_in_flight f ON f.team_id = et.team_id
        WHERE {READY}
    ), picked AS (
        SELECT s.id, s.submission_timestamp FROM submissions s JOIN ranked r ON r.id = s.id
        WHERE s.state = '{states.NEW}' AND r.team_load <= %s {OLDEST_FIRST} LIMIT %s
        FOR UPDATE OF s SKIP LOCKED
    ), queue AS (
        SELECT id, row_number() OVER (ORDER BY submission_timestamp, id) AS position FROM picked
    )
    UPDATE submissions s
    SET state = %s, sent_to_training_timestamp = {UTC_NOW}, queue_position = queue.position
    FROM queue WHERE s.id = queue.id RETURNING s.id, s.sent_to_training_timestamp
"""
N_CV_FOLDS = """
    SELECT count(c.id) FROM events e LEFT JOIN cv_folds c ON c.event_id = e.id
    WHERE e.name = %s GROUP BY e.id
"""
# The leaderboards rank by the event's official score type (ramp-database's Event.official_score_type),
# bagged over the folds.
OFFICIAL_SCORE = """
    SELECT est.name, ss.valid_score_cv_bag, ss.test_score_cv_bag FROM submission_scores ss
    JOIN event_score_types est ON est.id = ss.event_score_type_id
    JOIN events e ON e.id = est.event_id
    WHERE ss.submission_id = %s AND est.name = e.official_score_name
"""
_FOLD_SCORES = """
    SELECT f.id, sf.id, est.name FROM submission_on_cv_folds f
    JOIN submission_score_on_cv_folds sf ON sf.submission_on_cv_fold_id = f.id
    JOIN submission_scores ss ON ss.id = sf.submission_score_id
    JOIN event_score_types est ON est.id = ss.event_score_type_id
    WHERE f.submission_id = %s
"""
_SCORES = """
    SELECT ss.id, est.name FROM submission_scores ss
    JOIN event_score_types est ON est.id = ss.event_score_type_id
    WHERE ss.submission_id = %s
"""


class SubmissionNotFound(LookupError):
    """No submission (or event) matches what was looked up."""


class ResultError(ValueError):
    """A training result that does not fit the submission's event (folds, score names, types)."""


def fetch_submissions(cur: Any, where: str, params: tuple) -> list[dict]:
    """The submissions matching ``where`` as dicts with :data:`KEYS`."""
    cur.execute(f"{SUBMISSION} WHERE {where}", params)
    return [dict(zip(KEYS, row)) for row in cur.fetchall()]


def fetch_one(cur: Any, where: str, params: tuple, what: str) -> dict:
    """The one submission matching ``where``; :class:`SubmissionNotFound` naming ``what`` otherwise."""
    rows = fetch_submissions(cur, where, params)
    if not rows:
        raise SubmissionNotFound(f"no {what} in the RAMP database")
    return rows[0]


def lock(cur: Any, submission_id: int) -> dict:
    """The submission, its row locked until the transaction ends."""
    return fetch_one(cur, "s.id = %s FOR UPDATE OF s", (int(submission_id),), f"submission id {submission_id}")


def set_fold_states(cur: Any, ids: list[int], state: str) -> None:
    """Set the state of every fold row of the submissions ``ids``."""
    cur.execute(
        "UPDATE submission_on_cv_folds SET state = %s::submission_states WHERE submission_id = ANY(%s)",
        (state, list(ids)),
    )


def set_state(cur: Any, submission_id: int, state: str, assignments: str = "", params: tuple = ()) -> None:
    """
    Set a submission's state and its folds' (ramp-database's ``Submission.set_state``).

    :param assignments: more ``column = value`` SQL for the submission row, its ``%s`` filled from ``params``.
    """
    extra = f", {assignments}" if assignments else ""
    cur.execute(f"UPDATE submissions SET state = %s{extra} WHERE id = %s", (state, *params, submission_id))
    set_fold_states(cur, [submission_id], state)


def plain_float(value: Any, what: str) -> float:
    """``value`` as a plain Python float; anything but an int or float is refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ResultError(f"{what} must be a number, not {type(value).__name__} {value!r}")
    return float(value)


def _check_names(given: Mapping[str, Any], known: set[str], what: str) -> None:
    if set(given) != known:
        raise ResultError(
            f"{what} has scores {sorted(given)} but the event's score types are {sorted(known)}; "
            "the kit trained on the instance and the event in the RAMP database disagree"
        )


def write_folds(cur: Any, submission_id: int, folds: list[Mapping[str, Any]]) -> None:
    """Fold times and scores (``set_time`` and ``set_scores``): the i-th fold row by id gets ``fold_i``."""
    cur.execute("SELECT id FROM submission_on_cv_folds WHERE submission_id = %s ORDER BY id", (submission_id,))
    fold_ids = [row[0] for row in cur.fetchall()]
    if len(folds) != len(fold_ids):
        raise ResultError(
            f"the result has {len(folds)} folds but submission {submission_id} has {len(fold_ids)} CV folds"
        )
    cur.execute(_FOLD_SCORES, (submission_id,))
    score_rows: dict[int, dict[str, int]] = {}
    for fold_id, row_id, name in cur.fetchall():
        score_rows.setdefault(fold_id, {})[name] = row_id
    for i, (fold_id, fold) in enumerate(zip(fold_ids, folds)):
        times = [plain_float(fold[f"{step}_time"], f"fold {i} {step}_time") for step in STEPS]
        cur.execute(
            "UPDATE submission_on_cv_folds SET train_time = %s, valid_time = %s, test_time = %s WHERE id = %s",
            (*times, fold_id),
        )
        rows = score_rows.get(fold_id, {})
        for step in STEPS:
            _check_names(fold["scores"][step], set(rows), f"fold {i} step {step}")
        for name, row_id in rows.items():
            values = [plain_float(fold["scores"][step][name], f"fold {i} {step} {name}") for step in STEPS]
            cur.execute(
                "UPDATE submission_score_on_cv_folds SET train_score = %s, valid_score = %s, test_score = %s "
                "WHERE id = %s",
                (*values, row_id),
            )


def write_bagged_scores(cur: Any, submission_id: int, bagged: Mapping[str, Mapping[str, list]]) -> None:
    """``set_bagged_scores``: ``*_score_cv_bag`` = the last bag, ``*_score_cv_bags`` = all bags."""
    cur.execute(_SCORES, (submission_id,))
    rows = {name: row_id for row_id, name in cur.fetchall()}
    for step in BAGGED_STEPS:
        _check_names(bagged.get(step, {}), set(rows), f"bagged scores step {step}")
    for name, row_id in rows.items():
        bags = {step: [plain_float(v, f"bagged {step} {name}") for v in bagged[step][name]] for step in BAGGED_STEPS}
        if not all(bags.values()):
            raise ResultError(f"the bagged scores of {name} are empty")
        cur.execute(
            "UPDATE submission_scores SET valid_score_cv_bag = %s, test_score_cv_bag = %s, "
            "valid_score_cv_bags = %s, test_score_cv_bags = %s WHERE id = %s",
            (bags["valid"][-1], bags["test"][-1], encode_cv_bags(bags["valid"]), encode_cv_bags(bags["test"]), row_id),
        )
