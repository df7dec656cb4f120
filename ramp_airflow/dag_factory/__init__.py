"""Build every event's DAGs from a directory of event config files."""

from __future__ import annotations

import contextlib
from pathlib import Path

from airflow.sdk import DAG

from ramp_airflow.config import ConfigError, load_config
from ramp_airflow.dag_factory.housekeeping import build_housekeeping_dag
from ramp_airflow.dag_factory.loop import build_loop_dag
from ramp_airflow.dag_factory.training import build_training_dag
from ramp_airflow.utils.dag_ids import housekeeping_dag_id, loop_dag_id, training_dag_id

__all__ = [
    "build_housekeeping_dag",
    "build_loop_dag",
    "build_training_dag",
    "config_files",
    "dags_from_configs",
    "event_dags",
    "housekeeping_dag_id",
    "loop_dag_id",
    "training_dag_id",
]

CONFIG_ERRORS_DAG_ID = "ramp_config_errors"


class _ConfigErrorsDag(DAG):
    """
    Stands for the events whose config is broken, so that Airflow reports them as an import error.

    Airflow records a DAG that fails validation as an import error of its DAG file while keeping
    the file's other DAGs, which is what a broken config must do: name its file and fields and
    leave the other events running.
    """

    def validate(self):
        raise ConfigError(self.problems)


def config_files(location: str | Path) -> list[Path]:
    """The ``*.yml`` and ``*.yaml`` files of a directory, sorted; a file is taken as it is."""
    location = Path(location)
    if location.is_file():
        return [location]
    return sorted(p for p in location.iterdir() if p.suffix in (".yml", ".yaml") and p.is_file())


_BUILDERS = (
    (training_dag_id, build_training_dag),
    (loop_dag_id, build_loop_dag),
    (housekeeping_dag_id, build_housekeeping_dag),
)


def event_dags(config_path: str | Path, only: str | None = None) -> dict[str, DAG]:
    """
    The training, loop and housekeeping DAG of one event config, by DAG id; with ``only``, just the
    DAG of that id (none when the config makes no such DAG).
    """
    config = load_config(config_path)
    builders = {name(config.event_name): build for name, build in _BUILDERS}
    return {dag_id: build(config) for dag_id, build in builders.items() if only is None or dag_id == only}


def dags_from_configs(location: str | Path | None, only: str | None = None) -> dict[str, DAG]:
    """
    Every event's DAGs from a directory of configs (or one file), broken configs reported.

    With ``only``, the DAG a task runs (Airflow's parsing context), that DAG alone when a valid
    config makes it: a task's start then builds one DAG, not every event's three (0.1 s of CPU less
    per task start with 20 events, 0.44 s with 100: benchmarks/parse_time.py). Otherwise,
    everything, as the DAG processor needs it.
    """
    if not location:
        return {}
    if only:
        for path in config_files(location):
            with contextlib.suppress(ConfigError):  # another event's broken config: not this task's
                if found := event_dags(path, only):
                    return found
    dags: dict[str, DAG] = {}
    problems = []
    for path in config_files(location):
        try:
            dags.update(event_dags(path))
        except ConfigError as err:
            problems.extend(err.problems)
    if problems:
        broken = _ConfigErrorsDag(dag_id=CONFIG_ERRORS_DAG_ID, schedule=None)
        broken.problems = problems
        dags[broken.dag_id] = broken
    return dags
