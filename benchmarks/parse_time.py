"""
Parse time of the DAG file with 1, 20 and 100 event configs, measured the way Airflow parses.

Airflow 3's dag processor parses a file in a fresh child process that has Airflow (and the
``airflow.*`` modules the DAG file names) already imported, builds a ``DagBag`` on the file and
serializes its DAGs. So each measurement here runs in a fresh interpreter that:

1. imports ``airflow`` (timed: "import airflow"),
2. imports the parsing machinery (DagBag, DAG serialization; timed, pre-imported in Airflow),
3. builds ``BundleDagBag(dags/ramp_training.py)``, as the processor does, with ``RAMP_AIRFLOW_CONFIG_DIR``
   set ("parse": our part, i.e. importing ramp_airflow and what it imports, loading configs, building DAGs),
4. serializes every DAG as the processor does ("serialize").

Nothing may connect anywhere during a parse: the child refuses every INET socket connect (even
to loopback) and the parent checks that the metadata database (a SQLite file) was never created.
Run the script inside ``unshare -n bash -c 'ip link set lo up && ...'`` as well.

Usage: ``python benchmarks/parse_time.py [--configs 1 20 100] [--repeats 3] [--importtime 20]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from import_breakdown import importtime_breakdown

REPO = Path(__file__).resolve().parent.parent
DAG_FILE = REPO / "ramp_airflow" / "dags" / "ramp_training.py"
PYTHON = sys.executable
MODES = ("airflow", "split")
# Each config makes a training, a loop and a housekeeping DAG.
DAGS_PER_CONFIG = 3


# --------------------------------------------------------------------------------------------
# child: one measurement in a fresh interpreter
# --------------------------------------------------------------------------------------------
def _refuse_connections() -> list[str]:
    """Make every INET socket connect fail and be recorded: a parse must contact nothing."""
    import socket

    attempts: list[str] = []
    original = socket.socket.connect, socket.socket.connect_ex

    def refuse(self, address, _original=None):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(repr(address))
            raise OSError(f"parse_time: connection to {address!r} refused (a parse must not connect)")
        return original[0](self, address)

    def refuse_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(repr(address))
            return 111
        return original[1](self, address)

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse_ex
    return attempts


def child(mode: str) -> None:
    import importlib

    attempts = _refuse_connections()
    t0 = time.perf_counter()
    import airflow  # noqa: F401

    t1 = time.perf_counter()
    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.serialization.serialized_objects import DagSerialization

    t2 = time.perf_counter()
    if mode == "split":
        importlib.import_module("ramp_airflow.dag_factory")
    t3 = time.perf_counter()
    sys.stderr.write("PARSE-TIME-MARK\n")
    sys.stderr.flush()
    bag = BundleDagBag(
        dag_folder=str(DAG_FILE), bundle_path=DAG_FILE.parent, bundle_name="dags-folder", load_op_links=False
    )
    t4 = time.perf_counter()
    for dag in bag.dags.values():
        DagSerialization.to_dict(dag)
    t5 = time.perf_counter()
    out = {
        "import_airflow": t1 - t0,
        "import_machinery": t2 - t1,
        "pre_imported": t3 - t2,
        "parse": t4 - t3,
        "serialize": t5 - t4,
        "dags": len(bag.dag_ids),
        "import_errors": len(bag.import_errors),
        "connects": attempts,
        "max_rss_mib": _max_rss_mib(),
    }
    print("PARSE-TIME-RESULT " + json.dumps(out))


def _max_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------------------------
# parent: generate configs, run children, print tables
# --------------------------------------------------------------------------------------------
def _config(event: str, key_path: str, work: Path) -> dict:
    """A valid event config (the seed's format); the services it names are never contacted."""
    return {
        "sqlalchemy": {
            "drivername": "postgresql",
            "username": "ramp",
            "password": "never-used",
            "host": "127.0.0.1",
            "port": 1,
            "database": "ramp",
        },
        "ramp": {"event_name": event},
        "aws": {
            "ami_image_id": "ami-0123456789abcdef0",
            "ami_user_name": "ubuntu",
            "instance_type": "t2.micro",
            "key_name": "key",
            "key_path": key_path,
            "security_group": "sg",
            "remote_ramp_kit_folder": "~/ramp-kits/iris",
            "local_predictions_folder": str(work / "predictions" / event),
            "local_log_folder": str(work / "logs" / event),
            "memory_profiling": True,
            "region_name": "us-east-1",
            "hooks": {"after_sucessful_training": "true"},
        },
    }


def event_name(i: int) -> str:
    return f"bench_event_{i:03d}"


def write_configs(folder: Path, count: int, key_path: str) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        event = event_name(i)
        (folder / f"{event}.yml").write_text(yaml.safe_dump(_config(event, key_path, folder.parent)))


def child_env(work: Path, config_dir: Path) -> dict:
    home = work / "airflow-home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AWS_", "RAMP_AIRFLOW"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(DAG_FILE.parent),
        # Never created unless something touches the metadata database: checked after each run.
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/never-touched.db",
        RAMP_AIRFLOW_CONFIG_DIR=str(config_dir),
        SCARF_ANALYTICS="false",
        AIRFLOW__USAGE_DATA_COLLECTION__ENABLED="False",
        PYTHONDONTWRITEBYTECODE="",
    )
    return env


