"""The run's values as a task's templates render them: text where a value was a number, "None" where none."""

from __future__ import annotations

from typing import Any

from ramp_airflow.utils import layout


def given(value: Any) -> Any:
    """``value``, or None when a template rendered a missing value (as the text "None", or empty)."""
    return None if value in (None, "", "None") else value


def submission_id_of(value: Any) -> int:
    """A (possibly templated, hence text) submission id as an int; ``ValueError`` naming it otherwise."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    layout.submission_folder(value)  # validates
    return value
