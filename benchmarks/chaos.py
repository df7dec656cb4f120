"""
Chaos run on the one-machine stack: a batch of submissions trained by the loop while faults hit at
random moments, then what an on-call operator checks the morning after.

The stack is the orchestration benchmark's (testbench/airflow_stack.py: real PostgreSQL, Airflow with
LocalExecutor, moto for EC2, sshd for every instance, real ramp-test). Every training sleeps a few
seconds first, so that faults land in every step. One fault at a time, every ``--every`` seconds
on average, each chosen at random among:

  triggerer    kill -9 the triggerer's process group, then start it again
  scheduler    kill -9 the scheduler's (its LocalExecutor workers, and the tasks they run, die with it)
  tasks        kill -9 every task process running at that moment (a worker dying mid-step)
  sshd         drop every SSH connection of the instances and restart sshd
  instance     terminate one running instance of the event (a spot reclaim)

It prints the faults injected, the submissions final (by state), those trained twice (more than one
training run uploaded and started it), the instances leaked (still running once every run ended) and
the submissions stuck (not final by the deadline).

Run it inside ``unshare -n bash -c 'ip link set lo up && .venv/bin/python benchmarks/chaos.py'``.
Options: ``--submissions 10 --every 8 --seed 1``; ``--help`` for all.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.ramp_submissions import FINAL_STATES, add_new_submissions, retire_seeded  # noqa: E402
from ramp_airflow.utils import ec2_tags  # noqa: E402
from ramp_airflow.utils.dag_ids import loop_dag_id, training_dag_id  # noqa: E402
from testbench.airflow_stack import running_airflow  # noqa: E402
from testbench.ec2 import running_ec2  # noqa: E402
from testbench.event_config import write_event_config  # noqa: E402
from testbench.instance import running_instance  # noqa: E402
from testbench.netguard import loopback_only  # noqa: E402
from testbench.postgres import running_postgres  # noqa: E402
from testbench.ramp_database import seed_ramp_database  # noqa: E402

FAULTS = ("triggerer", "scheduler", "tasks", "sshd", "instance")


class Saboteur(threading.Thread):
    """Injects one random fault every ``every`` seconds on average until told to stop."""

    def __init__(self, stack, instance, ec2, event: str, every: float, rng: random.Random):
        super().__init__(daemon=True)
        self.stack, self.instance, self.ec2, self.event = stack, instance, ec2, event
        self.every, self.rng = every, rng
        self.injected: collections.Counter = collections.Counter()
        self.errors: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.rng.expovariate(1 / self.every)):
            fault = self.rng.choice(FAULTS)
            try:
                if getattr(self, f"_{fault}")():
                    self.injected[fault] += 1
            except Exception as err:  # reported at the end; the run goes on
                self.errors.append(f"{fault}: {type(err).__name__}: {err}")

    def _triggerer(self) -> bool:
        self.stack.kill("triggerer")
        self.stack.restart("triggerer")
        return True

    def _scheduler(self) -> bool:
        self.stack.kill("scheduler")
        self.stack.restart("scheduler")
        return True

    def _tasks(self) -> bool:
        # LocalExecutor: scheduler -> worker (the task's supervisor) -> the task process.
        scheduler = psutil.Process(self.stack.pids()["scheduler"])
        tasks = [p for worker in scheduler.children() for p in worker.children()]
        for task in tasks:
            with contextlib.suppress(ProcessLookupError):
                os.kill(task.pid, signal.SIGKILL)
        return bool(tasks)

    def _sshd(self) -> bool:
        self.instance.restart(drop_connections=True)
        return True

    def _instance(self) -> bool:
        running = live_instances(self.ec2, self.event, ("running",))
        if not running:
            return False
        self.ec2.client().terminate_instances(InstanceIds=[self.rng.choice(running)])
        return True


def live_instances(ec2, event: str, states=("pending", "running")) -> list[str]:
    filters = ec2_tags.tag_filters({ec2_tags.EVENT: event}, states)
    pages = ec2.client().get_paginator("describe_instances").paginate(Filters=filters)
    return [i["InstanceId"] for page in pages for r in page["Reservations"] for i in r["Instances"]]


def wait_until_settled(ramp, airflow, dag_id: str | None, ids: list[int], timeout: float) -> tuple[dict, int]:
    """
    Wait (bounded) until every submission is final and, with a ``dag_id``, no run of it is live;
    return the states and the number of live runs.
    """
    deadline = time.monotonic() + timeout
    while True:
        with ramp.cursor() as cur:
            cur.execute("SELECT id, state FROM submissions WHERE id = ANY(%s)", (ids,))
            states = dict(cur.fetchall())
        ramp.commit()
        with airflow.cursor() as cur:
            cur.execute("SELECT count(*) FROM dag_run WHERE dag_id = %s AND state IN ('queued', 'running')", (dag_id,))
            (live,) = cur.fetchone() if dag_id else (0,)
        settled = all(state in FINAL_STATES for state in states.values()) and live == 0
        if settled or time.monotonic() > deadline:
            return states, live
        time.sleep(1)


def trained_twice(airflow, dag_id: str, ids: list[int]) -> list[int]:
    """Submissions that more than one training run uploaded and started."""
    with airflow.cursor() as cur:
        cur.execute(
            "SELECT (r.conf->>'submission_id')::int, count(DISTINCT r.run_id) FROM dag_run r "
            "JOIN task_instance t ON t.dag_id = r.dag_id AND t.run_id = r.run_id "
            "WHERE r.dag_id = %s AND t.task_id LIKE 'attempt\\_%%.upload\\_and\\_train' AND t.state = 'success' "
            "GROUP BY 1",
            (dag_id,),
        )
        return sorted(sid for sid, runs in cur.fetchall() if sid in ids and runs > 1)


def main() -> None:
    parser = argparse.ArgumentParser(description="Faults at random moments while the loop trains a batch")
    parser.add_argument("--submissions", type=int, default=10)
    parser.add_argument("--every", type=float, default=8, help="mean seconds between faults")
    parser.add_argument("--training-sleep", type=float, default=10, help="seconds each training sleeps first")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1200, help="bound on the whole batch")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (Airflow home, task logs)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    try:
        report = run(args, rng, work)
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    for line in report:
        print(line)


def run(args: argparse.Namespace, rng: random.Random, work: Path) -> list[str]:
    """The batch under faults; returns the report's lines."""
    with (
        loopback_only() as violations,
        running_postgres() as cluster,
        running_instance() as instance,
        running_ec2(public_key=instance.public_key) as ec2,
    ):
        ramp_db = seed_ramp_database(cluster, work_dir=str(work))
        with contextlib.closing(ramp_db.connect(autocommit=False)) as conn:
            retire_seeded(conn)
        slow = f"bash -c 'sleep {args.training_sleep:g}; exec ramp-test \"$@\"' ramp-test"
        config = write_event_config(work / "chaos.yml", ramp_db, instance, ec2, training_command=slow)
        with running_airflow(cluster, str(config), extra_env=ec2.env, home=str(work / "airflow")) as stack:
            event = ramp_db.event
            stack.unpause(training_dag_id(event))
            stack.unpause(loop_dag_id(event))
            ramp, airflow = ramp_db.connect(autocommit=False), cluster.connect(stack.database)
            saboteur = Saboteur(stack, instance, ec2, event, args.every, rng)
            ids, started = add_new_submissions(ramp, ramp_db.submissions["random_forest"], args.submissions, "chaos_")
            saboteur.start()
            try:
                # Faults stop once every submission is final; the runs then finish undisturbed.
                wait_until_settled(ramp, airflow, None, ids, args.timeout)
            finally:
                saboteur.done.set()
                saboteur.join(timeout=120)
            states, live_runs = wait_until_settled(ramp, airflow, training_dag_id(event), ids, 300)
            twice = trained_twice(airflow, training_dag_id(event), ids)
            leaked = live_instances(ec2, event)
            took = time.time() - started
            ramp.close()
            airflow.close()
    if violations:
        raise RuntimeError(f"non-loopback connections attempted: {violations}")
    by_state = collections.Counter(states.values())
    final = sum(n for state, n in by_state.items() if state in FINAL_STATES)
    return [
        f"submissions:       {len(ids)} in {took:.0f} s",
        f"faults injected:   {sum(saboteur.injected.values())} {dict(saboteur.injected)}",
        *([f"faults not made:   {saboteur.errors}"] if saboteur.errors else []),
        f"submissions final: {final} {dict(by_state)}",
        f"trained twice:     {len(twice)} {twice or ''}",
        f"instances leaked:  {len(leaked)} {leaked or ''}",
        f"stuck:             {len(ids) - final} (training runs still live: {live_runs})",
    ]


if __name__ == "__main__":
    main()
