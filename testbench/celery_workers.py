"""CeleryExecutor for the bench's Airflow stack: Redis as broker, PostgreSQL as result backend, two workers.

Handed to :func:`testbench.airflow_stack.running_airflow` as its ``executor``. Each worker is what a
worker host would be: an AIRFLOW_HOME of its own (Celery's pid file, its config folder) and a working
directory of its own. With the rest of the stack it shares, on this machine's disk, what the README
says a worker needs: the DAG folder, the event configs and the key (read-only), and the three folders
the tasks share (the event's submissions, ``local_predictions_folder``, ``local_log_folder``); also
the task log folder, which the api-server reads, so that no worker serves its logs on a port of every
interface (``--skip-serve-logs``). The bench's cluster policy (:mod:`testbench.celery_queues`) sends
every training run's tasks to both workers' queues.
"""

from __future__ import annotations

import dataclasses
import os

from testbench.celery_queues import WORKER_HOST, WORKERS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# On every component's path: Airflow imports its local settings (the policy) and the workers' host name from there.
BENCH_PATH = (REPO, os.path.join(REPO, "testbench", "celery_settings"))


@dataclasses.dataclass
class CeleryWorkers:
    """The executor's settings for every component, and its worker processes.

    :param broker_url: ``[celery] broker_url``, e.g. :attr:`testbench.redis_server.RedisServer.url`.
    :param base_dir: where each worker gets ``<name>/home`` and ``<name>/work``.
    :param workers: worker name -> the queue it serves.
    :param concurrency: each worker's task slots.
    """

    broker_url: str
    base_dir: str
    workers: dict = dataclasses.field(default_factory=lambda: dict(WORKERS))
    concurrency: int = 2

    def settings(self, env: dict) -> dict:
        """What every component gets: the executor, the broker, the metadata database as result backend."""
        return {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
            "PYTHONPATH": os.pathsep.join(BENCH_PATH),
        }

    def home(self, name: str) -> str:
        return os.path.join(self.base_dir, name, "home")

    def start(self, stack) -> None:
        """Start one ``airflow celery worker`` per worker, each in its own home and working directory."""
        for name, queue in self.workers.items():
            work = os.path.join(self.base_dir, name, "work")
            os.makedirs(self.home(name), exist_ok=True)
            os.makedirs(work, exist_ok=True)
            argv = ["celery", "worker", "--queues", queue, "--concurrency", str(self.concurrency)]
            argv += ["--celery-hostname", f"{name}@%h", "--skip-serve-logs"]
            env = {
                "AIRFLOW_HOME": self.home(name),
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "testbench.celery_queues.hostname",
                WORKER_HOST: name,
            }
            stack.start(name, argv, env=env, cwd=work)
