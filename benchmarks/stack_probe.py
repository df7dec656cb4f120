"""
What the orchestrator costs while a batch runs: CPU seconds and memory of the Airflow processes,
and how many worker slots its task instances hold, sampled from outside.

- :class:`ProcessTrees`: every process in the process groups of the stack's components
  (api-server, scheduler with its LocalExecutor workers and task processes and their ssh/rsync
  children, triggerer, dag-processor). CPU seconds are exact over exited processes too: each
  live process's own times plus those of the children it reaped.
- :class:`PeakRss`: a thread that keeps the peaks of their total RSS and PSS.
- :class:`Sampler`: a thread that, every ``interval`` seconds, counts task instances by state
  in the metadata database (all running ones, and the sensors among them: a deferrable wait
  holds a slot only while it starts or resumes), the submissions training in the RAMP database,
  and the total RSS of the process trees; it keeps peaks and slot-seconds.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

import psutil

# The tasks that wait deferred.
SENSOR_TASKS = ("wait_for_instance", "wait_for_training", "wait_for_new_submissions")


def component_name(cmdline: list[str]) -> str:
    """A process's kind from its command line or title: Airflow's titles name the component first."""
    if len(cmdline) > 2 and cmdline[1] == "-c":  # a component as ramp_aws_train_loop starts it: its name is last
        return f"airflow {cmdline[-1]}"
    words = " ".join(cmdline).replace("[", "").replace("]", "").split()
    if not words:
        return "?"
    if words[0] == "airflow" or words[0].endswith("/airflow"):
        return " ".join(["airflow", *(w.rstrip(":") for w in words[1:3] if not w.startswith("-"))][:3])
    if "python" in os.path.basename(words[0]) and len(words) > 1:
        return os.path.basename(words[2] if words[1] == "-m" and len(words) > 2 else words[1])
    return os.path.basename(words[0])


def _cpu_seconds(proc: psutil.Process) -> float:
    """A process's own CPU seconds plus those of the children it reaped."""
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


class ProcessTrees:
    """
    The processes of some process groups (one per stack component), found through /proc; with
    ``roots``, also every descendant of those PIDs, whose process groups are then followed too
    (a child started in a session of its own, and what it starts, stays counted if reparented).
    """

    def __init__(self, pgids: list[int], roots: list[int] = ()):
        self.pgids, self.roots = set(pgids), list(roots)

    def processes(self) -> list[psutil.Process]:
        found = {}
        for root in self.roots:
            with contextlib.suppress(psutil.Error):
                top = psutil.Process(root)
                for proc in [top, *top.children(recursive=True)]:
                    found[proc.pid] = proc
                    with contextlib.suppress(ProcessLookupError):
                        self.pgids.add(os.getpgid(proc.pid))
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if proc.pid not in found and os.getpgid(proc.pid) in self.pgids:
                    found[proc.pid] = proc
        return list(found.values())

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                total += _cpu_seconds(proc)
        return total

    def cpu_by_component(self) -> dict[str, float]:
        """
        CPU seconds per kind of process, named by its title ("airflow scheduler", "airflow worker", "airflow
        task runner", "ssh", ...): each process's own times plus those of the children it reaped (a
        LocalExecutor worker reaps the task processes it supervised).
        """
        totals: dict[str, float] = {}
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                name = component_name(proc.cmdline())
                totals[name] = totals.get(name, 0.0) + _cpu_seconds(proc)
        return totals

    def cpu_by_component_since(self, before: dict[str, float], per_minute_of: float | None = None) -> dict[str, float]:
        """
        :meth:`cpu_by_component` minus an earlier reading of it, the most first, in tenths of a second;
        with ``per_minute_of`` (the seconds between the readings), per minute.
        """
        scale = 60 / per_minute_of if per_minute_of else 1.0
        now = self.cpu_by_component()
        spent = {name: (seconds - before.get(name, 0.0)) * scale for name, seconds in now.items()}
        return {name: round(seconds, 1) for name, seconds in sorted(spent.items(), key=lambda item: -item[1])}

    def rss_bytes(self) -> int:
        total = 0
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def rss_and_pss_bytes(self) -> tuple[int, int]:
        """
        Total RSS and PSS, from one walk of the trees. PSS (proportional set size) counts a page shared
        by n processes 1/n in each, so forked processes are not counted n times.
        """
        rss = pss = 0
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                memory = proc.memory_full_info()
                rss, pss = rss + memory.rss, pss + memory.pss
        return rss, pss


