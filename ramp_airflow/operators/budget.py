"""Report the event's budget in the loop: how much is spent, and once it is, the ``budget_exhausted`` commands."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import BaseOperator

from ramp_airflow.config import load_config
from ramp_airflow.operators.event_commands import run_event_commands
from ramp_airflow.utils.budget import budget_use
from ramp_airflow.utils.event_commands import budget_command_environment
from ramp_airflow.utils.layout import budget_exhausted_marker

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context


class ReportBudgetOperator(BaseOperator):
    """
    Log how much of the event's budget (``aws.budget``) the cost ledger says is spent; once it is all
    spent, say that the loop claims nothing more and run the event's ``budget_exhausted`` commands.

    The commands run once each time the budget runs out: a marker file in the log folder remembers
    it until the budget has room again (the organiser raised it). The loop's wait itself holds the
    claims (see :class:`~ramp_airflow.triggers.new_submissions.NewSubmissionsTrigger`).

    :param config_path: the event config, read afresh at each run, so that a raised budget counts at once
    """

    ui_color = "#f3e3c3"

    def __init__(self, *, config_path: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config_path = config_path

    def execute(self, context: Context) -> None:
        config = load_config(self.config_path)
        use = budget_use(config)
        if use is None:
            self.log.info("Event %s has no budget (aws.budget)", config.event_name)
            return
        marker = budget_exhausted_marker(config.aws.local_log_folder, config.event_name)
        if not use.exhausted:
            self.log.info("Budget of event %s: %s", config.event_name, use)
            with contextlib.suppress(FileNotFoundError):
                os.remove(marker)
            return
        self.log.warning(
            "The budget of event %s is spent (%s): the loop claims no new submission until aws.budget is raised; "
            "the trainings under way finish",
            config.event_name,
            use,
        )
        commands = config.event_commands.get("budget_exhausted")
        if not commands or os.path.exists(marker):
            return
        env = budget_command_environment(config.event_name, use.spent, use.budget, use.unit)
        run_event_commands("budget_exhausted", commands, env, config.aws.local_log_folder)
        with open(marker, "w") as file:
            file.write(f"{use}\n")
