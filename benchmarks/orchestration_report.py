"""The orchestration benchmark's tables: phase medians per scenario, batch figures per scenario."""

from __future__ import annotations

import statistics

PHASES = ("detect", "dispatch", "ready", "upload", "train", "end->det", "fetch+rec", "term", "overhead", "idle")


def median_row(rows: list[dict]) -> dict:
    complete = [r for r in rows if "detect" in r]
    if not complete:
        return {p: float("nan") for p in PHASES}
    return {p: statistics.median(r[p] for r in complete) for p in PHASES}


def print_phase_table(title: str, results: list[tuple[str, dict]]) -> None:
    print(f"\n{title}: per-submission medians in seconds")
    header = f"{'scenario':<26}" + "".join(f"{p:>10}" for p in PHASES)
    print(header)
    print("-" * len(header))
    for label, med in results:
        print(f"{label:<26}" + "".join(f"{med[p]:>10.1f}" for p in PHASES))


def print_batch_table(title: str, results: list[tuple[str, list[dict]]]) -> None:
    print(f"\n{title}: per batch, medians over repeats")
    cols = (
        "makespan s",
        "subs/min",
        "slots pk",
        "sensor pk",
        "sensor s",
        "deferred pk",
        "CPU s/sub",
        "RSS pk MiB",
        "RSS MiB/sub",
        "retries",
    )
    header = f"{'scenario':<26}" + "".join(f"{c:>12}" for c in cols) + "  final states"
    print(header)
    print("-" * len(header))
    for label, batches in results:

        def med(key, batches=batches):
            return statistics.median(b[key] for b in batches)

        counts = {}
        for b in batches:
            for state, n in b["states"].items():
                counts[state] = counts.get(state, 0) + n
        states = ",".join(f"{n} {state}" for state, n in sorted(counts.items()))
        values = (
            med("makespan"),
            med("throughput_per_min"),
            med("peak_running"),
            med("peak_sensors_running"),
            med("sensor_slot_secs"),
            med("peak_deferred"),
            med("cpu_per_sub"),
            med("rss_peak_mib"),
            med("rss_per_sub_mib"),
            med("task_retries"),
        )
        print(f"{label:<26}" + "".join(f"{v:>12.1f}" for v in values) + f"  {states}")


HOP_TASKS = ("claim_submission", "mark_training", "record_results")
HOP_PARTS = ("sched", "start", "run")


def print_hop_table(title: str, results: list[tuple[str, list[dict]]]) -> None:
    """Medians of where a task start's seconds go, for the tasks that do not defer."""
    print(f"\n{title}: per-task medians in seconds (upstream end -> queued -> running -> ended)")
    header = f"{'scenario':<26}" + "".join(
        f"{task.split('_')[0] + ' ' + part:>14}" for task in HOP_TASKS for part in HOP_PARTS
    )
    print(header)
    print("-" * len(header))
    for label, batches in results:
        rows = [r for b in batches for r in b["rows"]]
        cells = []
        for key in (f"{task} {part}" for task in HOP_TASKS for part in HOP_PARTS):
            values = [r[key] for r in rows if key in r]
            cells.append(statistics.median(values) if values else float("nan"))
        print(f"{label:<26}" + "".join(f"{v:>14.2f}" for v in cells))


def print_legend() -> None:
    print("\nslots pk: peak task instances running (= worker slots held) while a training ran; sensor pk / sensor s:")
    print("peak and slot-seconds of sensors running (deferrable waits hold a slot only to start and to resume);")
    print("deferred pk: peak task instances deferred (waiting in the triggerer). CPU and RSS: every process of the")
    print("Airflow components (api-server, scheduler + LocalExecutor + task processes, triggerer, dag-processor).")
