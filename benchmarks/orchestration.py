"""
Orchestration benchmark on the one-machine stack: how fast, how cheap, how far it scales.

Real PostgreSQL (RAMP database seeded by ramp-database, Airflow metadata), a real Airflow
(api-server, scheduler with LocalExecutor, triggerer, dag-processor: testbench/airflow_stack.py),
moto standing in for EC2 (loopback addresses), sshd standing in for every instance, real
``ramp-test`` on the bench kit (about a second of training). The event's loop DAG is unpaused;
for each batch, N copies of ``random_forest`` become ``new`` at one instant, and the script waits
until each is in a final state and its training run has ended. Then, per submission, from
the RAMP database, Airflow's task instances, the remote job record and moto:

  detect     new -> claimed (submissions.sent_to_training_timestamp)
  dispatch   claimed -> launch_instance starts
  ready      launch_instance starts -> wait_for_instance ends (the instance is ready, its address pushed)
  upload     wait_for_instance ends -> the training job starts on the instance (its started_at)
  train      the training job (ramp-test under mprof) runs: not overhead
  end->det   training job ends (its exit_code file) -> fetch_results ends (results fetched)
  fetch+rec  fetch_results ends -> record_results ends (submission scored)
  term       fetch_results ends -> terminate_instance ends (termination requested)
  overhead   new -> scored, minus train
  idle       billed but not training: EC2 launch -> training start, training end -> terminate

and, for three tasks that do not defer, where a task start's seconds go ("hops"): from what it
waited for (the run's creation, wait_for_instance's end, the later end of fetch_results and
mark_training) to queued (the scheduler), queued -> running (the executor starting the task
process), running -> ended (the task process: DAG file parse, API calls, the work);

and per batch: makespan (new -> last run ended), throughput, the peak of task instances running
(worker slots held) while trainings run and of sensors among them, the orchestrator's CPU
seconds and peak RSS (all processes of the Airflow components) per submission.

Run it inside ``unshare -n bash -c 'ip link set lo up && .venv/bin/python benchmarks/orchestration.py'``.
Options: ``--sizes 1 10 50``, ``--repeats``, ``--boot-delay 20 --boot-size 10``,
``--variants defaults tuned``, ``--parallelism``; ``--help`` for all.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.orchestration_report import (  # noqa: E402
    median_row,
    print_batch_table,
    print_hop_table,
    print_legend,
    print_phase_table,
)
from benchmarks.ramp_submissions import FINAL_STATES, add_new_submissions, remove_folders, retire_seeded  # noqa: E402
from benchmarks.stack_probe import ProcessTrees, Sampler  # noqa: E402
from ramp_airflow.utils import claim_sql, ec2_tags, layout  # noqa: E402
from ramp_airflow.utils.dag_ids import loop_dag_id, training_dag_id  # noqa: E402
from testbench.airflow_stack import running_airflow  # noqa: E402
from testbench.ec2 import running_ec2  # noqa: E402
from testbench.event_config import write_event_config  # noqa: E402
from testbench.instance import running_instance  # noqa: E402
from testbench.netguard import loopback_only  # noqa: E402
from testbench.postgres import running_postgres  # noqa: E402
from testbench.ramp_database import seed_ramp_database  # noqa: E402

# Config values per variant (the three intervals; everything else as testbench/event_config.py).
VARIANTS = {
    # ramp-airflow's defaults: the config leaves the intervals out.
    "defaults": {
        "check_status_interval_secs": None,
        "check_finished_training_interval_secs": None,
        "train_loop_interval_secs": None,
    },
    # The seed README's example config (and the defaults before issue 8).
    "seed": {
        "check_status_interval_secs": 60,
        "check_finished_training_interval_secs": 60,
        "train_loop_interval_secs": 60,
    },
    "tuned": {
        "check_status_interval_secs": 5,
        "check_finished_training_interval_secs": 2,
        "train_loop_interval_secs": 2,
    },
    "fast": {
        "check_status_interval_secs": 1,
        "check_finished_training_interval_secs": 1,
        "train_loop_interval_secs": 1,
    },
}
TASK_PREFIX = "attempt_1."
_BATCHES = itertools.count(1)  # names the copies: (event team, name) is unique in RAMP


def utc_epoch(value: datetime.datetime | None) -> float | None:
    """Seconds since the epoch of a timestamptz, or of a naive UTC timestamp (RAMP's)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value.timestamp()


class Bench:
    """The services of one benchmark run and what a batch needs from them."""

    def __init__(self, cluster, ramp_db, instance, ec2, stack, event_name: str):
        self.cluster, self.ramp_db, self.instance, self.ec2, self.stack = cluster, ramp_db, instance, ec2, stack
        self.training_dag = training_dag_id(event_name)
        self.ramp = ramp_db.connect(autocommit=False)
        self.airflow = cluster.connect(stack.database)
        self.template = ramp_db.submissions["random_forest"]
        self.trees = ProcessTrees(list(stack.pids().values()))

    def close(self) -> None:
        self.ramp.close()
        self.airflow.close()

    def idle_cost(self, seconds: float) -> tuple[float, int]:
        """CPU seconds per minute and RSS of the idle stack (the loop DAG keeps running)."""
        cpu0, start = self.trees.cpu_seconds(), time.monotonic()
        rss = []
        while time.monotonic() - start < seconds:
            rss.append(self.trees.rss_bytes())
            time.sleep(0.5)
        return (self.trees.cpu_seconds() - cpu0) / (time.monotonic() - start) * 60, int(statistics.median(rss))

    def run_batch(self, count: int, timeout: float) -> dict:
        idle_rss = self.trees.rss_bytes()
        sampler = Sampler(self.trees, self.cluster.connect(self.stack.database), self.ramp_db.connect())
        cpu0 = self.trees.cpu_seconds()
        ids, t_new = add_new_submissions(self.ramp, self.template, count, prefix=f"bench{next(_BATCHES)}_")
        sampler.start()
        try:
            ended = self._wait_until_done(ids, timeout)
        finally:
            cpu = self.trees.cpu_seconds() - cpu0
            sampler.stop()
            sampler.airflow_conn.close()
            sampler.ramp_conn.close()
        rows = [self._submission(sid, t_new) for sid in ids]
        remove_folders(self.ramp, self.template, ids)
        makespan = max(ended) - t_new
        return {
            "n": count,
            "rows": rows,
            "states": {state: sum(r["state"] == state for r in rows) for state in {r["state"] for r in rows}},
            "makespan": makespan,
            "throughput_per_min": count / makespan * 60,
            "peak_running": sampler.peak_running_while_training,
            "peak_running_any": sampler.peak_running,
            "peak_sensors_running": sampler.peak_sensors_running,
            "sensor_slot_secs": sampler.sensor_slot_secs,
            "running_slot_secs": sampler.running_slot_secs,
            "peak_deferred": sampler.peak_deferred,
            "cpu_per_sub": cpu / count,
            "rss_peak_mib": sampler.peak_rss / 2**20,
            "rss_per_sub_mib": max(0, sampler.peak_rss - idle_rss) / 2**20 / count,
            "task_retries": sum(r["task_retries"] for r in rows),
        }

    def _wait_until_done(self, ids: list[int], timeout: float) -> list[float]:
        """Wait (bounded) until every submission is final and its training run has ended."""
        deadline = time.monotonic() + timeout
        while True:
            self.stack.check_alive()
            with self.ramp.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM submissions WHERE id = ANY(%s) AND state = ANY(%s)", (ids, list(FINAL_STATES))
                )
                final = cur.fetchone()[0]
            self.ramp.commit()
            # Every final submission was claimed, so its claim names its run.
            run_ids = [self._run_id(sid) for sid in ids] if final == len(ids) else []
            with self.airflow.cursor() as cur:
                cur.execute(
                    "SELECT end_date FROM dag_run WHERE dag_id = %s AND run_id = ANY(%s) "
                    "AND state IN ('success', 'failed')",
                    (self.training_dag, run_ids),
                )
                ended = [utc_epoch(row[0]) for row in cur.fetchall()]
            if final == len(ids) and len(ended) == len(ids):
                return ended
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"after {timeout:.0f} s: {final}/{len(ids)} submissions final, "
                    f"{len(ended)}/{len(ids)} training runs ended"
                )
            time.sleep(0.5)

    def _tasks(self, run_id: str) -> dict[str, tuple]:
        """Task id -> (start, end, state, try_number, queued) in one training run; "run" -> its creation."""
        with self.airflow.cursor() as cur:
            cur.execute(
                "SELECT task_id, start_date, end_date, state, try_number, queued_dttm FROM task_instance "
                "WHERE dag_id = %s AND run_id = %s AND map_index = -1",
                (self.training_dag, run_id),
            )
            tasks = {
                task: (utc_epoch(start), utc_epoch(end), state, tries, utc_epoch(queued))
                for task, start, end, state, tries, queued in cur.fetchall()
            }
            cur.execute("SELECT queued_at FROM dag_run WHERE dag_id = %s AND run_id = %s", (self.training_dag, run_id))
            tasks["run"] = (None, utc_epoch(cur.fetchone()[0]), None, None, None)
            return tasks

    def _remote_job(self, sid: int) -> tuple[float, float] | None:
        """The training job's start (its started_at record) and end (its exit_code file's mtime)."""
        job = Path(
            self.instance.home, layout.remote_submission_dir(self.instance.remote_kit_folder, sid), layout.JOB_DIR
        )
        try:
            started = float((job / layout.JOB_STARTED_AT).read_text().strip())
            return started, (job / layout.JOB_EXIT_CODE).stat().st_mtime
        except OSError:
            return None

    def _launch_time(self, sid: int) -> float:
        """When EC2 (moto) launched the submission's first instance."""
        times = []
        for reservation in self.ec2.backend().reservations.values():
            for inst in reservation.instances:
                tags = {t["key"]: t["value"] for t in inst.get_tags()}
                if tags.get(ec2_tags.SUBMISSION_ID) == str(sid):
                    times.append(utc_epoch(inst.launch_time))
        return min(times)

    def _run_id(self, sid: int) -> str:
        """The training run that owns the submission's claim (the loop names it after the claim)."""
        with self.ramp.cursor() as cur:
            owner = claim_sql.owner_of(cur, sid)
        self.ramp.commit()
        return owner.run_id

    def _submission(self, sid: int, t_new: float) -> dict:
        with self.ramp.cursor() as cur:
            cur.execute("SELECT state, sent_to_training_timestamp, error_msg FROM submissions WHERE id = %s", (sid,))
            state, claimed, error = cur.fetchone()
        self.ramp.commit()
        tasks = self._tasks(self._run_id(sid))
        row = {
            "id": sid,
            "state": state,
            "error": (error or "")[-300:],
            "retried": tasks.get("attempt_2.launch_instance", (None,) * 3)[2] not in (None, "skipped"),
            "task_retries": sum(max(0, (times[3] or 1) - 1) for times in tasks.values()),
        }
        t = {name.removeprefix(TASK_PREFIX): times for name, times in tasks.items()}
        job = self._remote_job(sid)
        needed = ("launch_instance", "wait_for_instance", "fetch_results", "record_results", "terminate_instance")
        if state != "scored" or row["retried"] or job is None or any(None in t.get(n, (None,))[:2] for n in needed):
            return row  # reported by state, left out of the phase medians
        start, end = job
        claimed = utc_epoch(claimed)
        scored, terminated, watched = t["record_results"][1], t["terminate_instance"][1], t["fetch_results"][1]
        ready = t["wait_for_instance"][1]
        row.update(
            {
                "detect": claimed - t_new,
                "dispatch": t["launch_instance"][0] - claimed,
                "ready": ready - t["launch_instance"][0],
                "upload": start - ready,
                "train": end - start,
                "end->det": watched - end,
                "fetch+rec": scored - watched,
                "term": terminated - watched,
                "overhead": (scored - t_new) - (end - start),
                "idle": (start - self._launch_time(sid)) + (terminated - end),
            }
        )
        waited_for = {
            "claim_submission": t["run"][1],
            "mark_training": ready,
            "record_results": max(watched, t["mark_training"][1]),
        }
        for task, upstream_end in waited_for.items():
            started, ended, _, tries, queued = t[task]
            if tries == 1:  # a retry's queued time is its last try's
                row[f"{task} sched"] = queued - upstream_end
                row[f"{task} start"] = started - queued
                row[f"{task} run"] = ended - started
        return row


