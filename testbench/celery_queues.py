"""Which Celery queue each task of the bench's Celery stack goes to, and which worker serves it.

Pure and import-light: Airflow imports it, through the bench's ``airflow_local_settings.py``
(``testbench/celery_settings/``), while it loads its own settings. The tasks that reach an instance
over SSH (rsync and the key) go to a queue of their own, served by the second worker; every other
task goes to the default queue, served by the first. So every training run has tasks on both.
"""

from __future__ import annotations

import os

DEFAULT_QUEUE = "default"
INSTANCE_QUEUE = "instances"
INSTANCE_TASKS = frozenset({"upload_and_train", "wait_for_training", "fetch_results"})
# Worker name -> the queue it serves; each worker reports its name as its tasks' host.
WORKERS = {"worker-a": DEFAULT_QUEUE, "worker-b": INSTANCE_QUEUE}
WORKER_HOST = "RAMP_BENCH_WORKER_HOST"


def queue_of(task_id: str) -> str:
    """The queue of a task (``attempt_1.upload_and_train``: its group's prefix does not count)."""
    return INSTANCE_QUEUE if task_id.rsplit(".", 1)[-1] in INSTANCE_TASKS else DEFAULT_QUEUE


def task_policy(task) -> None:
    """Airflow's cluster policy, applied to every task as its DAG is parsed: set the task's queue."""
    task.queue = queue_of(task.task_id)


def hostname() -> str:
    """``[core] hostname_callable`` of the bench's workers: both run on one machine, each has its name."""
    return os.environ[WORKER_HOST]
