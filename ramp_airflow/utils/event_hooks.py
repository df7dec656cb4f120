"""The environment an event hook command runs with (the later RAMP AWS backend's variables)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any


def hook_environment(hook_name: str, submission: Mapping[str, Any], submission_folder: str) -> dict[str, str]:
    """
    The worker's environment plus the ``RAMP_AWS_*`` variables describing the submission.

    Participant-chosen names reach hook commands only as variables, never spliced into the
    command text, so a hook that quotes its variables is safe from them.
    """
    env = dict(os.environ)
    env.update(
        RAMP_AWS_SUBMISSION_ID=str(submission["id"]),
        RAMP_AWS_SUBMISSION_NAME=str(submission["name"]),
        RAMP_AWS_EVENT=str(submission["event"]),
        RAMP_AWS_TEAM=str(submission["team"]),
        RAMP_AWS_HOOK=hook_name,
        RAMP_AWS_SUBMISSION_FOLDER=submission_folder,
    )
    return env
