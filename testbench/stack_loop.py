"""Train the bench event's new submissions through a running Airflow stack's loop, whatever its executor."""

from __future__ import annotations

from ramp_airflow.utils.dag_ids import loop_dag_id, training_dag_id
from ramp_airflow.utils.submission_states import IN_FLIGHT, SCORED, TRAINED, TRAINING_ERROR
from testbench._proc import wait_until

# What the seeded submissions (testbench/ramp_seed.py) train to.
SEEDED_OUTCOMES = {"random_forest": SCORED, "error_in_fit": TRAINING_ERROR, "x;touch PWNED$(id)": SCORED}


def submission_states(db, ids) -> dict[int, str]:
    """Submission id -> its state in the RAMP database."""
    return dict(db.query("SELECT id, state FROM submissions WHERE id = ANY(%s)", (list(ids),)))


def in_flight(db) -> list[int]:
    """Ids of the submissions that the backend still owns (sent to training, or training)."""
    return [row[0] for row in db.query("SELECT id FROM submissions WHERE state = ANY(%s)", (list(IN_FLIGHT),))]


def train_new_submissions(stack, db, timeout: float = 300) -> tuple[dict[str, str], list[dict]]:
    """Unpause the event's training and loop DAGs; wait (bounded) until every new submission is trained.

    :param stack: a running :class:`testbench.airflow_stack.AirflowStack` whose config is ``db``'s event.
    :param db: the bench :class:`testbench.ramp_database.RampDatabase`.
    :param timeout: bound on the wait for the submissions, and on the wait for their runs after.
    :return: submission name -> final state, and the training DAG's runs, every one finished.
    """
    training = training_dag_id(db.event)
    stack.unpause(training)
    stack.unpause(loop_dag_id(db.event))
    ids = db.submissions.values()

    def all_trained():
        stack.check_alive()
        current = submission_states(db, ids)
        return current if set(current.values()) <= set(TRAINED) else None

    final = wait_until(all_trained, timeout, "every new submission to be scored or to fail", 2.0)

    def runs_done():
        runs = stack.dag_runs(training)
        return runs if runs and all(r["state"] in ("success", "failed") for r in runs) else None

    runs = wait_until(runs_done, timeout, "the training runs to finish", 1.0)
    return {name: final[i] for name, i in db.submissions.items()}, runs
