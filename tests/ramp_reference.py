"""ramp-board's own way of storing and reading results, for the reference comparison.

Runs in the RAMP virtualenv (/opt/ramp-airflow/ramp-venv/bin/python -I), where ramp-database
0.10.1 lives with numpy 1.26. Input: one JSON object on stdin; output: one JSON line.

- ``{"action": "record", "sqlalchemy": {...}, "submission_id": 1, "training_output": path,
  "success": true, "error_msg": "", "max_ram": 123.0}`` drives ramp-database's setters in the
  order ramp-engine's dispatcher does (fetch_from_db, launch_workers, collect_result,
  update_database_results), plus ``set_submission_max_ram`` which the AWS backend adds.
- ``{"action": "read", "sqlalchemy": {...}, "submission_id": 1}`` returns what
  ramp-database's readers see: states, times, fold scores, bagged scores, max_ram, error_msg.
"""

import json
import logging
import math
import sys


def record(session, args):
    from ramp_database.tools import submission as tools

    sub_id = args["submission_id"]
    tools.set_submission_state(session, sub_id, "sent_to_training")
    tools.get_submission_by_id(session, sub_id).queue_position = 1  # _set_queue_position
    session.commit()
    tools.set_submission_state(session, sub_id, "training")
    tools.get_submission_by_id(session, sub_id).queue_position = -1
    session.commit()
    tools.set_submission_state(session, sub_id, "tested" if args["success"] else "training_error")
    tools.set_submission_error_msg(session, sub_id, args["error_msg"])
    if args["max_ram"] is not None:
        tools.set_submission_max_ram(session, sub_id, args["max_ram"])
    if args["success"]:
        path = args["training_output"]
        tools.set_time(session, sub_id, path)
        tools.set_scores(session, sub_id, path)
        tools.set_bagged_scores(session, sub_id, path)
        tools.set_submission_state(session, sub_id, "scored")
    return {"recorded": sub_id}


def _plain(value):
    """JSON-safe and comparable: NaN as the string 'nan', numpy scalars as Python numbers."""
    value = value.item() if hasattr(value, "item") else value
    return "nan" if isinstance(value, float) and math.isnan(value) else value


def _frame(df):
    return [{k: _plain(v) for k, v in row.items()} for row in df.reset_index().to_dict(orient="records")]


def read(session, args):
    from ramp_database.model import SubmissionOnCVFold
    from ramp_database.tools import submission as tools

    sub_id = args["submission_id"]
    sub = tools.get_submission_by_id(session, sub_id)
    folds = session.query(SubmissionOnCVFold).filter_by(submission_id=sub_id).order_by(SubmissionOnCVFold.id)
    bags = {}
    for score in sub.scores:
        for step in ("valid", "test"):
            array = getattr(score, f"{step}_score_cv_bags")
            values = array.tolist()  # None (a 0-d object array) until scored
            bags[f"{score.score_name}/{step}"] = {
                "dtype": str(array.dtype),
                "shape": list(array.shape),
                "values": [_plain(v) for v in values] if isinstance(values, list) else values,
                "last": _plain(getattr(score, f"{step}_score_cv_bag")),
            }
    return {
        "state": tools.get_submission_state(session, sub_id),
        "fold_states": [f.state for f in folds],
        "fold_error_msgs": [f.error_msg for f in folds],
        "queue_position": sub.queue_position,
        "stamped": [sub.sent_to_training_timestamp is not None, sub.training_timestamp is not None],
        "error_msg": tools.get_submission_error_msg(session, sub_id),
        "max_ram": _plain(tools.get_submission_max_ram(session, sub_id)),
        "times": _frame(tools.get_time(session, sub_id)),
        "scores": _frame(tools.get_scores(session, sub_id)),
        # ramp-database's reader fails on the 0-d arrays of a submission never scored.
        "bagged_scores": _frame(tools.get_bagged_scores(session, sub_id)) if sub.state == "scored" else None,
        "cv_bags": bags,
        "time_cv": [
            _plain(getattr(sub, f"{s}_time_cv_{m}")) for s in ("train", "valid", "test") for m in ("mean", "std")
        ],
    }


def main():
    logging.disable(logging.INFO)
    from ramp_database.utils import session_scope

    args = json.load(sys.stdin)
    action = {"record": record, "read": read}[args["action"]]
    with session_scope(args["sqlalchemy"]) as session:
        out = action(session, args)
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
