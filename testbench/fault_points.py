"""
Fault points of the chaos stack: a task process held still right after one step of its task, so that a
test can kill it there with SIGKILL, by its PID, as a crash would.

Pure and import-light: Airflow imports it, through the chaos stack's ``airflow_local_settings.py``
(``testbench/chaos_settings/``), while it loads its own settings. Its cluster policy wraps, in every
task Airflow parses (the task process parses the DAG too), the method that :data:`POINTS` names for
that kind of task. While the test has armed the point (a file), the wrapped method's process, once the
method has returned, writes its PID where the test waits for it and sleeps: the step's effect is done
(an instance launched, claims committed) and nothing after it is.
"""

from __future__ import annotations

import functools
import os
import time

from testbench._proc import wait_until

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# PYTHONPATH of the chaos stack's components: Airflow imports its local settings (the policy) from there.
AIRFLOW_PATH = (REPO, os.path.join(REPO, "testbench", "chaos_settings"))
# The folder of the armed points and of the held processes' PIDs; unset, the policy does nothing.
FOLDER_VARIABLE = "RAMP_BENCH_FAULT_POINTS"
# The last part of a task id -> the method after which its process is held.
POINTS = {
    "launch_instance": "_launch",  # RunInstances answered; the instance id not yet in XCom
    "wait_for_new_submissions": "_claim",  # the loop's claims committed; no training run triggered yet
}
# A held process that nobody kills carries on after this long.
HOLD_SECS = 300


def task_policy(task) -> None:
    """Airflow's cluster policy, applied to every task as its DAG is parsed."""
    name = task.task_id.rsplit(".", 1)[-1]
    folder = os.environ.get(FOLDER_VARIABLE)
    operator = type(task)
    # On the class, once: Airflow runs a copy of the parsed task, which an instance's attribute would
    # leave bound to the original.
    if name in POINTS and folder and not hasattr(getattr(operator, POINTS[name]), "fault_point"):
        setattr(operator, POINTS[name], _held_after(getattr(operator, POINTS[name]), os.path.join(folder, name)))


def _held_after(method, point: str):
    @functools.wraps(method)
    def held(*args, **kwargs):
        result = method(*args, **kwargs)
        if os.path.exists(f"{point}.armed"):
            with open(f"{point}.held.tmp", "w") as out:
                out.write(str(os.getpid()))
            os.replace(f"{point}.held.tmp", f"{point}.held")
            time.sleep(HOLD_SECS)
        return result

    held.fault_point = point
    return held


class FaultPoint:
    """The test's side of one point: arm it, then take each process held there."""

    def __init__(self, folder: str, name: str):
        assert name in POINTS, name
        self.path = os.path.join(folder, name)

    def arm(self) -> None:
        open(f"{self.path}.armed", "w").close()

    def disarm(self) -> None:
        os.remove(f"{self.path}.armed")

    def wait_held(self, timeout: float, check=lambda: None) -> int:
        """The PID of the next process held there (``check`` runs at each look, to fail early)."""

        def held() -> int | None:
            check()
            try:
                with open(f"{self.path}.held") as pid_file:
                    pid = int(pid_file.read())
            except FileNotFoundError:
                return None
            os.remove(f"{self.path}.held")
            return pid

        return wait_until(held, timeout, f"a process held after {os.path.basename(self.path)}", 0.2)
