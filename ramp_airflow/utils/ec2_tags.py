"""The tags the backend puts on every instance it launches: one place for their names and values.

The tags make every instance traceable to the Airflow run that launched it, so that the
terminate task kills only its own instance and the orphan sweep can find the rest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from ramp_airflow.utils.ec2_states import LIVE_STATES
from ramp_airflow.utils.layout import submission_folder

BACKEND = "ramp-airflow"
BACKEND_VALUE = "true"
EVENT = "ramp-airflow:event"
SUBMISSION_ID = "ramp-airflow:submission-id"
SUBMISSION_FOLDER = "ramp-airflow:submission-folder"
DAG_ID = "ramp-airflow:dag-id"
RUN_ID = "ramp-airflow:run-id"
TASK_ID = "ramp-airflow:task-id"
NAME = "Name"


def instance_name(event_name: str, submission_id: int) -> str:
    """The Name tag shown in the EC2 console, e.g. ``ramp-iris-submission_000000042``."""
    return f"ramp-{event_name}-{submission_folder(submission_id)}"


def instance_tags(event_name: str, submission_id: int, dag_id: str, run_id: str, task_id: str) -> dict[str, str]:
    """Every tag of an instance launched for ``submission_id`` by the task ``task_id`` of a run."""
    return {
        BACKEND: BACKEND_VALUE,
        EVENT: event_name,
        SUBMISSION_ID: str(submission_id),
        SUBMISSION_FOLDER: submission_folder(submission_id),
        DAG_ID: dag_id,
        RUN_ID: run_id,
        TASK_ID: task_id,
        NAME: instance_name(event_name, submission_id),
    }


def client_token(dag_id: str, run_id: str, task_id: str, submission_id: int, instance_type: str, attempt: str) -> str:
    """
    EC2's idempotency token for one launch request of a task of a run.

    A retried task sends the same token and gets the instance of its first try back.
    ``instance_type`` and ``attempt`` (``spot-<n>`` or ``on-demand``) tell the requests apart:
    EC2 rejects a token reused with other parameters. The hash keeps it within EC2's 64 ASCII
    characters whatever the type's name.
    """
    request = f"{dag_id}\0{run_id}\0{task_id}\0{submission_id}\0{instance_type}"
    return f"{hashlib.sha256(request.encode()).hexdigest()[:40]}-{attempt}"[:64]


def tag_filters(tags: Mapping[str, str], states: Iterable[str] = LIVE_STATES) -> list[dict]:
    """EC2 ``Filters`` matching instances that carry all ``tags`` and are in one of ``states``."""
    filters = [{"Name": f"tag:{key}", "Values": [value]} for key, value in tags.items()]
    filters.append({"Name": "instance-state-name", "Values": list(states)})
    return filters


def launch_filter_tags(submission_id: int, dag_id: str, run_id: str, task_id: str) -> dict[str, str]:
    """
    The tags identifying the instance one launch task of a run launched for one submission.

    The task is part of it: a later training attempt of the same run (another task) must get
    an instance of its own, not the one the previous attempt's teardown is terminating.
    """
    return {BACKEND: BACKEND_VALUE, SUBMISSION_ID: str(submission_id), DAG_ID: dag_id, RUN_ID: run_id, TASK_ID: task_id}


def tags_of(instance: Mapping) -> dict[str, str]:
    """An instance description's ``Tags`` list as a mapping."""
    return {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}


def launched_by(tags: Mapping[str, str], dag_id: str, run_id: str) -> bool:
    """True when the tags say the backend launched the instance in the run ``dag_id``/``run_id``."""
    return tags.get(BACKEND) == BACKEND_VALUE and tags.get(DAG_ID) == dag_id and tags.get(RUN_ID) == run_id
