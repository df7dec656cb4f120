"""Provider metadata that Airflow reads through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from ramp_airflow import __version__

_INTEGRATION = "RAMP"


def _modules(*names: str) -> list[dict]:
    return [{"integration-name": _INTEGRATION, "python-modules": [f"ramp_airflow.{n}" for n in names]}]


def get_provider_info() -> dict:
    return {
        "package-name": "ramp-airflow",
        "name": "RAMP",
        "description": "Train RAMP data-challenge submissions on Amazon EC2 instances.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": _INTEGRATION,
                "external-doc-url": "https://github.com/paris-saclay-cds/ramp-board",
                "tags": ["service"],
            }
        ],
        "hooks": _modules("hooks.ec2", "hooks.instance_ssh", "hooks.instance_ssh_async", "hooks.ramp_database"),
        "operators": _modules(
            "operators.ec2",
            "operators.training",
            "operators.ramp_database",
            "operators.event_commands",
            "operators.leaderboards",
        ),
        "sensors": _modules("sensors.instance", "sensors.new_submissions"),
        "triggers": _modules("triggers.ec2", "triggers.training", "triggers.new_submissions"),
        # The backend uses the amazon, ssh and postgres providers' connection types.
        "connection-types": [],
    }
