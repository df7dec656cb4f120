"""
The per-event housekeeping DAG: on its own schedule, whether the loop runs or not, it sets right the
claims that no live run owns, stops the instances whose run lost its claim, and terminates the event's
orphan instances.
"""

from __future__ import annotations

import datetime

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG

from ramp_airflow.config import EventConfig
from ramp_airflow.dag_factory import bounds
from ramp_airflow.dag_factory.arguments import aws_credentials, dag_arguments, database_arguments
from ramp_airflow.operators.claims import ReconcileClaimsOperator, StopDisownedInstancesOperator
from ramp_airflow.operators.terminations import SweepOrphanInstancesOperator
from ramp_airflow.utils.dag_ids import housekeeping_dag_id, training_dag_id
from ramp_airflow.utils.layout import cost_ledger_file


def build_housekeeping_dag(config: EventConfig) -> DAG:
    """Build ``ramp_housekeeping_<event>``, which runs every ``aws.orphan_sweep_interval_secs``."""
    aws = config.aws
    ledger = cost_ledger_file(aws.local_log_folder, config.event_name)
    with DAG(
        dag_id=housekeeping_dag_id(config.event_name),
        description=f"Set right RAMP event {config.event_name}'s claims and instances that no run owns",
        schedule=datetime.timedelta(seconds=aws.orphan_sweep_interval_secs),
        max_active_runs=1,
        default_args=bounds.RETRIES,
        # It only acts on what ramp-airflow started, and must run even for an event trained by hand.
        is_paused_upon_creation=False,
        **dag_arguments(config, __doc__),
    ) as dag:
        reconcile_claims(config)
        StopDisownedInstancesOperator(
            task_id="stop_disowned_instances",
            aws_credentials=aws_credentials(config),
            ledger_path=ledger,
            execution_timeout=bounds.EC2_CALLS,
            **database_arguments(config),
        )
        SweepOrphanInstancesOperator(
            task_id="sweep_orphan_instances",
            event_name=config.event_name,
            grace_period_secs=aws.orphan_grace_period_secs,
            aws_credentials=aws_credentials(config),
            ledger_path=ledger,
            execution_timeout=bounds.EC2_CALLS,
        )
    return dag


def reconcile_claims(config: EventConfig) -> ReconcileClaimsOperator:
    """The task that sets right the claims no live run owns, and the one that starts their missing runs."""
    reconcile = ReconcileClaimsOperator(
        task_id="reconcile_claims", execution_timeout=bounds.DATABASE_STEP, **database_arguments(config)
    )
    trigger_training(config, "restart_training").expand_kwargs(reconcile.output)
    return reconcile


def trigger_training(config: EventConfig, task_id: str):
    """A mapped trigger of training runs, one per ``{"trigger_run_id", "conf"}``."""
    # A claim's run id is its own: a run that exists already is the claim's, and is not started twice.
    return TriggerDagRunOperator.partial(
        task_id=task_id,
        trigger_dag_id=training_dag_id(config.event_name),
        skip_when_already_exists=True,
        execution_timeout=bounds.DATABASE_STEP,
    )
