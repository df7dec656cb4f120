"""A real Airflow deployment on this machine: api-server, scheduler, triggerer, dag-processor.

``dag.test()`` runs a DAG inside the test process; this module runs the DAGs the way a user's
Airflow does, each component a subprocess (its own process group and log file) sharing one
environment: a fresh AIRFLOW_HOME, a metadata database of its own in the bench cluster, the
project's DAG folder, a per-run JWT secret, LocalExecutor (or an executor with workers of its own,
``testbench.celery_workers``), intervals short enough for a demo.
Everything listens on 127.0.0.1 only: the api-server is given its host, and the scheduler's and
triggerer's log servers (which bind every interface) are not started; the api-server reads task
logs from the shared local log folder instead.

The helpers talk to the REST API with a token of the simple auth manager's ``admin`` user.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from ramp_airflow.local_airflow import environment_variable, fitted_settings
from testbench._proc import free_port, group_members, tail, wait_until

DAGS_FOLDER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ramp_airflow", "dags")
AIRFLOW = os.path.join(os.path.dirname(sys.executable), "airflow")
COMPONENTS = {
    "api-server": ["api-server", "--host", "127.0.0.1", "--port", "{port}", "--workers", "1"],
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
}
USER = "admin"
# Loopback requests never go through a proxy configured in the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def stack_env(
    home: str, sql_alchemy_conn: str, config_dir: str, port: int, parallelism: int = 4, extra_env: dict | None = None
) -> dict:
    """The environment every component (and the ``airflow`` CLI) of one stack shares.

    :param home: the AIRFLOW_HOME (logs, password file).
    :param sql_alchemy_conn: the metadata database URL.
    :param config_dir: RAMP_AIRFLOW_CONFIG_DIR, a folder of event configs or one file.
    :param port: the api-server's port on 127.0.0.1.
    :param parallelism: LocalExecutor's number of task slots.
    :param extra_env: added last (e.g. moto's ``AWS_*`` variables).
    """
    # Inherited Airflow settings (e.g. the pytest session's) must not leak into the stack.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    url = f"http://127.0.0.1:{port}"
    env.update(
        {
            # What ramp_aws_train_loop gives the Airflow it starts, where the bench sets nothing else.
            **{
                environment_variable(*setting): value
                for setting, value in fitted_settings(os.cpu_count() or 1, str(port)).items()
            },
            "AIRFLOW_HOME": home,
            "RAMP_AIRFLOW_CONFIG_DIR": str(config_dir),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_alchemy_conn,
            "AIRFLOW__CORE__DAGS_FOLDER": DAGS_FOLDER,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": os.path.join(home, "passwords.json"),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": url,
            # One secret per run, shared: tokens the api-server signs must verify in every process.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": os.path.join(home, "logs"),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "2",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
            # Airflow 3.3.2 fails a deferred task whose trigger fires before the scheduler has seen the
            # deferral's exit ("state changed externally", apache/airflow#72716); on loopback triggers
            # fire within a second. A supervisor reports its task's exit at its next heartbeat, so a
            # short interval narrows that window; the DAGs' own retries absorb what is left of it.
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            # Calls between the components (and to moto) must never go through a configured proxy.
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "SCARF_ANALYTICS": "false",
            "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
        }
    )
    env.update(extra_env or {})
    return env


@dataclasses.dataclass
class AirflowStack:
    """A running stack: where it is, its processes, and REST helpers."""

    home: str
    url: str
    env: dict
    database: str
    procs: dict = dataclasses.field(default_factory=dict)
    _token: str | None = None

    @property
    def log_dir(self) -> str:
        """Folder of the components' logs (``<component>.log``) and the task logs."""
        return os.path.join(self.home, "logs")

    @property
    def password_file(self) -> str:
        """The simple auth manager's generated passwords (JSON ``{"admin": "..."}``)."""
        return self.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]

    def password(self) -> str:
        with open(self.password_file) as f:
            return json.load(f)[USER]

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    def request(self, method: str, path: str, body=None, auth: bool = True, timeout: float = 60):
        """One JSON request to the api-server; returns the decoded answer (``None`` if empty).

        The bound is generous: on a loaded machine the api-server may take tens of seconds to answer.
        """
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with _DIRECT.open(req, timeout=timeout) as resp:
            text = resp.read().decode()
        return json.loads(text) if text else None

    def token(self) -> str:
        if self._token is None:
            body = {"username": USER, "password": self.password()}
            self._token = self.request("POST", "/auth/token", body, auth=False)["access_token"]
        return self._token

    def health(self) -> dict:
        """``/api/v2/monitor/health``: metadatabase, scheduler, triggerer, dag_processor."""
        return self.request("GET", "/api/v2/monitor/health", auth=False, timeout=5)

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> dict:
        """Wait until the dag-processor has serialized ``dag_id``; returns the DAG's record."""

        def parsed():
            self.check_alive()
            try:
                return self.request("GET", f"/api/v2/dags/{_q(dag_id)}")
            except urllib.error.HTTPError as err:
                if err.code == 404:
                    return None
                raise

        return wait_until(parsed, timeout, f"DAG {dag_id} to be parsed", 1.0)

    def unpause(self, dag_id: str, timeout: float = 120) -> dict:
        """Unpause ``dag_id`` (waiting first, bounded, until it is parsed)."""
        self.wait_for_dag(dag_id, timeout)
        return self.request("PATCH", f"/api/v2/dags/{_q(dag_id)}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None, run_id: str | None = None) -> dict:
        """Create a run of ``dag_id`` with ``conf``; returns the new DAG run's record."""
        body = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self.request("POST", f"/api/v2/dags/{_q(dag_id)}/dagRuns", body)

    def dag_runs(self, dag_id: str) -> list[dict]:
        """The DAG's runs (``dag_run_id``, ``state``, ``conf``, ...), oldest first."""
        answer = self.request("GET", f"/api/v2/dags/{_q(dag_id)}/dagRuns?order_by=run_after&limit=1000")
        return answer["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """One DAG run's task instances as the REST API gives them (``task_id``, ``state``, ``hostname``, ``queue``...)."""
        path = f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances?limit=1000"
        return self.request("GET", path)["task_instances"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """Task id (``task[map_index]`` for mapped ones) -> state, for one DAG run."""
        return {
            ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""): ti["state"]
            for ti in self.task_instances(dag_id, run_id)
        }

    def check_alive(self) -> None:
        """Raise, with the tail of its log, if a component has exited."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"airflow {name} exited with {proc.returncode}; its log "
                    f"{self.log_path(name)} ends with:\n{tail(self.log_path(name))}"
                )

    def log_path(self, name: str) -> str:
        return os.path.join(self.log_dir, f"{name}.log")

    def start(self, name: str, argv: list[str] | None = None, env: dict | None = None, cwd: str | None = None) -> None:
        """Start ``airflow <argv>`` (by default component ``name``'s) in a process group of its own.

        :param env: over the stack's environment (e.g. a worker's own AIRFLOW_HOME).
        :param cwd: its working directory; the stack's home by default.
        """
        port = urllib.parse.urlsplit(self.url).port
        argv = [AIRFLOW] + [a.format(port=port) for a in argv or COMPONENTS[name]]
        with open(self.log_path(name), "ab") as log:
            self.procs[name] = subprocess.Popen(
                argv,
                env={**self.env, **(env or {})},
                cwd=cwd or self.home,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def kill(self, name: str) -> None:
        """SIGKILL one component's process group (its task runners too), as a crash would; wait until gone."""
        proc = self.procs[name]
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        wait_until(lambda: not group_members(proc.pid), 10, f"airflow {name}'s process group to be gone", 0.2)

    def restart(self, name: str) -> None:
        """Start a killed component again, on the stack's API port."""
        self.start(name)

    def healthy(self) -> bool:
        self.check_alive()
        try:
            health = self.health()
        except (OSError, ValueError):
            return False
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return all((health.get(p) or {}).get("status") == "healthy" for p in parts)

    def stop(self, timeout: float = 20) -> None:
        """TERM every component's process group, wait (bounded), then KILL what is left."""
        for proc in self.procs.values():
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            # Also the group's orphans (task runners, ssh) after their leader exited.
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        wait_until(
            lambda: not any(group_members(p.pid) for p in self.procs.values()),
            10,
            "airflow process groups to be gone",
            0.2,
        )


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def migrate(env: dict, timeout: float = 600) -> None:
    """``airflow db migrate`` in ``env``; fails with the end of its output."""
    proc = subprocess.run(
        [AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=timeout, cwd=env["AIRFLOW_HOME"]
    )
    if proc.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{(proc.stdout + proc.stderr)[-4000:]}")


@contextlib.contextmanager
def running_airflow(
    cluster,
    config_dir: str,
    extra_env: dict | None = None,
    parallelism: int = 4,
    home: str | None = None,
    timeout: float = 180,
    executor=None,
    port: int | None = None,
):
    """Start the four components, wait until healthy, yield an :class:`AirflowStack`, always stop.

    :param cluster: the bench :class:`testbench.postgres.PostgresCluster`; a new database
        ``airflow_<hex>`` is created in it (and dropped afterwards) for the metadata.
    :param config_dir: RAMP_AIRFLOW_CONFIG_DIR (a folder of event configs, or one file).
    :param extra_env: more environment for every component, e.g. ``ec2.env`` (moto).
    :param parallelism: LocalExecutor's task slots.
    :param home: the AIRFLOW_HOME to use (kept); by default a temp dir, removed afterwards.
    :param timeout: bound on ``db migrate`` and on the wait for health, each.
    :param executor: LocalExecutor when None; else one with processes of its own
        (:class:`testbench.celery_workers.CeleryWorkers`): its ``settings(env)`` join every
        component's environment, its ``start(stack)`` starts them after the four components.
    :param port: the api-server's port on 127.0.0.1; by default a free one.
    """
    own_home = home is None
    home = home or tempfile.mkdtemp(prefix="bench-airflow-stack-")
    os.makedirs(os.path.join(home, "logs"), exist_ok=True)
    database = cluster.create_database(f"airflow_{secrets.token_hex(4)}")
    port = port or free_port()
    stack = AirflowStack(
        home=home,
        url=f"http://127.0.0.1:{port}",
        database=database,
        env=stack_env(home, cluster.url(database, "postgresql+psycopg2"), config_dir, port, parallelism, extra_env),
    )
    if executor is not None:
        stack.env.update(executor.settings(stack.env))
    try:
        migrate(stack.env, timeout)
        for name in COMPONENTS:
            stack.start(name)
        if executor is not None:
            executor.start(stack)
        wait_until(stack.healthy, timeout, "the Airflow components to report healthy", 1.0)
        yield stack
    finally:
        stack.stop()
        cluster.drop_database(database)
        if own_home:
            shutil.rmtree(home, ignore_errors=True)
