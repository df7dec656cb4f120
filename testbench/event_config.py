"""An event config file (the seed's format) pointing at the bench's services."""

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
