"""The chaos stack's ``airflow_local_settings``: its cluster policy installs the fault points."""

from testbench.fault_points import task_policy

__all__ = ["task_policy"]
