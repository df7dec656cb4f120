"""ramp_train_loop_<event>: claims new submissions once each and starts one training run per submission."""

from __future__ import annotations

import pytest

from testbench.event_config import write_event_config

SHELL = "x;touch PWNED$(id)"  # the seeded submission whose name is shell code


@pytest.fixture
def loop_dag(tmp_path, fresh_ramp_db, instance, ec2, airflow_home, monkeypatch):
    """Build the bench event's loop DAG from a config with ``aws_overrides``; its runs wait 3 s at most."""
    from ramp_airflow.dag_factory import event_dags, loop

    monkeypatch.setattr(loop, "LOOP_RUN_WAIT_SECS", 3)

    def build(**aws_overrides):
        config = write_event_config(tmp_path / "config.yml", fresh_ramp_db, instance, ec2, **aws_overrides)
        monkeypatch.setenv("RAMP_AIRFLOW_CONFIG_DIR", str(config))
        return event_dags(config)[f"ramp_train_loop_{fresh_ramp_db.event}"]

    return build


@pytest.fixture
def loop(loop_dag):
    return loop_dag()


def training_runs(dag_id: str) -> list[tuple[str, dict]]:
    from airflow.models.dagrun import DagRun

    return sorted((run.run_id, run.conf) for run in DagRun.find(dag_id=dag_id))


def test_loop_claims_each_new_submission_once(loop, fresh_ramp_db):
    training_dag_id = f"ramp_train_{fresh_ramp_db.event}"
    before = training_runs(training_dag_id)
    new = sorted(fresh_ramp_db.submissions.values())

    first = loop.test()
    assert first.state == "success"
    started = [run for run in training_runs(training_dag_id) if run not in before]
    # One run per claim, named after its submission and its claim.
    assert [(run_id.rsplit("_", 1)[0], conf) for run_id, conf in started] == [
        (f"train_submission_{i:09d}", {"submission_id": i}) for i in new
    ]
    claimed = fresh_ramp_db.query(
        "SELECT id, state, queue_position FROM submissions WHERE id = ANY(%s) ORDER BY id", (new,)
    )
    assert [(i, s) for i, s, _ in claimed] == [(i, "sent_to_training") for i in new]
    sandboxes = fresh_ramp_db.query("SELECT state FROM submissions WHERE id = ANY(%s)", (fresh_ramp_db.sandbox_ids,))
    assert sandboxes == [("new",)] * len(fresh_ramp_db.sandbox_ids)

    second = loop.test()
    states = {ti.task_id: ti.state for ti in second.get_task_instances()}
    assert states["wait_for_new_submissions"] == "skipped"
    assert [run for run in training_runs(training_dag_id) if run not in before] == started


def test_loop_claims_no_more_than_the_cap_leaves_room_for(loop_dag, fresh_ramp_db):
    """With max_concurrent_instances 2 and one submission in training, one more is claimed, then none."""
    db = fresh_ramp_db
    loop = loop_dag(max_concurrent_instances=2)
    db.query("UPDATE submissions SET state = 'training' WHERE id = %s", (db.submissions["random_forest"],))

    def state(name: str) -> str:
        return db.query("SELECT state FROM submissions WHERE id = %s", (db.submissions[name],))[0][0]

    first = loop.test()
    assert first.state == "success"
    assert (state("error_in_fit"), state(SHELL)) == ("sent_to_training", "new")  # the oldest, alone

    second = loop.test()  # two in flight: the wait holds until the run's time is up, and claims nothing
    states = {ti.task_id: ti.state for ti in second.get_task_instances()}
    assert states["wait_for_new_submissions"] == "skipped"
    assert state(SHELL) == "new"


