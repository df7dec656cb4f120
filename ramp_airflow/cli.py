"""The ``ramp-airflow`` command line: tools for event organisers."""

from __future__ import annotations

import argparse
import os
import stat
import sys

from ramp_airflow.config import ConfigError, EventConfig, load_config


def _summary(config: EventConfig) -> str:
    aws = config.aws
    image = aws.ami_image_id or f"newest AMI named {aws.ami_image_name!r}"
    # The output names them as the YAML does (aws.hooks).
    commands = ", ".join(config.event_commands) or "no hooks"
    return f"event {config.event_name}: {image}, {' then '.join(aws.instance_type)}, {commands}"


def _load(path: str) -> EventConfig | None:
    """The file's config, or None after printing its problems."""
    try:
        return load_config(path)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return None


def check_config(paths: list[str]) -> int:
    """Validate each file; print one summary line per good file and one line per problem."""
    status = 0
    for path in paths:
        config = _load(path)
        if config is None:
            status = 2
            continue
        print(f"{path}: OK: {_summary(config)}")
        if warning := _exposed_secrets(config):
            print(f"{path}: warning: {warning}", file=sys.stderr)
    return status


def check_aws(paths: list[str]) -> int:
    """Check each file's AWS account setup with read-only EC2 calls; 2 when a file or a check has an error."""
    # Airflow logs to stdout, where the lines go, and reads its level once, on import; every finding,
    # an error too, is a line already. AIRFLOW__LOGGING__LOGGING_LEVEL=INFO shows the logs anyway.
    if "airflow" not in sys.modules:
        os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "CRITICAL")
    # Airflow and boto3 load only for this command: check-config stays quick.
    from ramp_airflow.check_aws import account_lines
    from ramp_airflow.utils.account_check import ERROR

    status = 0
    for path in paths:
        config = _load(path)
        if config is None:
            status = 2
            continue
        for line in account_lines(config):
            print(f"{path}: {line}")
            if line.level == ERROR:
                status = 2
    return status


def _exposed_secrets(config: EventConfig) -> str | None:
    """Why the config file's secrets can be read by other users of the machine, if they can."""
    if config.database.password is None and config.aws.secret_access_key is None:
        return None
    mode = stat.S_IMODE(os.stat(config.path).st_mode)
    if not mode & 0o077:
        return None
    return (
        f"it holds a password or a secret key and other users can read it (mode {mode:04o}): run chmod 600 "
        "on it, or keep the secrets in Airflow connections (postgres_conn_id, aws_conn_id)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ramp-airflow", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check-config", help="validate event config files")
    check.add_argument("paths", nargs="+", metavar="PATH", help="config.yml files to check")
    aws = commands.add_parser("check-aws", help="check an event's AMI, key pair and security group on EC2 (read-only)")
    aws.add_argument("paths", nargs="+", metavar="CONFIG", help="config.yml files whose AWS setup to check")
    args = parser.parse_args(argv)
    return {"check-config": check_config, "check-aws": check_aws}[args.command](args.paths)


if __name__ == "__main__":
    sys.exit(main())
