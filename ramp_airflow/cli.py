"""The ``ramp-airflow`` command line: tools for event organisers."""

from __future__ import annotations

import argparse
import datetime
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


def cost_report(path: str, by: str, since: datetime.datetime | None) -> int:
    """Print the event's cost ledger as a table, by team or submission; 2 when the config or the ledger is bad."""
    # The ledger alone: no Airflow, no AWS, no database.
    from ramp_airflow.cost_report import report_lines
    from ramp_airflow.utils import cost_ledger
    from ramp_airflow.utils.layout import cost_ledger_file

    config = _load(path)
    if config is None:
        return 2
    ledger = cost_ledger_file(config.aws.local_log_folder, config.event_name)
    try:
        rows = cost_ledger.read_rows(ledger)
    except FileNotFoundError:
        print(f"{ledger}: no cost ledger yet: no instance of event {config.event_name} was terminated", file=sys.stderr)
        rows = []
    except (OSError, cost_ledger.LedgerError) as err:
        print(err, file=sys.stderr)
        return 2
    for line in report_lines(rows, by, config.aws.instance_price_per_hour, since):
        print(line)
    return 0


def _utc_date(text: str) -> datetime.datetime:
    """``--since``: an ISO date or date and time, in UTC unless it says otherwise."""
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date (2025-03-01, or 2025-03-01T12:00)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


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
    check.set_defaults(run=lambda args: check_config(args.paths))
    aws = commands.add_parser("check-aws", help="check an event's AMI, key pair and security group on EC2 (read-only)")
    aws.add_argument("paths", nargs="+", metavar="CONFIG", help="config.yml files whose AWS setup to check")
    aws.set_defaults(run=lambda args: check_aws(args.paths))
    cost = commands.add_parser("cost-report", help="the billed seconds (and cost) of an event's instances")
    cost.add_argument("config", metavar="CONFIG", help="the event's config.yml")
    cost.add_argument("--by", choices=("team", "submission"), default="team", help="one line per (default: team)")
    cost.add_argument(
        "--since", type=_utc_date, metavar="DATE", help="only instances launched then or later (ISO date, UTC)"
    )
    cost.set_defaults(run=lambda args: cost_report(args.config, args.by, args.since))
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
