"""RampDatabaseHook on the bench's real PostgreSQL and the RAMP schema made by ramp-database 0.10.1."""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
import re

import pytest
import structlog.testing

from ramp_airflow.config import DatabaseSettings
from ramp_airflow.hooks.ramp_database import RampDatabaseHook, ResultError, SubmissionNotFound
from ramp_airflow.utils import ramp_sql
from ramp_airflow.utils import submission_states as states
from ramp_airflow.utils.claim_sql import ClaimLost, RunRef
from ramp_airflow.utils.dag_ids import training_run_prefix

SHELL_NAME = "x;touch PWNED$(id)"
DAG = "ramp_train_bench"
OWNER = RunRef(DAG, "manual__one")
SCORE_NAMES = (
    "SELECT est.name FROM event_score_types est JOIN events e ON e.id = est.event_id WHERE e.name = %s ORDER BY est.id"
)
TRANSITION = re.compile(r"^Submission \d+: \w+ -> \w+")
WAITING = (
    "SELECT s.id FROM submissions s JOIN event_teams et ON et.id = s.event_team_id JOIN events e ON e.id = et.event_id "
    "WHERE e.name = %s AND s.state = 'new' AND s.name <> e.ramp_sandbox_name"
)


def _settings(db) -> DatabaseSettings:
    return DatabaseSettings(postgres_conn_id=None, **db.sqlalchemy_config)


def _hook(db) -> RampDatabaseHook:
    return RampDatabaseHook(database=_settings(db))


def _state(db, sub_id):
    """(submission state, fold states, queue_position, sent stamp set, training stamp set, error_msg)."""
    [(state, queue, sent, trained, msg)] = db.query(
        "SELECT state, queue_position, sent_to_training_timestamp IS NOT NULL, training_timestamp IS NOT NULL, "
        "error_msg FROM submissions WHERE id = %s",
        (sub_id,),
    )
    folds = [r[0] for r in db.query("SELECT state FROM submission_on_cv_folds WHERE submission_id = %s", (sub_id,))]
    return state, folds, queue, sent, trained, msg


def _snapshot(db, sub_id) -> dict:
    """Every row recording touches, bytea as hex."""
    return {
        "submission": db.query("SELECT * FROM submissions WHERE id = %s", (sub_id,)),
        "folds": db.query("SELECT * FROM submission_on_cv_folds WHERE submission_id = %s ORDER BY id", (sub_id,)),
        "scores": db.query(
            "SELECT id, valid_score_cv_bag, test_score_cv_bag, encode(valid_score_cv_bags, 'hex'), "
            "encode(test_score_cv_bags, 'hex') FROM submission_scores WHERE submission_id = %s ORDER BY id",
            (sub_id,),
        ),
        "fold_scores": db.query(
            "SELECT sf.* FROM submission_score_on_cv_folds sf JOIN submission_on_cv_folds f "
            "ON f.id = sf.submission_on_cv_fold_id WHERE f.submission_id = %s ORDER BY sf.id",
            (sub_id,),
        ),
    }


def _result(hook, db, sub_id, success=True) -> dict:
    names, n = [name for (name,) in db.query(SCORE_NAMES, (db.event,))], hook.n_cv_folds(db.event)
    return {
        "submission_id": sub_id,
        "success": success,
        "error_msg": "" if success else "Traceback (most recent call last):\nValueError: boom",
        "max_ram": 123.5,
        "folds": [
            {
                "train_time": 1.5 + i,
                "valid_time": 0.25,
                "test_time": 0.125,
                "scores": {s: {name: 0.5 + i / 10 + j / 100 for j, name in enumerate(names)} for s in ramp_sql.STEPS},
            }
            for i in range(n)
        ]
        if success
        else [],
        "bagged_scores": {s: {name: [0.6 + k / 10 for k in range(n)] for name in names} for s in ("valid", "test")},
    }


