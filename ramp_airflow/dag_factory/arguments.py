"""What the event config gives the tasks, in the forms they take it: built here, once per DAG."""

from __future__ import annotations

import datetime
from typing import Any

from ramp_airflow.config import EventConfig
from ramp_airflow.utils.aws_credentials import AwsCredentials
from ramp_airflow.utils.instance_login import InstanceLogin


def dag_arguments(config: EventConfig, doc: str | None) -> dict[str, Any]:
    """What every DAG of an event shares: no catch-up, the event's tags, its module's docstring as its doc."""
    return {
        "start_date": datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
        "catchup": False,
        "tags": ["ramp", config.event_name],
        "doc_md": doc,
    }


def database_arguments(config: EventConfig) -> dict[str, Any]:
    """For the operators that talk to the RAMP database."""
    return {
        "event_name": config.event_name,
        "postgres_conn_id": config.database.postgres_conn_id,
        "database": config.database,
    }


def aws_credentials(config: EventConfig) -> AwsCredentials:
    """How the EC2 tasks reach AWS (a connection id wins over the rest, in the hook)."""
    aws = config.aws
    return AwsCredentials(
        aws_conn_id=aws.aws_conn_id,
        region_name=aws.region_name,
        profile_name=aws.profile_name,
        access_key_id=aws.access_key_id,
        secret_access_key=aws.secret_access_key,
    )


def instance_login(config: EventConfig) -> InstanceLogin:
    """How the tasks that reach an instance log in, and where its kit folder is."""
    aws = config.aws
    return InstanceLogin(
        ami_user_name=aws.ami_user_name,
        key_path=aws.key_path,
        ssh_conn_id=aws.ssh_conn_id,
        ssh_port=aws.ssh_port,
        remote_ramp_kit_folder=aws.remote_ramp_kit_folder,
    )
