"""The bench Celery stack's ``airflow_local_settings``: its cluster policy routes tasks to queues."""

from testbench.celery_queues import task_policy

__all__ = ["task_policy"]
