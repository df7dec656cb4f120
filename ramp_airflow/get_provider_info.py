"""Provider metadata that Airflow reads through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from ramp_airflow import __version__


def get_provider_info() -> dict:
    return {
        "package-name": "ramp-airflow",
        "name": "RAMP",
        "description": "Train RAMP data-challenge submissions on Amazon EC2 instances.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "RAMP",
                "external-doc-url": "https://github.com/paris-saclay-cds/ramp-board",
                "tags": ["service"],
            }
        ],
        "hooks": [],
        "operators": [],
        "sensors": [],
        "triggers": [],
        "connection-types": [],
    }
