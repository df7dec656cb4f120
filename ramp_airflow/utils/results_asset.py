"""
The Airflow Asset an event's recorded results update, and what each of its events carries.

Its URI is ``x-ramp://<event>/results``. Airflow 3.3 accepts any scheme, but looks a scheme up among the
installed providers' URI handlers, which imports every provider's asset module (boto3 among them) at
the first Asset a process creates: at each parse of the DAG files. A scheme that starts with ``x-`` is
Airflow's own way of saying "no handler": it is taken as it is, and nothing needs registering.
"""

from __future__ import annotations

import math
from typing import Any

from airflow.sdk import Asset

SCHEME = "x-ramp"


def results_asset(event_name: str) -> Asset:
    """
    The Asset a training run of the event updates when it records a result.

    :param event_name: the RAMP event (``ramp.event_name``, already validated).
    """
    return Asset(uri=f"{SCHEME}://{event_name}/results")


def results_extra(submission: dict[str, Any], state: str, official_score: dict[str, Any] | None) -> dict[str, Any]:
    """
    The extra of the asset event of one recorded result.

    :param submission: the submission as the RAMP database hook returns it (``id``, ``team``, ``name``).
    :param state: the state it was recorded in (``scored`` or ``training_error``).
    :param official_score: the event's official score of it (``name``, ``valid``, ``test``), or None.
    """
    if official_score is not None:
        # Scores come from the participant's training: a NaN or an infinity is not JSON, and would
        # fail the task that recorded them; it is given as null.
        official_score = {
            key: None if isinstance(value, float) and not math.isfinite(value) else value
            for key, value in official_score.items()
        }
    return {
        "submission_id": int(submission["id"]),
        "team": submission["team"],
        "name": submission["name"],
        "state": state,
        "official_score": official_score,
    }
