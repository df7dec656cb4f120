"""Read an event's config file and check it against the schema, reporting every problem at once.

Loading touches only the file itself (and the stat of ``aws.key_path`` and ``ramp.platform_python``):
DAG files call it at every parse, so it must stay fast and free of network and database access.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ramp_airflow.config.schema import (
    EVENT_COMMAND_ALIASES,
    EVENT_COMMAND_NAMES,
    EVENT_COMMANDS_KEY,
    REQUIRED,
    REQUIRED_SECTIONS,
    SECTIONS,
    AwsSettings,
    DatabaseSettings,
    EventConfig,
    Setting,
)

_EVENT_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

# Per kind of setting: whether a (non-null) YAML value fits, and what to ask for when it does not.
_FITS = {
    "str": lambda value: isinstance(value, str) and value.strip() != "",
    "int": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "number": lambda value: isinstance(value, (int, float)) and not isinstance(value, bool),
    "bool": lambda value: isinstance(value, bool),
    "str_list": lambda value: isinstance(value, list) and value != [] and all(isinstance(v, str) and v for v in value),
    "str_or_list": lambda value: _FITS["str"](value) or _FITS["str_list"](value),
    "price_table": lambda value: isinstance(value, dict),
    "event_commands": lambda value: isinstance(value, dict),
}
_EXPECTED = {
    "str": "a non-empty string",
    "int": "a whole number",
    "number": "a number",
    "bool": "true or false",
    "str_list": "a non-empty list of strings",
    "str_or_list": "a non-empty string or a non-empty list of strings",
    "price_table": "a mapping of instance types to prices per hour",
    "event_commands": "a mapping of hook names to commands",
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file, named by the dotted field it concerns."""

    path: str
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: {self.field}" if self.field else self.path
        return f"{where}: {self.message}"


class ConfigError(ValueError):
    """A config file that cannot be used; ``problems`` lists every reason at once."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def load_config(path: str | os.PathLike) -> EventConfig:
    """Read and validate one config file; raise :class:`ConfigError` naming every problem."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError([Problem(path, "", f"cannot read the file: {err.strerror}")]) from None
    try:
        raw = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        reason = getattr(err, "problem", None) or str(err)
        # YAML notices an unclosed bracket or quote lines later: say where it was opened too.
        context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
        if context and context_mark is not None:
            reason += f" ({context} on line {context_mark.line + 1})"
        raise ConfigError([Problem(path, "", f"{line}YAML syntax error: {reason}")]) from None
    return _Validator(path).validate(raw)