def run_variant(name: str, args, cluster, ramp_db, instance, ec2, work: Path) -> tuple[list, list, tuple]:
    config_dir = work / f"configs-{name}"
    config_dir.mkdir()
    cap = max([*args.sizes, args.boot_size])
    write_event_config(config_dir / "bench.yml", ramp_db, instance, ec2, max_concurrent_instances=cap, **VARIANTS[name])
    phase_results, batch_results = [], []
    home = work / f"airflow-{name}"
    # The DAGs carry their own retries (dag_factory/bounds.py), which also absorb Airflow 3.3's race on
    # resumed deferred tasks (apache/airflow#72716): nothing to set here.
    airflow_env = dict(setting.split("=", 1) for setting in args.airflow_env)
    with running_airflow(
        cluster, str(config_dir), extra_env={**ec2.env, **airflow_env}, parallelism=args.parallelism, home=str(home)
    ) as stack:
        event = ramp_db.event
        stack.unpause(training_dag_id(event))
        stack.unpause(loop_dag_id(event))
        bench = Bench(cluster, ramp_db, instance, ec2, stack, event)
        try:
            idle = bench.idle_cost(args.idle_secs)
            scenarios = [(f"N={n}", n, 0.0, args.repeats) for n in args.sizes]
            if args.boot_size:
                scenarios.append(
                    (
                        f"N={args.boot_size}, {args.boot_delay:.0f}s boots",
                        args.boot_size,
                        args.boot_delay,
                        args.boot_repeats,
                    )
                )
            for label, n, delay, repeats in scenarios:
                ec2.set_status_delay(delay)
                batches = []
                for _ in range(repeats):
                    batch = bench.run_batch(n, timeout=args.timeout + 20 * n)
                    batches.append(batch)
                    print(
                        f"  [{name}] {label}: makespan {batch['makespan']:.1f} s, states {batch['states']}", flush=True
                    )
                    for row in batch["rows"]:
                        if "detect" not in row:
                            print(
                                f"    submission {row['id']} left out of the phases: {row['state']}, "
                                f"retried={row['retried']} {row['error']!r}",
                                flush=True,
                            )
                ec2.set_status_delay(0)
                label = f"{name} {label}"
                phase_results.append((label, median_row([r for b in batches for r in b["rows"]])))
                batch_results.append((label, batches))
        finally:
            ec2.set_status_delay(0)
            bench.close()
    # Printed as soon as they are known, so that a later failure loses nothing.
    print_phase_table(f"Phases ({name})", phase_results)
    print_batch_table(f"Batches ({name})", batch_results)
    print_hop_table(f"Hops ({name})", batch_results)
    print(f"idle stack ({name}): {idle[0]:.1f} CPU s per minute, RSS {idle[1] / 2**20:.0f} MiB", flush=True)
    return phase_results, batch_results, idle


