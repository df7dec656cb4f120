"""
New submissions for the benchmarks: copies of a seeded submission, made ``new`` in one transaction.

The bench seeds a RAMP database with ramp-database itself (testbench/ramp_seed.py); a benchmark
needs many more submissions than the seed's three. Calling ramp-database's ``add_submission``
N times (in the RAMP virtualenv) takes about a second each, so this module copies one seeded
submission's row set with SQL instead, exactly as ramp-database lays it out: the
``submissions`` row, its ``submission_files``, one ``submission_on_cv_folds`` row per CV fold,
one ``submission_scores`` row per event score type and one ``submission_score_on_cv_folds``
row per (fold, score); plus its folder under ``events.path_ramp_submissions``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import time
import uuid

from ramp_airflow.utils.layout import local_submission_dir

FINAL_STATES = ("scored", "training_error", "checking_error")

_COPY_SUBMISSION = """
INSERT INTO submissions (event_team_id, name, hash_, submission_timestamp, type, state, queue_position,
                         error_msg, is_valid, is_to_ensemble, is_in_competition, notes, user_name,
                         contributivity, historical_contributivity)
SELECT event_team_id, %(name)s, %(hash)s, %(now)s, type, 'new', -1,
       '', is_valid, is_to_ensemble, is_in_competition, notes, user_name, contributivity, historical_contributivity
FROM submissions WHERE id = %(template)s
RETURNING id
"""
_COPY_FILES = """
INSERT INTO submission_files (submission_id, workflow_element_id, submission_file_type_extension_id)
SELECT %(new)s, workflow_element_id, submission_file_type_extension_id
FROM submission_files WHERE submission_id = %(template)s
"""
_COPY_FOLDS = """
INSERT INTO submission_on_cv_folds (submission_id, cv_fold_id, state, contributivity, best, train_time, valid_time,
                                    test_time, error_msg)
SELECT %(new)s, cv_fold_id, 'new', contributivity, best, train_time, valid_time, test_time, ''
FROM submission_on_cv_folds WHERE submission_id = %(template)s ORDER BY id
"""
# Every column ramp-database's ORM fills at add_submission (its defaults and reset() are Python-side)
# is copied from the template, which was never trained: its leaderboards fail on a NULL contributivity,
# its set_scores on a NULL where reset() stored a pickled None.
_COPY_SCORES = """
INSERT INTO submission_scores (submission_id, event_score_type_id, valid_score_cv_bag, test_score_cv_bag,
                               valid_score_cv_bags, test_score_cv_bags)
SELECT %(new)s, event_score_type_id, valid_score_cv_bag, test_score_cv_bag, valid_score_cv_bags, test_score_cv_bags
FROM submission_scores WHERE submission_id = %(template)s ORDER BY id
"""
_LINK_FOLD_SCORES = """
INSERT INTO submission_score_on_cv_folds (submission_on_cv_fold_id, submission_score_id, train_score, valid_score,
                                          test_score)
SELECT f.id, s.id, t.train_score, t.valid_score, t.test_score
FROM submission_on_cv_folds f JOIN submission_scores s ON s.submission_id = f.submission_id
LEFT JOIN (
    SELECT tf.cv_fold_id, ts.event_score_type_id, tss.train_score, tss.valid_score, tss.test_score
    FROM submission_score_on_cv_folds tss
    JOIN submission_on_cv_folds tf ON tf.id = tss.submission_on_cv_fold_id
    JOIN submission_scores ts ON ts.id = tss.submission_score_id
    WHERE tf.submission_id = %(template)s
) t ON t.cv_fold_id = f.cv_fold_id AND t.event_score_type_id = s.event_score_type_id
WHERE f.submission_id = %(new)s
ORDER BY f.id, s.id
"""


def submissions_path(conn, template_id: int) -> str:
    """``events.path_ramp_submissions`` of the template submission's event."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT e.path_ramp_submissions FROM submissions s JOIN event_teams et ON et.id = s.event_team_id "
            "JOIN events e ON e.id = et.event_id WHERE s.id = %s",
            (template_id,),
        )
        return cur.fetchone()[0]


