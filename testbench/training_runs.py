"""What a test reads back from a training run (its task states, the instances it launched), and a task context to call an operator with."""

from __future__ import annotations

from ramp_airflow.utils import ec2_tags


def instances_of(ec2, submission_id: int, besides=()) -> dict[str, str]:
    """Instance id -> state of the instances the backend launched for a submission, but ``besides``.

    moto lives for the whole session, so earlier tests' instances for the same id are still listed.
    """
    found = {}
    response = ec2.client().describe_instances(
        Filters=[{"Name": f"tag:{ec2_tags.SUBMISSION_ID}", "Values": [str(submission_id)]}]
    )
    for reservation in response["Reservations"]:
        for inst in reservation["Instances"]:
            if inst["InstanceId"] not in besides:
                found[inst["InstanceId"]] = inst["State"]["Name"]
    return found


def task_states(dag_run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


class PushingTaskInstance:
    """The part of a task instance that an operator's ``execute`` pushes XComs through."""

    def __init__(self):
        self.xcoms: dict = {}

    def xcom_push(self, key: str, value) -> None:
        self.xcoms[key] = value


def task_context(run_id: str) -> dict:
    """What an operator's ``execute`` reads of its context when a test calls it outside a run."""
    return {"run_id": run_id, "ti": PushingTaskInstance()}
