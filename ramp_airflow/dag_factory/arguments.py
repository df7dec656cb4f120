"""The operator arguments an event config gives, grouped the way the operators take them."""

from __future__ import annotations

from typing import Any

from ramp_airflow.config import EventConfig


def database_arguments(config: EventConfig) -> dict[str, Any]:
    """For the operators that talk to the RAMP database."""
    return {
        "event_name": config.event_name,
        "postgres_conn_id": config.database.postgres_conn_id,
        "database": config.database,
    }


def aws_arguments(config: EventConfig) -> dict[str, Any]:
    """For the EC2 operators and sensors (a connection id wins over the rest, in the hook)."""
    aws = config.aws
    return {
        "aws_conn_id": aws.aws_conn_id,
        "region_name": aws.region_name,
        "profile_name": aws.profile_name,
        "access_key_id": aws.access_key_id,
        "secret_access_key": aws.secret_access_key,
    }


def ssh_arguments(config: EventConfig) -> dict[str, Any]:
    """For the operators and sensors that reach the instance over SSH."""
    aws = config.aws
    return {
        "ami_user_name": aws.ami_user_name,
        "key_path": aws.key_path,
        "ssh_conn_id": aws.ssh_conn_id,
        "ssh_port": aws.ssh_port,
        "remote_ramp_kit_folder": aws.remote_ramp_kit_folder,
    }