def test_loop_gives_no_team_more_than_its_cap(loop_dag, fresh_ramp_db):
    """max_concurrent_per_team 1: each team's oldest is claimed; test_user's second waits, and so does the loop."""
    db = fresh_ramp_db
    loop = loop_dag(max_concurrent_per_team=1)

    def state(name: str) -> str:
        return db.query("SELECT state FROM submissions WHERE id = %s", (db.submissions[name],))[0][0]

    assert loop.test().state == "success"
    assert [state(name) for name in ("random_forest", "error_in_fit", SHELL)] == [
        "sent_to_training",
        "new",
        "sent_to_training",
    ]
    # Only capped submissions wait: the trigger sees no room, and the run ends with its wait skipped.
    second = loop.test()
    assert {ti.task_id: ti.state for ti in second.get_task_instances()}["wait_for_new_submissions"] == "skipped"
    assert state("error_in_fit") == "new"


def test_a_spent_budget_holds_the_claims_until_it_is_raised(loop_dag, fresh_ramp_db, tmp_path):
    """The loop claims nothing once the ledger reaches aws.budget, runs budget_exhausted once, and resumes."""

    from ramp_airflow.config import load_config
    from testbench.ledger import bill

    db = fresh_ramp_db
    notes = tmp_path / "budget_exhausted.txt"
    hooks = {"budget_exhausted": f'echo "$RAMP_AWS_BUDGET_SPENT of $RAMP_AWS_BUDGET $RAMP_AWS_BUDGET_UNIT" >> {notes}'}
    loop = loop_dag(budget=0.01, hooks=hooks)  # 36 instance-seconds
    bill(load_config(tmp_path / "config.yml"), "t2.micro", 60, "i-0123456789abcdef0")
    waiting = sorted(db.submissions.values())

    def states() -> list[str]:
        return [
            state for (state,) in db.query("SELECT state FROM submissions WHERE id = ANY(%s) ORDER BY id", (waiting,))
        ]

    for _ in range(2):
        run = loop.test()
        tasks = {ti.task_id: ti.state for ti in run.get_task_instances()}
        assert (tasks["report_budget"], tasks["wait_for_new_submissions"]) == ("success", "skipped")
        assert states() == ["new"] * len(waiting)
    assert notes.read_text() == "0.02 of 0.01 instance-hours\n"  # once, not at each loop run

    loop = loop_dag(budget=1, hooks=hooks)  # the organiser raises it
    assert loop.test().state == "success"
    assert states() == ["sent_to_training"] * len(waiting)


def test_a_requeued_submission_is_trained_again_by_a_new_run(loop, fresh_ramp_db):
    """ramp-database set-submission-state --state new, after a scored or a failed training."""
    db = fresh_ramp_db
    training_dag_id = f"ramp_train_{db.event}"
    assert loop.test().state == "success"
    first = dict(training_runs(training_dag_id))
    scored, failed = db.submissions["random_forest"], db.submissions["error_in_fit"]
    db.query("UPDATE submissions SET state = 'scored' WHERE id = %s", (scored,))
    db.query("UPDATE submissions SET state = 'training_error' WHERE id = %s", (failed,))
    _finish_runs(training_dag_id, "success")
    db.query("UPDATE submissions SET state = 'new' WHERE id = ANY(%s)", ([scored, failed],))

    assert loop.test().state == "success"
    new_runs = {run_id: conf for run_id, conf in training_runs(training_dag_id) if run_id not in first}
    assert sorted(conf["submission_id"] for conf in new_runs.values()) == [scored, failed]
    assert {db.query("SELECT state FROM submissions WHERE id = %s", (i,))[0][0] for i in (scored, failed)} == {
        "sent_to_training"
    }