def main() -> None:
    parser = argparse.ArgumentParser(description="Orchestration benchmark on the one-machine stack")
    parser.add_argument("--sizes", type=int, nargs="*", default=[1, 10, 50], help="submissions arriving at once")
    parser.add_argument("--repeats", type=int, default=1, help="batches per size")
    parser.add_argument("--boot-size", type=int, default=10, help="batch size with slow boots (0: none)")
    parser.add_argument("--boot-delay", type=float, default=20, help="seconds status checks stay initializing")
    parser.add_argument("--boot-repeats", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=["defaults", "seed"], choices=list(VARIANTS))
    parser.add_argument(
        "--seed-sizes",
        type=int,
        nargs="*",
        default=[1],
        help="sizes run for the 'seed' variant (its 60 s polls make every batch slow)",
    )
    parser.add_argument("--parallelism", type=int, default=8, help="LocalExecutor task slots")
    parser.add_argument("--idle-secs", type=float, default=20, help="how long to measure the idle stack")
    parser.add_argument(
        "--airflow-env",
        nargs="*",
        default=[],
        metavar="AIRFLOW__SECTION__KEY=VALUE",
        help="Airflow settings for the stack, e.g. AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME=0.2",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (Airflow homes, logs)")
    parser.add_argument("--timeout", type=float, default=600, help="bound per batch (plus 20 s per submission)")
    args = parser.parse_args()
    # SIGTERM (e.g. from `timeout`) must unwind through the finally blocks that stop every service.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    work = Path(tempfile.mkdtemp(prefix="bench-orchestration-"))
    all_phases, all_batches, idles = [], [], []
    start = time.monotonic()
    try:
        with (
            loopback_only() as violations,
            running_postgres() as cluster,
            running_instance() as instance,
            running_ec2(public_key=instance.public_key) as ec2,
        ):
            (work / "ramp").mkdir()
            ramp_db = seed_ramp_database(cluster, work_dir=str(work / "ramp"))
            with contextlib.closing(ramp_db.connect(autocommit=False)) as conn:
                retire_seeded(conn)
            for name in args.variants:
                variant_args = argparse.Namespace(**vars(args))
                if name == "seed":
                    variant_args.sizes = args.seed_sizes
                print(f"variant {name}: {VARIANTS[name]}", flush=True)
                phases, batches, idle = run_variant(name, variant_args, cluster, ramp_db, instance, ec2, work)
                all_phases += phases
                all_batches += batches
                idles.append((name, idle))
            if violations:
                raise RuntimeError(f"non-loopback connections attempted: {violations}")
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nmachine: {os.cpu_count()} CPUs; parallelism {args.parallelism}; "
        f"Airflow settings {args.airflow_env or 'as the bench stack'}; total {time.monotonic() - start:.0f} s"
    )
    for name, (cpu_per_min, rss) in idles:
        print(f"idle stack ({name}): {cpu_per_min:.1f} CPU s per minute, RSS {rss / 2**20:.0f} MiB")
    print_phase_table("Phases", all_phases)
    print_batch_table("Batches", all_batches)
    print_hop_table("Hops", all_batches)
    print_legend()


if __name__ == "__main__":
    main()
