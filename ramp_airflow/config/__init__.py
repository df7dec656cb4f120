"""Load and validate an event's config file (the old RAMP AWS backend's ``config.yml``).

``schema`` holds the dataclasses a loaded config is made of, each field declared once with its kind,
default and constraints; ``validation`` reads the YAML and checks it against them.
"""

from ramp_airflow.config.schema import (
    EVENT_COMMAND_ALIASES,
    EVENT_COMMAND_NAMES,
    AwsSettings,
    DatabaseSettings,
    EventConfig,
)
from ramp_airflow.config.validation import ConfigError, Problem, load_config

__all__ = [
    "EVENT_COMMAND_ALIASES",
    "EVENT_COMMAND_NAMES",
    "AwsSettings",
    "ConfigError",
    "DatabaseSettings",
    "EventConfig",
    "Problem",
    "load_config",
]