def test_claims_without_a_live_run_are_set_right(loop, fresh_ramp_db):
    """Each loop run starts a claim's missing run, fails a claim whose run ended, frees an unowned one."""
    from ramp_airflow.hooks.ramp_database import RampDatabaseHook
    from ramp_airflow.utils.submission_states import PLATFORM_ERROR_MSG

    db = fresh_ramp_db
    training_dag_id = f"ramp_train_{db.event}"
    hook = RampDatabaseHook(database=_settings(db))
    # The loop died between its claim and the trigger: a claim, and no run.
    (orphan,) = hook.claim_new_submissions(db.event, 1, training_dag_id)
    assert loop.test().state == "success"
    runs = dict(training_runs(training_dag_id))
    assert runs[orphan["run_id"]] == {"submission_id": orphan["id"]}

    # That run is cancelled (marked failed) before it records anything; a submission is in flight
    # with no claim of ours (another backend's, or an older one's).
    _finish_runs(training_dag_id, "failed", only=[orphan["run_id"]])
    unowned = db.submissions[SHELL]
    db.query("UPDATE submissions SET state = 'training' WHERE id = %s", (unowned,))
    db.query("DELETE FROM ramp_airflow_claims WHERE submission_id = %s", (unowned,))
    assert loop.test().state == "success"
    ((state, error_msg),) = db.query("SELECT state, error_msg FROM submissions WHERE id = %s", (orphan["id"],))
    assert state == "checking_error" and error_msg.startswith(PLATFORM_ERROR_MSG)
    assert f"Its training run ({orphan['run_id']}) ended (failed) before recording a result" in error_msg
    # The unowned one went back to new, and was claimed again by the same loop run, for a run of its own.
    ((owner,),) = db.query("SELECT run_id FROM ramp_airflow_claims WHERE submission_id = %s", (unowned,))
    assert dict(training_runs(training_dag_id))[owner] == {"submission_id": unowned}


def _settings(db):
    from ramp_airflow.config import DatabaseSettings

    return DatabaseSettings(postgres_conn_id=None, **db.sqlalchemy_config)


def _finish_runs(dag_id: str, state: str, only=None) -> None:
    """End training runs as an operator marking them would (the bench runs none of them)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        for run in session.query(DagRun).filter(DagRun.dag_id == dag_id):
            if only is None or run.run_id in only:
                run.state = state


def test_housekeeping_sets_right_a_cancelled_run_without_the_loop(
    tmp_path, fresh_ramp_db, instance, ec2, airflow_home, monkeypatch
):
    """An event trained by hand: a run marked failed mid-training leaves a claim and an instance; both are ended."""
    import time

    from ramp_airflow.dag_factory import event_dags
    from ramp_airflow.hooks.ec2 import RampEc2Hook
    from ramp_airflow.hooks.ramp_database import RampDatabaseHook
    from testbench.training_runs import instances_of

    db = fresh_ramp_db
    config = write_event_config(tmp_path / "config.yml", db, instance, ec2, orphan_grace_period_secs=1)
    monkeypatch.setenv("RAMP_AIRFLOW_CONFIG_DIR", str(config))
    dags = event_dags(config)
    training, housekeeping = dags[f"ramp_train_{db.event}"], dags[f"ramp_housekeeping_{db.event}"]
    assert dags[f"ramp_train_loop_{db.event}"].test().state == "success"  # it creates runs, that nothing runs
    (submission_id, _, owner), *_ = RampDatabaseHook(database=_settings(db)).in_flight_claims(db.event)
    run_id = owner.run_id
    assert dict(training_runs(training.dag_id))[run_id] == {"submission_id": submission_id}
    earlier = instances_of(ec2, submission_id)
    launched = RampEc2Hook().launch_instance(
        **ec2.launch_args(event_name=db.event, submission_id=submission_id, dag_id=training.dag_id, run_id=run_id)
    )["instance_id"]
    db.query("UPDATE submissions SET state = 'training' WHERE id = %s", (submission_id,))
    _finish_runs(training.dag_id, "failed", only=[run_id])  # an operator marks the run failed
    time.sleep(1.5)  # past the grace period

    assert housekeeping.test().state == "success"
    ((state, error_msg),) = db.query("SELECT state, error_msg FROM submissions WHERE id = %s", (submission_id,))
    assert state == "checking_error" and "cancelled by an operator" in error_msg
    assert instances_of(ec2, submission_id, earlier) == {launched: "terminated"}