def retire_seeded(conn, keep_new: tuple[str, ...] = ("starting_kit",), state: str = "scored") -> None:
    """
    Move the seeded submissions out of ``new`` (all but the sandbox) to ``state``, so only copies are
    trained. ramp-database's leaderboards read the scores of every ``scored`` submission, which the
    seeded rows do not have: a benchmark whose leaderboards are computed retires them to an error state.
    """
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM submissions WHERE state = 'new' AND name <> ALL(%s)", (list(keep_new),))
        ids = [row[0] for row in cur.fetchall()]
        cur.execute("UPDATE submissions SET state = %s WHERE id = ANY(%s)", (state, ids))
        cur.execute("UPDATE submission_on_cv_folds SET state = %s WHERE submission_id = ANY(%s)", (state, ids))
    conn.commit()


def add_new_submissions(
    conn, template_id: int, count: int, prefix: str, commit_at: float | None = None
) -> tuple[list[int], float]:
    """
    Copy submission ``template_id`` ``count`` times (names ``<prefix><i>``) in state ``new``.

    The folders are copied first, then every row is inserted in one transaction, so that all
    the copies become ``new`` at the same instant: ``commit_at`` (an epoch time) when given and still
    ahead, at once otherwise. Returns their ids and that instant (``time.time()`` right after the commit).
    """
    base = submissions_path(conn, template_id)
    source = local_submission_dir(base, template_id)
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    ids = []
    try:
        with conn.cursor() as cur:
            for i in range(count):
                name = f"{prefix}{i}"[:20]
                cur.execute(
                    _COPY_SUBMISSION, {"name": name, "hash": uuid.uuid4().hex, "now": now, "template": template_id}
                )
                new = cur.fetchone()[0]
                ids.append(new)
                for statement in (_COPY_FILES, _COPY_FOLDS, _COPY_SCORES, _LINK_FOLD_SCORES):
                    cur.execute(statement, {"new": new, "template": template_id})
                # The folder must exist before the commit makes the submission visible to the loop.
                shutil.copytree(source, local_submission_dir(base, new))
        if commit_at is not None:
            time.sleep(max(0.0, commit_at - time.time()))
        conn.commit()
    except BaseException:
        conn.rollback()
        for new in ids:
            with contextlib.suppress(OSError):
                shutil.rmtree(local_submission_dir(base, new))
        raise
    return ids, time.time()


def remove_folders(conn, template_id: int, ids: list[int]) -> None:
    """Delete the copied folders (the rows stay, in their final states)."""
    base = submissions_path(conn, template_id)
    for new in ids:
        path = local_submission_dir(base, new)
        if os.path.isdir(path):
            shutil.rmtree(path)


# RAMP keeps no time for a submission's final state: a trigger records every state change, whoever
# makes it (ramp-airflow's SQL or ramp-database's ORM), at the moment of the UPDATE.
_STATE_LOG = """
CREATE TABLE IF NOT EXISTS bench_state_log (
    submission_id integer NOT NULL, state text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE OR REPLACE FUNCTION bench_log_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_state_log (submission_id, state) VALUES (NEW.id, NEW.state::text);
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS bench_state_log ON submissions;
CREATE TRIGGER bench_state_log AFTER UPDATE OF state ON submissions
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION bench_log_state();
"""


def log_state_changes(conn) -> None:
    """Install the state-change log (table ``bench_state_log``) in a RAMP database."""
    with conn.cursor() as cur:
        cur.execute(_STATE_LOG)
    conn.commit()


def final_times(conn, ids: list[int]) -> dict[int, tuple[str, float]]:
    """Submission id -> (final state, epoch seconds it was first set), for those of ``ids`` now final."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT s.id, s.state::text, min(l.at) FROM submissions s JOIN bench_state_log l "
            "ON l.submission_id = s.id AND l.state = s.state::text "
            "WHERE s.id = ANY(%s) AND s.state = ANY(%s) GROUP BY s.id, s.state",
            (ids, list(FINAL_STATES)),
        )
        rows = {sid: (state, at.timestamp()) for sid, state, at in cur.fetchall()}
    conn.commit()
    return rows


def first_time(conn, ids: list[int], state: str) -> float | None:
    """Epoch seconds at which the first of ``ids`` entered ``state``, or None if none has."""
    with conn.cursor() as cur:
        cur.execute("SELECT min(at) FROM bench_state_log WHERE submission_id = ANY(%s) AND state = %s", (ids, state))
        (at,) = cur.fetchone()
    conn.commit()
    return at.timestamp() if at is not None else None