def test_reads(ramp_db):
    hook = _hook(ramp_db)
    assert hook.room_for_training(ramp_db.event, 10) == 3  # the three new submissions, not the sandbox
    rf = hook.get_submission(ramp_db.submissions["random_forest"])
    assert rf == {
        "id": ramp_db.submissions["random_forest"],
        "name": "random_forest",
        "team": "test_user",
        "event": ramp_db.event,
        "state": "new",
        "path_ramp_submissions": ramp_db.submissions_dir,
        "sandbox": False,
    }
    assert hook.find_submission(ramp_db.event, "test_user_2", SHELL_NAME)["id"] == ramp_db.submissions[SHELL_NAME]
    assert hook.get_submission(ramp_db.sandbox_ids[0])["sandbox"] is True
    assert hook.n_cv_folds(ramp_db.event) == ramp_db.n_cv_folds
    with pytest.raises(SubmissionNotFound, match="submission id 999999"):
        hook.get_submission(999999)
    with pytest.raises(SubmissionNotFound, match="'nope' of team 'test_user'"):
        hook.find_submission(ramp_db.event, "test_user", "nope")
    with pytest.raises(SubmissionNotFound, match="no event named 'nope'"):
        hook.n_cv_folds("nope")
    assert ramp_db.cluster.password not in repr(hook)


