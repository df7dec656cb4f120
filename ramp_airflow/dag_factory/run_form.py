"""
The trigger form of the training DAG: its DAG-level params, and how to give them to the DAG.

A training run is started with either ``submission_id`` or ``team`` and ``name`` (and optionally
``instance_id`` and ``retrain``); every field may be null so that either form of the conf validates.

Why the params are attached with :func:`add_run_form` once the tasks exist, and not passed as
``DAG(params=...)``: Airflow 3.3 copies a DAG's params onto every task created in it
(``airflow.sdk.bases.operator._get_parent_defaults``), and serializing a task then resolves
those copies several times (``ParamsDict.__eq__`` / ``__repr__`` -> ``ParamsDict.dump`` ->
``Param.resolve`` -> ``jsonschema.validate``, which checks the schema against the 2020-12
metaschema on every call). With ~22 tasks per DAG that was ~90 % of the DAG file's serialize time.
The copies are redundant: the trigger form is built from the DAG's own params, and a running task
gets ``dag.params`` merged with its own params and the run's conf
(``airflow.sdk.definitions.param.process_params``), so tasks without copies see the same
``params``. No schema spelling makes the copies cheap enough (an older ``$schema`` or fewer
keywords saves at most a third), hence fewer copies instead.
"""

from __future__ import annotations

import copy

from airflow.sdk import DAG, Param

TRAINING_RUN_PARAMS = {
    "submission_id": Param(
        None,
        # No minimum: Airflow's number field would silently turn a negative id into it (training
        # submission 1); the claim task refuses a non-positive id instead, naming the field.
        type=["null", "integer"],
        title="Submission id",
        description="The submission to train (submissions.id). Or leave empty and give team and name.",
    ),
    "team": Param(None, type=["null", "string"], title="Team", description="The submission's team, with its name."),
    "name": Param(
        None, type=["null", "string"], maxLength=20, title="Submission name", description="The submission's name."
    ),
    "instance_id": Param(
        None,
        type=["null", "string"],
        title="Existing instance id",
        description="Train on this running EC2 instance (i-...) instead of launching one; it is left running.",
    ),
    "retrain": Param(
        False,
        type=["null", "boolean"],
        title="Train again",
        description=(
            "Train a submission that was trained already (scored, training_error or checking_error) again, "
            "in this run: its new result replaces the old one. Without it, such a submission is refused."
        ),
    ),
}


def add_run_form(dag: DAG) -> DAG:
    """
    Give ``dag`` the training run form, as its DAG-level params; call it after its tasks are created.

    Tasks created before this carry no copy of the params (see the module docstring). Each DAG gets
    its own Param objects, since resolving a run's conf assigns to them.
    """
    # Assigning goes through DAG's attrs converter and validator, as DAG(params=...) does.
    dag.params = copy.deepcopy(TRAINING_RUN_PARAMS)
    return dag