class _Validator:
    def __init__(self, path: str):
        self.path = path
        self.problems: list[Problem] = []

    def fail(self, where: str, message: str) -> None:
        self.problems.append(Problem(self.path, where, message))

    def validate(self, raw: Any) -> EventConfig:
        if not isinstance(raw, dict):
            self.fail("", "the file must hold a mapping with sections " + ", ".join(SECTIONS))
            raise ConfigError(self.problems)
        self._unknown(raw, SECTIONS, "")
        values = {name: self._section(raw, name) for name in SECTIONS}
        db, ramp, aws = values["sqlalchemy"], values["ramp"], values["aws"]
        self._check_database(db)
        self._check_event_name(ramp.get("event_name"))
        self._check_platform_python(ramp)
        self._check_aws(aws)
        # The event commands sit in the aws section of the YAML but are not AWS settings.
        event_commands = self._event_commands(aws.pop(EVENT_COMMANDS_KEY))
        if self.problems:
            raise ConfigError(self.problems)
        base = Path(self.path).resolve().parent
        for name in ("local_predictions_folder", "local_log_folder"):
            aws[name] = str(base / Path(aws[name]).expanduser())
        aws["ami_owners"] = tuple(aws["ami_owners"])
        instance_type = aws["instance_type"]
        aws["instance_type"] = (instance_type,) if isinstance(instance_type, str) else tuple(instance_type)
        aws["training_command"] = tuple(shlex.split(aws["training_command"]))
        return EventConfig(
            path=str(Path(self.path).resolve()),
            event_name=ramp["event_name"],
            platform_python=ramp["platform_python"],
            database=DatabaseSettings(**db),
            aws=AwsSettings(**aws),
            event_commands=event_commands,
        )

    def _unknown(self, given: Mapping, known: Mapping, prefix: str) -> None:
        for key in given:
            if key in known:
                continue
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            self.fail(f"{prefix}{key}", f"unknown field{hint}")

    def _section(self, raw: dict, name: str) -> dict[str, Any]:
        fields = SECTIONS[name]
        given = raw.get(name)
        if given is None:
            if name in REQUIRED_SECTIONS:
                self.fail(name, "missing required section")
            given = {}
        elif not isinstance(given, dict):
            self.fail(name, f"must be a mapping of fields, not {_type_name(given)}")
            given = {}
        self._unknown(given, fields, f"{name}.")
        out = {}
        for key, spec in fields.items():
            where = f"{name}.{key}"
            value = given.get(key)
            if value is None:
                if spec.default is REQUIRED and name in raw:
                    self.fail(where, "missing required field")
                out[key] = None if spec.default is REQUIRED else spec.default
            else:
                out[key] = self._typed(where, spec, value)
        return out

    def _typed(self, where: str, spec: Setting, value: Any) -> Any:
        if not _FITS[spec.kind](value):
            # An import error is shown in Airflow's UI: a secret's value is never quoted.
            shown = "" if spec.secret else f" {value!r}"
            self.fail(where, f"must be {_EXPECTED[spec.kind]}, not {_type_name(value)}{shown}")
            return spec.default if spec.default is not REQUIRED else None
        if spec.positive and value <= 0:
            self.fail(where, f"must be greater than 0, not {value}")
        return value

    def _check_database(self, db: dict) -> None:
        if db["postgres_conn_id"] is None:
            for key in ("username", "host", "database"):
                if db[key] is None:
                    self.fail(f"sqlalchemy.{key}", "missing required field (or give sqlalchemy.postgres_conn_id)")
        if not db["drivername"].startswith("postgresql"):
            self.fail("sqlalchemy.drivername", f"only PostgreSQL is supported, not {db['drivername']!r}")

    def _check_event_name(self, name: str | None) -> None:
        if name is not None and not _EVENT_NAME.match(name):
            self.fail("ramp.event_name", "may only hold letters, digits, '_', '-' and '.' (it names the DAGs)")

    def _check_platform_python(self, ramp: dict) -> None:
        given = ramp.get("platform_python")
        if given is None:
            return
        # Made absolute, never resolved: a virtualenv's python is a symlink that must stay one.
        python = self._relative_to_config(given)
        if not python.is_file():
            self.fail("ramp.platform_python", f"{python} is not a file; give the RAMP virtualenv's bin/python")
        elif not os.access(python, os.X_OK):
            self.fail("ramp.platform_python", f"{python} is not executable; give the RAMP virtualenv's bin/python")
        ramp["platform_python"] = str(python)

    def _relative_to_config(self, given: str) -> Path:
        """A path of the config, ``~`` expanded, relative to the config file's folder."""
        path = Path(given).expanduser()
        return path if path.is_absolute() else Path(self.path).resolve().parent / path

    def _check_aws(self, aws: dict) -> None:
        if (aws["ami_image_id"] is None) == (aws["ami_image_name"] is None):
            self.fail("aws.ami_image_id", "give exactly one of aws.ami_image_id and aws.ami_image_name")
        elif aws["ami_image_id"] is not None and not aws["ami_image_id"].startswith("ami-"):
            self.fail("aws.ami_image_id", f"must start with 'ami-', not {aws['ami_image_id']!r}")
        if (aws["access_key_id"] is None) != (aws["secret_access_key"] is None):
            self.fail("aws.access_key_id", "give both aws.access_key_id and aws.secret_access_key, or neither")
        elif aws["access_key_id"] is not None and aws["profile_name"] is not None:
            self.fail("aws.profile_name", "give aws.profile_name or the access keys, not both")
        if aws["instance_retries"] is not None and aws["instance_retries"] < 0:
            self.fail("aws.instance_retries", f"must be 0 or more, not {aws['instance_retries']}")
        if isinstance(aws["instance_type"], list):
            twice = sorted({name for name in aws["instance_type"] if aws["instance_type"].count(name) > 1})
            if twice:
                self.fail(
                    "aws.instance_type", f"lists {', '.join(twice)} more than once; each type is tried once, in order"
                )
        if aws["ssh_port"] is not None and aws["ssh_port"] > 65535:
            self.fail("aws.ssh_port", f"must be a TCP port (1 to 65535), not {aws['ssh_port']}")
        if aws["training_command"] is not None:
            try:
                if not shlex.split(aws["training_command"]):
                    self.fail("aws.training_command", "must name a command")
            except ValueError as err:
                self.fail("aws.training_command", f"cannot be split into arguments: {err}")
        self._check_key_path(aws)
        self._check_prices(aws)

    def _check_key_path(self, aws: dict) -> None:
        key_path = aws["key_path"]
        if key_path is None:
            if aws["ssh_conn_id"] is None:
                self.fail("aws.key_path", "missing required field (or give aws.ssh_conn_id)")
            return
        resolved = self._relative_to_config(key_path)
        try:
            mode = resolved.stat().st_mode
        except OSError as err:
            self.fail("aws.key_path", f"{resolved}: {err.strerror}")
            return
        if not stat.S_ISREG(mode):
            self.fail("aws.key_path", f"{resolved} is not a file")
        elif mode & 0o077:
            self.fail(
                "aws.key_path",
                f"{resolved} can be read by other users (mode {stat.S_IMODE(mode):04o}); run chmod 600 on it",
            )
        aws["key_path"] = str(resolved)

    def _check_prices(self, aws: dict) -> None:
        prices = aws["instance_price_per_hour"]
        if prices is None:
            return
        checked = {}
        for instance_type, price in prices.items():
            where = f"aws.instance_price_per_hour.{instance_type}"
            if not _FITS["str"](instance_type):
                self.fail(where, "an instance type must be a non-empty string, e.g. t3.micro: 0.0104")
            elif not _FITS["number"](price) or price <= 0:
                self.fail(where, f"must be a price per hour greater than 0, not {price!r}")
            else:
                checked[instance_type] = float(price)
        aws["instance_price_per_hour"] = checked
        types = [aws["instance_type"]] if isinstance(aws["instance_type"], str) else aws["instance_type"] or []
        unpriced = [name for name in types if name not in checked]
        if aws["budget"] is not None and unpriced:
            self.fail(
                "aws.instance_price_per_hour",
                f"has no price for {', '.join(unpriced)}: with a price table, aws.budget is money, and every "
                "type of aws.instance_type needs its price (or remove the table to count the budget in instance-hours)",
            )

    def _event_commands(self, given: dict | None) -> dict[str, tuple[str, ...]]:
        event_commands: dict[str, tuple[str, ...]] = {}
        for name, commands in (given or {}).items():
            # Messages name the YAML field, which keeps the seed's name "hooks".
            where = f"aws.{EVENT_COMMANDS_KEY}.{name}"
            canonical = EVENT_COMMAND_ALIASES.get(name, name)
            if canonical not in EVENT_COMMAND_NAMES:
                close = difflib.get_close_matches(str(name), [*EVENT_COMMAND_NAMES, *EVENT_COMMAND_ALIASES], n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.fail(where, f"unknown hook{hint}; hooks are " + ", ".join(EVENT_COMMAND_NAMES))
                continue
            if canonical in event_commands:
                self.fail(where, f"{canonical} is given twice (under its alias too)")
                continue
            if isinstance(commands, str):
                commands = [commands]
            if not (
                isinstance(commands, list) and commands and all(isinstance(c, str) and c.strip() for c in commands)
            ):
                self.fail(where, f"must be a command or a list of commands, not {commands!r}")
                continue
            event_commands[canonical] = tuple(commands)
        return event_commands


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", bool: "a boolean", str: "a string"}.get(
        type(value), type(value).__name__
    )
