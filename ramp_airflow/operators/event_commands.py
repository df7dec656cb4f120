"""Run an event's commands for one moment of a training (``start_training``, ``successful_training``, ``failed_training``).

The config lists them under ``aws.hooks``, as the seed does; in the code they are "event commands",
so that "hook" only ever means an Airflow hook.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowSkipException, BaseOperator
from airflow.providers.standard.hooks.subprocess import SubprocessHook

from ramp_airflow.utils.event_commands import event_command_environment
from ramp_airflow.utils.layout import local_log_dir

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context


class RunEventCommandsOperator(BaseOperator):
    """
    Run an event's commands for one moment, in order on the Airflow side, stopping at the first that fails.

    A failing command fails this task only: it runs after the submission's result is recorded
    and never changes it.

    :param moment: the moment, e.g. ``successful_training`` (the config's ``aws.hooks.<name>``).
    :param commands: its shell commands, from the event config.
    :param submission: the submission (``id``, ``name``, ``team``, ``event``), as the claim
        task returns it (templated).
    :param local_log_folder: the event's ``local_log_folder``; the submission's folder in it
        is ``RAMP_AWS_SUBMISSION_FOLDER`` and the commands' working directory.
    :param only_if_state: run only when the recorded state (templated) equals this one;
        otherwise the task is skipped.
    :param recorded_state: the state the submission was recorded in (templated).
    """

    template_fields: Sequence[str] = ("submission", "recorded_state")
    ui_color = "#e8f0d8"

    def __init__(
        self,
        *,
        moment: str,
        commands: Sequence[str],
        submission: Any,
        local_log_folder: str,
        only_if_state: str | None = None,
        recorded_state: Any = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.moment = moment
        self.commands = list(commands)
        self.submission = submission
        self.local_log_folder = local_log_folder
        self.only_if_state = only_if_state
        self.recorded_state = recorded_state

    def execute(self, context: Context) -> None:
        if self.only_if_state is not None and self.recorded_state != self.only_if_state:
            raise AirflowSkipException(
                f"{self.moment} runs for submissions recorded as {self.only_if_state}, not {self.recorded_state}"
            )
        folder = local_log_dir(self.local_log_folder, int(self.submission["id"]))
        env = event_command_environment(self.moment, self.submission, folder)
        # The commands run in the submission's log folder once it exists (it does after the download).
        run_event_commands(self.moment, self.commands, env, folder if os.path.isdir(folder) else None)


def run_event_commands(moment: str, commands: Sequence[str], env: dict[str, str], cwd: str | None) -> None:
    """
    Run one moment's commands in order with ``bash -c``, stopping at the first that fails.

    :raises AirflowException: naming the moment's config field and the command that failed
    """
    hook = SubprocessHook()
    for number, command in enumerate(commands, start=1):
        result = hook.run_command(["bash", "-c", command], env=env, cwd=cwd)
        if result.exit_code != 0:
            raise AirflowException(
                f"event command {moment} (aws.hooks.{moment}), command {number} of {len(commands)} exited with "
                f"{result.exit_code}: {command}"
            )
