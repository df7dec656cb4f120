"""The conf of one training run: which submission to train, optionally on which instance, and whether again."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")
_FIELDS = ("submission_id", "team", "name", "instance_id", "retrain")


class RunConfError(ValueError):
    """A training run's conf that names no submission, or names one in a wrong way."""


@dataclass(frozen=True)
class SubmissionRequest:
    """What a run was asked to train: by id, or by team and submission name."""

    submission_id: int | None
    team: str | None
    name: str | None
    instance_id: str | None
    retrain: bool = False

    def describe(self) -> str:
        if self.submission_id is not None:
            return f"submission {self.submission_id}"
        return f"submission {self.name!r} of team {self.team!r}"


def parse_run_conf(conf: Mapping[str, Any]) -> SubmissionRequest:
    """Validate a run's conf; raise :class:`RunConfError` naming the field at fault."""
    if not isinstance(conf, Mapping):
        raise RunConfError(f"the run's conf must be a JSON object, not {conf!r}")
    for key in conf:
        if key not in _FIELDS:
            close = difflib.get_close_matches(str(key), _FIELDS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise RunConfError(f"conf.{key}: unknown field{hint}; a run takes " + ", ".join(_FIELDS))
    submission_id = conf.get("submission_id")
    team, name = conf.get("team"), conf.get("name")
    instance_id = conf.get("instance_id")
    if submission_id is not None and (isinstance(submission_id, bool) or not isinstance(submission_id, int)):
        raise RunConfError(f"conf.submission_id must be a whole number, not {submission_id!r}")
    if submission_id is not None and submission_id <= 0:
        raise RunConfError(f"conf.submission_id must be positive, not {submission_id}")
    for field, value in (("team", team), ("name", name)):
        if value is not None and not (isinstance(value, str) and value):
            raise RunConfError(f"conf.{field} must be a non-empty string, not {value!r}")
    if submission_id is not None and (team is not None or name is not None):
        raise RunConfError("give either conf.submission_id, or conf.team and conf.name, not both")
    if submission_id is None and (team is None or name is None):
        missing = "conf.team" if team is None and name is not None else "conf.name" if team is not None else None
        if missing:
            raise RunConfError(f"{missing} is missing: conf.team and conf.name go together")
        raise RunConfError("name the submission: give conf.submission_id, or conf.team and conf.name")
    if instance_id is not None and not (isinstance(instance_id, str) and _INSTANCE_ID.match(instance_id)):
        raise RunConfError(f"conf.instance_id must be an EC2 instance id like i-0123456789abcdef0, not {instance_id!r}")
    retrain = conf.get("retrain")
    if retrain is not None and not isinstance(retrain, bool):
        raise RunConfError(f"conf.retrain must be true or false, not {retrain!r}")
    return SubmissionRequest(submission_id, team, name, instance_id, bool(retrain))