class PeakRss(threading.Thread):
    """
    Sample the total RSS of some process trees every ``interval`` seconds, and their PSS every
    ``pss_every`` samples, until :meth:`stop`; keep the peaks, ``(rss, pss)`` in bytes.
    """

    def __init__(self, trees: ProcessTrees, interval: float = 0.5, pss_every: int = 4):
        super().__init__(daemon=True)
        self.trees, self.interval, self.peak = trees, interval, (0, 0)
        # PSS reads each process's smaps: on a stack of 30 processes, sampled every 0.5 s, that took
        # 16 % of a core from the two the stack runs on. RSS alone is cheap.
        self.pss_every = pss_every
        self.own_cpu = 0.0  # what the sampling itself cost (reading smaps takes the kernel time too)
        self._stop_event = threading.Event()

    def stop(self) -> tuple[int, int]:
        self._stop_event.set()
        self.join(timeout=30)
        return self.peak

    def run(self) -> None:
        samples = 0
        while not self._stop_event.is_set():
            if samples % self.pss_every == 0:
                rss, pss = self.trees.rss_and_pss_bytes()
            else:
                rss, pss = self.trees.rss_bytes(), 0
            samples += 1
            self.peak = (max(self.peak[0], rss), max(self.peak[1], pss))
            self.own_cpu = time.thread_time()
            self._stop_event.wait(self.interval)


_TI_QUERY = """
SELECT task_id, state, count(*) FROM task_instance
WHERE state IN ('running', 'deferred', 'queued') GROUP BY task_id, state
"""


class Sampler(threading.Thread):
    """Sample slots, trainings and memory until :meth:`stop`; read the results as attributes."""

    def __init__(self, trees: ProcessTrees, airflow_conn, ramp_conn, interval: float = 0.5):
        super().__init__(daemon=True)
        self.trees, self.airflow_conn, self.ramp_conn, self.interval = trees, airflow_conn, ramp_conn, interval
        self._stop_event = threading.Event()
        self.samples = 0
        self.peak_running = 0  # task instances in state running (each holds a worker slot)
        self.peak_running_while_training = 0
        self.peak_sensors_running = 0  # of which sensors
        self.peak_deferred = 0
        self.peak_rss = 0
        self.running_slot_secs = 0.0
        self.sensor_slot_secs = 0.0
        self.deferred_secs = 0.0
        self.error: BaseException | None = None

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)
        if self.error:
            raise self.error

    def run(self) -> None:
        last = time.monotonic()
        try:
            while not self._stop_event.is_set():
                running, sensors, deferred = self._slots()
                training = self._training()
                rss = self.trees.rss_bytes()
                now = time.monotonic()
                dt, last = now - last, now
                self.samples += 1
                self.peak_running = max(self.peak_running, running)
                if training:
                    self.peak_running_while_training = max(self.peak_running_while_training, running)
                self.peak_sensors_running = max(self.peak_sensors_running, sensors)
                self.peak_deferred = max(self.peak_deferred, deferred)
                self.peak_rss = max(self.peak_rss, rss)
                self.running_slot_secs += running * dt
                self.sensor_slot_secs += sensors * dt
                self.deferred_secs += deferred * dt
                self._stop_event.wait(self.interval)
        except BaseException as err:  # reported by stop()
            self.error = err

    def _slots(self) -> tuple[int, int, int]:
        running = sensors = deferred = 0
        with self.airflow_conn.cursor() as cur:
            cur.execute(_TI_QUERY)
            for task_id, state, count in cur.fetchall():
                if state == "running":
                    running += count
                    if task_id.rsplit(".", 1)[-1] in SENSOR_TASKS:
                        sensors += count
                elif state == "deferred":
                    deferred += count
        return running, sensors, deferred

    def _training(self) -> int:
        with self.ramp_conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM submissions WHERE state = 'training'")
            return cur.fetchone()[0]
