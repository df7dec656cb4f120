"""The event config's schema, written once: the frozen dataclasses a loaded config is made of.

Each YAML field is declared on the dataclass attribute it ends up in, with :func:`setting`: its kind,
default and constraints ride in the field's metadata. :data:`SECTIONS`, the table the validator walks,
is derived from those fields, so adding a field to a dataclass is all it takes for it to be read and
checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

# The shell commands an event runs on the Airflow side; the YAML calls them ``aws.hooks``.
EVENT_COMMAND_NAMES = ("start_training", "successful_training", "failed_training", "budget_exhausted")
# The seed's README spells the success command this way; configs written for it keep working.
EVENT_COMMAND_ALIASES = {"after_sucessful_training": "successful_training"}
# The YAML key of the event commands: the seed's name, kept so every config file keeps working.
EVENT_COMMANDS_KEY = "hooks"

REQUIRED: Any = object()  # the default of a setting the YAML must give
REQUIRED_SECTIONS = ("ramp", "aws")
SETTING_METADATA_KEY = "ramp_airflow.config.setting"


@dataclass(frozen=True)
class Setting:
    """How one YAML field is read and checked."""

    kind: str  # "str", "int", "number", "bool", "str_list", "str_or_list", "price_table" or "event_commands"
    default: Any = REQUIRED
    positive: bool = False
    secret: bool = False
    # Only for EventConfig's fields, which sit in another dataclass's YAML section:
    section: str | None = None
    key: str | None = None  # the YAML key, when it is not the attribute's name


def setting(
    kind: str,
    default: Any = REQUIRED,
    *,
    positive: bool = False,
    secret: bool = False,
    section: str | None = None,
    key: str | None = None,
) -> Any:
    """A dataclass field read from the YAML, its :class:`Setting` in the field's metadata."""
    spec = Setting(kind, default, positive, secret, section, key)
    # No dataclass default: the loader always passes every field, the YAML default already applied.
    return field(repr=not secret, metadata={SETTING_METADATA_KEY: spec})


@dataclass(frozen=True)
class DatabaseSettings:
    """The ``sqlalchemy`` section: an Airflow Postgres connection, or the inline fields."""

    postgres_conn_id: str | None = setting("str", None)
    drivername: str = setting("str", "postgresql")
    username: str | None = setting("str", None)
    password: str | None = setting("str", None, secret=True)
    host: str | None = setting("str", None)
    port: int = setting("int", 5432, positive=True)
    database: str | None = setting("str", None)


@dataclass(frozen=True)
class AwsSettings:
    """The ``aws`` section, with defaults applied and relative local folders made absolute."""

    ami_image_id: str | None = setting("str", None)
    ami_image_name: str | None = setting("str", None)
    ami_owners: tuple[str, ...] = setting("str_list", ("self",))  # the YAML list, as a tuple
    ami_user_name: str = setting("str")
    # One type or a list, tried in order when EC2 has no capacity for one; always a tuple here.
    instance_type: tuple[str, ...] = setting("str_or_list")
    key_name: str = setting("str")
    key_path: str | None = setting("str", None)  # resolved against the config file's folder
    security_group: str = setting("str")
    remote_ramp_kit_folder: str = setting("str")
    # Made absolute against the config file's folder, not the worker's cwd.
    local_predictions_folder: str = setting("str")
    local_log_folder: str = setting("str")
    check_status_interval_secs: float = setting("number", 5, positive=True)
    check_finished_training_interval_secs: float = setting("number", 10, positive=True)
    train_loop_interval_secs: float = setting("number", 2, positive=True)
    memory_profiling: bool = setting("bool", False)
    profile_name: str | None = setting("str", None)
    access_key_id: str | None = setting("str", None)
    secret_access_key: str | None = setting("str", None, secret=True)
    region_name: str | None = setting("str", None)
    use_spot_instance: bool = setting("bool", False)
    aws_conn_id: str | None = setting("str", None)
    ssh_conn_id: str | None = setting("str", None)
    ssh_port: int = setting("int", 22, positive=True)
    training_command: tuple[str, ...] = setting("str", "ramp-test")  # one string, split as a shell would
    # ramp-engine's local workers give a training two hours too.
    training_timeout_secs: float = setting("number", 7200, positive=True)
    instance_ready_timeout_secs: float = setting("number", 900, positive=True)
    spot_wait_secs: float = setting("number", 120, positive=True)
    # The most a training's download (output, log, memory profile) may take on the Airflow side.
    max_output_mb: float = setting("number", 1024, positive=True)
    max_concurrent_instances: int = setting("int", 10, positive=True)
    # The loop never claims more than this many of one team's submissions at once (None: no such cap).
    max_concurrent_per_team: int | None = setting("int", None, positive=True)
    instance_retries: int = setting("int", 1)
    # The housekeeping DAG: how often it runs, and how old an instance must be before it may be swept.
    orphan_sweep_interval_secs: float = setting("number", 300, positive=True)
    orphan_grace_period_secs: float = setting("number", 600, positive=True)
    # Instance type -> its price per hour, for ramp-airflow cost-report; without it, seconds only.
    instance_price_per_hour: Mapping[str, float] | None = setting("price_table", None)
    # The event's budget: money with instance_price_per_hour, instance-hours without (None: no budget).
    budget: float | None = setting("number", None, positive=True)


@dataclass(frozen=True)
class EventConfig:
    """One event's validated configuration."""

    path: str
    event_name: str = setting("str", section="ramp")
    database: DatabaseSettings
    aws: AwsSettings
    # Command names (aliases resolved) to their commands, from the YAML's ``aws.hooks``.
    event_commands: Mapping[str, tuple[str, ...]] = setting(
        "event_commands", None, section="aws", key=EVENT_COMMANDS_KEY
    )
    # The RAMP platform's virtualenv's python (ramp-database); without it, no leaderboard DAG.
    platform_python: str | None = setting("str", None, section="ramp")


def settings_of(cls: type, section: str | None = None) -> dict[str, Setting]:
    """The settings declared on ``cls`` (only those placed in ``section``), by YAML key, in field order."""
    table = {}
    for item in fields(cls):
        spec = item.metadata.get(SETTING_METADATA_KEY)
        if spec is not None and spec.section == section:
            table[spec.key or item.name] = spec
    return table


def derive_sections(
    database: type = DatabaseSettings, aws: type = AwsSettings, event: type = EventConfig
) -> dict[str, dict[str, Setting]]:
    """The validator's table: YAML section, then YAML key, to its :class:`Setting`."""
    return {
        "sqlalchemy": settings_of(database),
        "ramp": settings_of(event, "ramp"),
        "aws": {**settings_of(aws), **settings_of(event, "aws")},
    }


SECTIONS = derive_sections()
