"""The DAGs on CeleryExecutor: Redis as broker, two workers on two queues, each with its own home and working directory."""

from __future__ import annotations

import pytest

from testbench._proc import group_members, pid_alive
from testbench.airflow_stack import running_airflow
from testbench.celery_queues import WORKERS, queue_of
from testbench.celery_workers import CeleryWorkers
from testbench.event_config import write_event_config
from testbench.redis_server import running_redis
from testbench.stack_loop import SEEDED_OUTCOMES, in_flight, train_new_submissions
from testbench.training_runs import instances_of


@pytest.fixture
def celery_stack(tmp_path, postgres, fresh_ramp_db, instance, ec2):
    config = write_event_config(tmp_path / "config.yml", fresh_ramp_db, instance, ec2)
    with running_redis() as redis:
        workers = CeleryWorkers(redis.url, str(tmp_path / "workers"))
        home = str(tmp_path / "airflow")
        with running_airflow(postgres, str(config), extra_env=ec2.env, home=home, executor=workers) as stack:
            yield stack, fresh_ramp_db
        # The workers' process groups (their pool processes and task runners) are gone with the stack's.
        assert set(WORKERS) <= set(stack.pids())
        assert not any(group_members(pid) for pid in stack.pids().values())
    assert not pid_alive(redis.pid)


def test_celery_workers_train_every_new_submission(celery_stack, ec2):
    stack, db = celery_stack
    outcomes, runs = train_new_submissions(stack, db, timeout=360)

    # Scored as on LocalExecutor (tests/test_airflow_stack.py), nothing left running or owned.
    assert outcomes == SEEDED_OUTCOMES
    assert in_flight(db) == []
    for submission_id in db.submissions.values():
        states = instances_of(ec2, submission_id)
        assert states and set(states.values()) == {"terminated"}

    assert len(runs) == len(SEEDED_OUTCOMES)
    for run in runs:
        tis = stack.task_instances(f"ramp_train_{db.event}", run["dag_run_id"])
        assert {ti["queue"] for ti in tis} == set(WORKERS.values())
        # The tasks of one run ran on both workers, each task on the worker of its queue.
        ran = {(ti["task_id"], ti["hostname"]) for ti in tis if ti["hostname"]}
        assert {host for _, host in ran} == set(WORKERS), run["dag_run_id"]
        assert all(WORKERS[host] == queue_of(task_id) for task_id, host in ran), ran
