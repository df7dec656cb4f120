"""The environment an event command runs with (the later RAMP AWS backend's variables).

An event command is one of the shell commands the config lists under ``aws.hooks``; in the code
they are called event commands, so that "hook" only ever means an Airflow hook.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any


def event_command_environment(name: str, submission: Mapping[str, Any], submission_folder: str) -> dict[str, str]:
    """
    The worker's environment plus the ``RAMP_AWS_*`` variables describing the submission.

    Participant-chosen names reach the commands only as variables, never spliced into the
    command text, so a command that quotes its variables is safe from them.
    """
    env = dict(os.environ)
    env.update(
        RAMP_AWS_SUBMISSION_ID=str(submission["id"]),
        RAMP_AWS_SUBMISSION_NAME=str(submission["name"]),
        RAMP_AWS_EVENT=str(submission["event"]),
        RAMP_AWS_TEAM=str(submission["team"]),
        RAMP_AWS_HOOK=name,
        RAMP_AWS_SUBMISSION_FOLDER=submission_folder,
    )
    return env


def budget_command_environment(event_name: str, spent: float, budget: float, unit: str) -> dict[str, str]:
    """The worker's environment plus the ``RAMP_AWS_*`` variables of a ``budget_exhausted`` command."""
    env = dict(os.environ)
    env.update(
        RAMP_AWS_EVENT=event_name,
        RAMP_AWS_HOOK="budget_exhausted",
        RAMP_AWS_BUDGET=f"{budget:g}",
        RAMP_AWS_BUDGET_SPENT=f"{spent:.2f}",
        RAMP_AWS_BUDGET_UNIT=unit,
    )
    return env
