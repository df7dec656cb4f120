"""Event config files (the seed's format): one pointing at the bench's services, one naming only connections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def write_event_config(
    path: Path, ramp_db, instance, ec2, platform_python: str | None = None, **aws_overrides: Any
) -> Path:
    """
    Write a config for the bench event: its RAMP database, the moto AMI and key pair, the sshd
    instance and short poll intervals; ``platform_python`` is ``ramp.platform_python`` (left out when
    None); ``aws_overrides`` replace or add ``aws`` fields, and an override of None leaves the field
    out (its default applies).
    """
    work = path.parent
    aws = {
        "ami_image_name": ec2.ami_name,
        "ami_user_name": instance.user,
        "instance_type": "t2.micro",
        "key_name": ec2.key_name,
        "key_path": instance.key_path,
        "security_group": ec2.security_group,
        "remote_ramp_kit_folder": instance.remote_kit_folder,
        "local_predictions_folder": str(work / "predictions"),
        "local_log_folder": str(work / "logs"),
        "check_status_interval_secs": 1,
        "check_finished_training_interval_secs": 1,
        "train_loop_interval_secs": 1,
        "memory_profiling": True,
        "region_name": ec2.region,
        "ssh_port": instance.port,
    }
    aws.update(aws_overrides)
    aws = {field: value for field, value in aws.items() if value is not None}
    config = {
        "sqlalchemy": ramp_db.sqlalchemy_config,
        "ramp": {"event_name": ramp_db.event, **({"platform_python": platform_python} if platform_python else {})},
        "aws": aws,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_connection_config(path: Path, **aws_overrides: Any) -> Path:
    """
    Write a config for event ``iris`` that names Airflow connections instead of the bench's services,
    for tests that load it but reach no database or instance; its folders sit beside it.
    ``aws_overrides`` replace or add ``aws`` fields.
    """
    aws = {
        "ami_image_id": "ami-0123456789abcdef0",
        "ami_user_name": "ubuntu",
        "instance_type": "t2.micro",
        "key_name": "ramp",
        "ssh_conn_id": "ramp_ssh",
        "security_group": "ramp",
        "remote_ramp_kit_folder": "~/ramp-kits/iris",
        "local_predictions_folder": "predictions",
        "local_log_folder": "logs",
        **aws_overrides,
    }
    config = {"ramp": {"event_name": "iris"}, "sqlalchemy": {"postgres_conn_id": "ramp_db"}, "aws": aws}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