def test_airflow_connection_id_wins(ramp_db, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_RAMP_BENCH", ramp_db.url)
    wrong = DatabaseSettings(None, "postgresql", "nobody", "wrong-password", "127.0.0.1", 1, "nothing")
    hook = RampDatabaseHook(postgres_conn_id="ramp_bench", database=wrong)
    assert hook.n_cv_folds(ramp_db.event) == ramp_db.n_cv_folds


def test_claim_new_submissions(fresh_ramp_db):
    db, hook = fresh_ramp_db, _hook(fresh_ramp_db)
    first = hook.claim_new_submissions(db.event, 2, DAG)
    assert [s["name"] for s in first] == ["random_forest", "error_in_fit"]
    assert {s["state"] for s in first} == {states.SENT_TO_TRAINING}
    for position, sub in enumerate(first, start=1):
        state, folds, queue, sent, _, _ = _state(db, sub["id"])
        assert (state, set(folds), queue, sent) == (states.SENT_TO_TRAINING, {states.SENT_TO_TRAINING}, position, True)
    assert [s["name"] for s in hook.claim_new_submissions(db.event, 5, DAG)] == [SHELL_NAME]
    assert hook.claim_new_submissions(db.event, 5, DAG) == []
    assert all(_state(db, i)[0] == "new" for i in db.sandbox_ids)


def test_room_for_training_counts_waiting_and_in_flight(fresh_ramp_db):
    """Room = new submissions (sandboxes excepted), capped by the trainings already in flight."""
    db, hook = fresh_ramp_db, _hook(fresh_ramp_db)
    assert hook.room_for_training(db.event, 10) == 3  # the sandboxes are new too, and do not count
    assert hook.room_for_training(db.event, 2) == 2
    (claimed,) = hook.claim_new_submissions(db.event, 1, DAG)
    assert hook.room_for_training(db.event, 10) == 2
    hook.set_training(claimed["id"])  # training holds an instance as sent_to_training does
    assert hook.room_for_training(db.event, 2) == 1
    assert hook.room_for_training(db.event, 1) == 0
    hook.claim_new_submissions(db.event, 2, DAG)
    assert hook.room_for_training(db.event, 10) == 0  # nothing left waiting


def test_the_claim_gives_no_team_more_than_its_cap(fresh_ramp_db):
    """max_concurrent_per_team 1: test_user's oldest, then test_user_2's; test_user's next once its first ends."""
    db, hook = fresh_ramp_db, _hook(fresh_ramp_db)
    rf, err = db.submissions["random_forest"], db.submissions["error_in_fit"]
    assert hook.room_for_training(db.event, 10, 1) == 2  # one per team, though three wait
    claimed = hook.claim_new_submissions(db.event, 5, DAG, max_concurrent_per_team=1)
    assert [s["id"] for s in claimed] == [rf, db.submissions[SHELL_NAME]]
    assert hook.room_for_training(db.event, 10, 1) == 0
    assert hook.claim_new_submissions(db.event, 5, DAG, max_concurrent_per_team=1) == []
    hook.set_training(rf)  # training counts as sent_to_training does
    assert hook.claim_new_submissions(db.event, 5, DAG, max_concurrent_per_team=1) == []
    hook.record_results(rf, {"success": False, "error_msg": "boom"})
    assert hook.room_for_training(db.event, 10, 1) == 1
    assert [s["id"] for s in hook.claim_new_submissions(db.event, 5, DAG, max_concurrent_per_team=1)] == [err]


def test_claim_submission(fresh_ramp_db):
    db, hook = fresh_ramp_db, _hook(fresh_ramp_db)
    rf = db.submissions["random_forest"]
    claimed = hook.claim_submission(rf, OWNER)
    assert claimed["state"] == states.SENT_TO_TRAINING and _state(db, rf)[:3] == (
        states.SENT_TO_TRAINING,
        [states.SENT_TO_TRAINING] * db.n_cv_folds,
        1,
    )
    assert hook.claim_submission(rf, OWNER) == claimed  # a retry of the claiming task
    with pytest.raises(states.StateTransitionError, match="sandbox"):
        hook.claim_submission(db.sandbox_ids[0], OWNER)
    hook.set_training(rf)
    with pytest.raises(
        states.StateTransitionError, match=f"submission {rf} is already training, claimed by run manual__one"
    ):
        hook.claim_submission(rf, RunRef(DAG, "manual__two"))
    hook.record_results(rf, _result(hook, db, rf, success=False))
    with pytest.raises(states.StateTransitionError, match=f"submission {rf} is training_error already: to train it"):
        hook.claim_submission(rf, OWNER)
    assert _state(db, rf)[0] == states.TRAINING_ERROR
    again = RunRef(DAG, "manual__again")
    assert hook.claim_submission(rf, again, retrain=True)["state"] == states.SENT_TO_TRAINING
    assert _state(db, rf)[:3] == (states.SENT_TO_TRAINING, [states.SENT_TO_TRAINING] * db.n_cv_folds, 1)
    with pytest.raises(ClaimLost):  # the old run's claim is gone
        hook.set_training(rf, OWNER)
    hook.set_training(rf, again)
    with pytest.raises(states.StateTransitionError, match="already training"):
        hook.claim_submission(rf, OWNER, retrain=True)  # only a trained submission is taken again


def test_a_claim_belongs_to_one_run(fresh_ramp_db):
    """A second run is refused and writes nothing; a re-queued submission is the new claimer's alone."""
    db, hook = fresh_ramp_db, _hook(fresh_ramp_db)
    (claimed,) = hook.claim_new_submissions(db.event, 1, DAG)
    rf, loop_run = claimed["id"], RunRef(DAG, claimed["run_id"])
    assert claimed["run_id"].startswith(training_run_prefix(rf))
    assert hook.claim_submission(rf, loop_run)["state"] == states.SENT_TO_TRAINING  # the run the loop started
    manual = RunRef(DAG, "manual__racing")
    with pytest.raises(
        states.StateTransitionError, match=f"already sent_to_training, claimed by run {claimed['run_id']}"
    ):
        hook.claim_submission(rf, manual)
    before = _state(db, rf)
    for write in (
        lambda: hook.set_training(rf, manual),
        lambda: hook.set_checking_error(rf, "not mine", manual),
        lambda: hook.record_results(rf, _result(hook, db, rf, success=False), manual),
    ):
        with pytest.raises(ClaimLost, match="no longer this run's"):
            write()
    assert _state(db, rf) == before
    hook.set_training(rf, loop_run)
    # An organiser re-queues it (ramp-database set-submission-state ... --state new): claimed again,
    # for a new run; the first run can no longer write.
    db.query("UPDATE submissions SET state = 'new' WHERE id = %s", (rf,))
    (again,) = hook.claim_new_submissions(db.event, 1, DAG)
    assert again["id"] == rf and again["run_id"] != claimed["run_id"]
    with pytest.raises(ClaimLost):
        hook.record_results(rf, _result(hook, db, rf, success=False), loop_run)
    assert hook.in_flight_claims(db.event) == [(rf, states.SENT_TO_TRAINING, RunRef(DAG, again["run_id"]))]


def _add_submissions(db, n: int) -> None:
    """``n`` more new submissions (with fold rows), cloned from random_forest."""
    rf = db.submissions["random_forest"]
    for i in range(n):
        [(new_id,)] = db.query(
            "INSERT INTO submissions (event_team_id, name, hash_, submission_timestamp, state, queue_position, "
            "error_msg) SELECT event_team_id, %s, %s, submission_timestamp + make_interval(secs => %s), 'new', -1, '' "
            "FROM submissions WHERE id = %s RETURNING id",
            (f"clone_{i}", f"clone-hash-{i}", i + 1, rf),
        )
        db.query(
            "INSERT INTO submission_on_cv_folds (submission_id, cv_fold_id, state) "
            "SELECT %s, cv_fold_id, 'new' FROM submission_on_cv_folds WHERE submission_id = %s",
            (new_id, rf),
        )


def _claim_until_empty(settings: DatabaseSettings, event: str, team_cap: int | None, barrier, results) -> None:
    hook = RampDatabaseHook(database=settings)
    barrier.wait(timeout=120)
    got = []
    while claimed := hook.claim_new_submissions(event, 1, DAG, max_concurrent_per_team=team_cap):
        got += [s["id"] for s in claimed]
    results.put((os.getpid(), got))


@pytest.mark.parametrize("team_cap", [None, 3], ids=["no team cap", "team cap 3"])
def test_concurrent_claims_from_processes_never_overlap(fresh_ramp_db, team_cap):
    """Four processes claim one at a time until nothing is left: no claim twice, and no team past its cap."""
    db = fresh_ramp_db
    _add_submissions(db, 24)  # all test_user's
    waiting = [i for (i,) in db.query(WAITING + " ORDER BY s.submission_timestamp, s.id", (db.event,))]
    shell = db.submissions[SHELL_NAME]  # test_user_2's only one
    # With the cap, nothing ends meanwhile: test_user gets its three oldest, test_user_2 its one.
    expected = set(waiting) if team_cap is None else {*[i for i in waiting if i != shell][:team_cap], shell}
    # fork: the parent holds no database connection (each hook call opens and closes its own),
    # and the children start in a second instead of re-importing Airflow.
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    args = (_settings(db), db.event, team_cap, barrier, results)
    procs = [ctx.Process(target=_claim_until_empty, args=args) for _ in range(4)]
    for p in procs:
        p.start()
    try:
        claims = [results.get(timeout=180) for _ in procs]
    except queue_module.Empty:
        pytest.fail("a claiming process did not report within 180 s")
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join(timeout=10)
    all_ids = [i for _, ids in claims for i in ids]
    assert len(all_ids) == len(set(all_ids)), f"a submission was claimed twice: {claims}"
    assert set(all_ids) == expected
    assert {_state(db, i)[0] for i in expected} == {states.SENT_TO_TRAINING}


def test_transitions_write_submission_and_folds(fresh_ramp_db):
    db, hook = fresh_ramp_db, _hook(fresh_ramp_db)
    rf, err = (db.submissions[n] for n in ("random_forest", "error_in_fit"))
    n = db.n_cv_folds
    with pytest.raises(states.StateTransitionError, match="only be moved to 'training' from 'sent_to_training'"):
        hook.set_training(rf)
    for sub in hook.claim_new_submissions(db.event, 3, DAG):
        hook.set_training(sub["id"])
        assert _state(db, sub["id"]) == (states.TRAINING, [states.TRAINING] * n, -1, True, True, "")
    stamp = db.query("SELECT training_timestamp FROM submissions WHERE id = %s", (rf,))
    hook.set_training(rf)  # a retried task: nothing changes
    assert db.query("SELECT training_timestamp FROM submissions WHERE id = %s", (rf,)) == stamp
    hook.set_checking_error(err, "the instance never answered on SSH")
    state, folds, _, _, _, msg = _state(db, err)
    assert (state, folds) == (states.CHECKING_ERROR, [states.CHECKING_ERROR] * n)
    assert "This problem is on RAMP side" in msg and msg.endswith("Reason: the instance never answered on SSH")
    for refused in (lambda: hook.set_training(err), lambda: hook.set_checking_error(err, "again")):
        with pytest.raises(states.StateTransitionError):
            refused()
    assert _state(db, rf)[0] == states.TRAINING and _state(db, err)[0] == states.CHECKING_ERROR


def test_record_success_is_complete_and_idempotent(fresh_ramp_db):
    db, hook = fresh_ramp_db, _hook(fresh_ramp_db)
    rf = db.submissions["random_forest"]
    result = _result(hook, db, rf)
    with pytest.raises(states.StateTransitionError, match="state 'new'"):
        hook.record_results(rf, result)
    hook.claim_submission(rf, OWNER)
    hook.set_training(rf)
    assert hook.record_results(rf, result) == states.SCORED
    first = _snapshot(db, rf)
    assert _state(db, rf)[:2] == (states.SCORED, [states.SCORED] * db.n_cv_folds)
    assert db.query("SELECT max_ram, error_msg FROM submissions WHERE id = %s", (rf,)) == [(123.5, "")]
    times = db.query(
        "SELECT train_time, valid_time, test_time FROM submission_on_cv_folds WHERE submission_id = %s ORDER BY id",
        (rf,),
    )
    assert times == [(1.5 + i, 0.25, 0.125) for i in range(db.n_cv_folds)]
    assert len(first["fold_scores"]) == db.n_cv_folds * 3
    assert hook.record_results(rf, result) == states.SCORED
    assert _snapshot(db, rf) == first
    with pytest.raises(states.StateTransitionError):
        hook.record_results(rf, _result(hook, db, rf, success=False))
    assert _snapshot(db, rf) == first


def test_record_failure(fresh_ramp_db):
    db, hook = fresh_ramp_db, _hook(fresh_ramp_db)
    err = db.submissions["error_in_fit"]
    hook.claim_submission(err, OWNER)
    result = _result(hook, db, err, success=False)
    assert hook.record_results(err, result) == states.TRAINING_ERROR
    assert _state(db, err)[:2] == (states.TRAINING_ERROR, [states.TRAINING_ERROR] * db.n_cv_folds)
    stored = db.query("SELECT max_ram, error_msg FROM submissions WHERE id = %s", (err,))
    assert stored == [(123.5, result["error_msg"])]
    before = _snapshot(db, err)
    hook.record_results(err, result)
    assert _snapshot(db, err) == before


@pytest.mark.parametrize("breakage", ["unknown score", "missing fold", "numpy-like value", "injected"])
def test_failure_while_recording_leaves_everything_untouched(fresh_ramp_db, monkeypatch, breakage):
    db, hook = fresh_ramp_db, _hook(fresh_ramp_db)
    rf = db.submissions["random_forest"]
    hook.claim_submission(rf, OWNER)
    hook.set_training(rf)
    result, error = _result(hook, db, rf), ResultError
    if breakage == "unknown score":
        result["bagged_scores"]["test"]["rmse"] = [0.1] * db.n_cv_folds
    elif breakage == "missing fold":
        result["folds"].pop()
    elif breakage == "numpy-like value":
        result["folds"][-1]["scores"]["test"]["acc"] = "0.9"
    else:

        def explode(*args):
            raise RuntimeError("injected after the fold rows were written")

        monkeypatch.setattr(ramp_sql, "write_bagged_scores", explode)
        error = RuntimeError
    before = _snapshot(db, rf)
    with pytest.raises(error):
        hook.record_results(rf, result)
    assert _snapshot(db, rf) == before
    assert _state(db, rf)[0] == states.TRAINING


def test_one_log_line_per_state_change(fresh_ramp_db):
    """Every change, by whichever method, logs one INFO line ``Submission <id>: <old> -> <new>``; a repeat logs none."""
    db, hook = fresh_ramp_db, _hook(fresh_ramp_db)
    # The hook logs through structlog (Airflow's task logging).
    with structlog.testing.capture_logs() as entries:
        rf, err = hook.claim_new_submissions(db.event, 2, DAG)
        loop_owner = RunRef(DAG, rf["run_id"])
        hook.set_training(rf["id"], loop_owner)
        hook.set_training(rf["id"], loop_owner)  # a retried task: no change
        hook.record_results(rf["id"], _result(hook, db, rf["id"], success=False), loop_owner)
        hook.record_results(rf["id"], _result(hook, db, rf["id"], success=False), loop_owner)  # the same again
        hook.return_to_new(err["id"])
        hook.claim_submission(err["id"], OWNER)
        hook.set_checking_error(err["id"], "the instance was lost", OWNER)
        hook.claim_submission(err["id"], OWNER, retrain=True)
    lines = [(e["log_level"], e["event"] % tuple(e.get("positional_args", ()))) for e in entries]
    assert [line for line in lines if TRANSITION.match(line[1])] == [
        ("info", f"Submission {rf['id']}: new -> sent_to_training (run {rf['run_id']} of {DAG})"),
        ("info", f"Submission {err['id']}: new -> sent_to_training (run {err['run_id']} of {DAG})"),
        ("info", f"Submission {rf['id']}: sent_to_training -> training (run {rf['run_id']} of {DAG})"),
        ("info", f"Submission {rf['id']}: training -> training_error (run {rf['run_id']} of {DAG})"),
        ("info", f"Submission {err['id']}: sent_to_training -> new"),
        ("info", f"Submission {err['id']}: new -> sent_to_training ({OWNER})"),
        ("info", f"Submission {err['id']}: sent_to_training -> checking_error ({OWNER})"),
        ("info", f"Submission {err['id']}: checking_error -> sent_to_training ({OWNER})"),
    ]