def run_child(env: dict, mode: str, importtime: bool = False) -> tuple[dict, str]:
    argv = [PYTHON] + (["-X", "importtime"] if importtime else []) + [__file__, "--child", mode]
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, cwd=env["AIRFLOW_HOME"])
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"parse child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("PARSE-TIME-RESULT "))
    result = json.loads(line.split(" ", 1)[1])
    result["process_wall"] = wall
    if result["connects"]:
        raise RuntimeError(f"the parse tried to connect: {result['connects']}")
    if Path(env["AIRFLOW_HOME"], "never-touched.db").exists():
        raise RuntimeError("the parse touched the metadata database")
    return result, proc.stderr


def median(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", type=int, nargs="+", default=[1, 20, 100])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--importtime", type=int, default=20, help="config count for the import breakdown (0: none)")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    # Here, not at the top: a child measures what the parse imports, ramp_airflow included.
    sys.path.insert(0, str(REPO))
    from ramp_airflow.utils.dag_ids import training_dag_id

    work = Path(tempfile.mkdtemp(prefix="bench-parse-"))
    try:
        key = work / "key"
        key.write_text("not a key: only its mode is checked at parse time\n")
        key.chmod(0o600)
        print(f"DAG file: {DAG_FILE}; {args.repeats} fresh processes per cell; medians in seconds")
        print()
        header = (
            f"{'configs':>7} {'DAGs':>5} {'import airflow':>14} {'parse (ours)':>12} {'serialize':>9} "
            f"{'parse+ser.':>10} {'RSS MiB':>7} | {'ours: imports':>13} {'ours: build':>11} {'task start':>10}"
        )
        print(header)
        print("-" * len(header))
        env_for = {}
        for count in args.configs:
            config_dir = work / f"configs-{count}"
            write_configs(config_dir, count, str(key))
            env = env_for[count] = child_env(work, config_dir)
            runs = {mode: [run_child(env, mode)[0] for _ in range(args.repeats)] for mode in MODES}
            for mode, results in runs.items():
                bad = [r for r in results if r["dags"] != DAGS_PER_CONFIG * count or r["import_errors"]]
                assert not bad, f"{mode}: {bad[0]}"
            # As a task of the last event's training DAG starts: Airflow's parsing context names its DAG.
            task_env = {**env, "_AIRFLOW_PARSING_CONTEXT_DAG_ID": training_dag_id(event_name(count - 1))}
            task = [run_child(task_env, "airflow")[0] for _ in range(args.repeats)]
            assert all(r["dags"] == 1 for r in task), task[0]
            full = runs["airflow"]
            both = statistics.median(r["parse"] + r["serialize"] for r in full)
            print(
                f"{count:>7} {full[0]['dags']:>5} {median(full, 'import_airflow'):>14.3f} "
                f"{median(full, 'parse'):>12.3f} {median(full, 'serialize'):>9.3f} {both:>10.3f} "
                f"{median(full, 'max_rss_mib'):>7.0f} | {median(runs['split'], 'pre_imported'):>13.3f} "
                f"{median(runs['split'], 'parse'):>11.3f} {median(task, 'parse'):>10.3f}"
            )
        print()
        print("parse (ours): BundleDagBag on the DAG file in a process that has Airflow's parsing machinery")
        print("  imported, as the dag processor's forked child has; = importing ramp_airflow and what it")
        print("  imports + loading the configs + building the DAGs. serialize: DagSerialization.to_dict of")
        print("  every DAG, which the processor does next. parse+ser.: the file's processing time.")
        print("ours: imports = `import ramp_airflow.dag_factory` alone; ours: build = the parse after it.")
        print("task start: parse (ours) as a task of the last event's training DAG starts, with Airflow's parsing")
        print("  context naming that DAG: the configs are read and that one DAG is built.")
        if args.importtime:
            count = args.importtime
            if count not in env_for:
                config_dir = work / f"configs-{count}"
                write_configs(config_dir, count, str(key))
                env_for[count] = child_env(work, config_dir)
            _, stderr = run_child(env_for[count], "airflow", importtime=True)
            print()
            print(f"What ramp_airflow's imports cost during the parse ({count} configs, python -X importtime,")
            print("cumulative seconds of the modules our modules import directly, not yet imported by Airflow):")
            for name, secs in importtime_breakdown(stderr, 12):
                print(f"  {secs:7.3f}  {name}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
