"""The per-event loop DAG: wait for new submissions and claim them, start one training run for each."""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from ramp_airflow.config import EventConfig
from ramp_airflow.dag_factory import bounds
from ramp_airflow.dag_factory.arguments import dag_arguments
from ramp_airflow.dag_factory.housekeeping import reconcile_claims, trigger_training
from ramp_airflow.operators.budget import ReportBudgetOperator
from ramp_airflow.sensors.new_submissions import NewSubmissionsSensor
from ramp_airflow.utils.dag_ids import loop_dag_id

# How long a loop run waits for a new submission before making way for the next (and its reconciliation):
# a fixed time, not a number of polls, so that short polls do not restart tasks every few seconds.
LOOP_RUN_WAIT_SECS = 600


def build_loop_dag(config: EventConfig) -> DAG:
    """Build ``ramp_train_loop_<event>``: the seed's ``ramp_aws_train_loop`` as a scheduled DAG."""
    aws = config.aws
    interval = aws.train_loop_interval_secs
    with DAG(
        dag_id=loop_dag_id(config.event_name),
        description=f"Train every new submission of RAMP event {config.event_name}",
        schedule=datetime.timedelta(seconds=interval),
        max_active_runs=1,
        default_args=bounds.RETRIES,
        is_paused_upon_creation=True,
        **dag_arguments(config, __doc__),
    ) as dag:
        # Claims left without a live run: started, or set right, before new ones are made.
        reconcile = reconcile_claims(config)
        claim = NewSubmissionsSensor(
            task_id="wait_for_new_submissions",
            event_name=config.event_name,
            max_concurrent_instances=aws.max_concurrent_instances,
            max_concurrent_per_team=aws.max_concurrent_per_team,
            postgres_conn_id=config.database.postgres_conn_id,
            config_path=config.path,
            poke_interval=interval,
            timeout=max(LOOP_RUN_WAIT_SECS, 10 * interval),
            # A try that failed after its claims committed (killed, or the trigger's XCom lost) leaves
            # claims with no run: a retry would go back to waiting, while the loop's next run, one
            # interval away, starts their runs first.
            retries=0,
        )
        reconcile >> claim
        if aws.budget is not None:
            # Beside the wait, which holds the claims itself once the budget is spent.
            ReportBudgetOperator(
                task_id="report_budget",
                config_path=config.path,
                execution_timeout=bounds.EVENT_COMMANDS,
                # The organiser's commands may not be safe to run twice.
                retries=0,
            )
        trigger_training(config, "trigger_training").expand_kwargs(claim.output)
    return dag
