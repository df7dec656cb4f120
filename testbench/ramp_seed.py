"""Create and seed a RAMP database with ramp-database 0.10.1 itself.

Runs inside the RAMP virtualenv (/opt/ramp-airflow/ramp-venv/bin/python), not
in the project's: ramp-database needs SQLAlchemy 1.4 and numpy<2, Airflow 3
needs the opposite. Using the real package (its ``Model.metadata`` and its
``add_problem``/``add_event``/``add_submission`` tools) makes the bench schema and
rows exactly what a RAMP server would have.

Input: a JSON object on stdin with ``sqlalchemy`` (the RAMP config section),
``kit_dir`` (the bench kit to copy) and ``work_dir`` (an empty folder that will
hold the platform's kit, data and ``path_ramp_submissions``). Output: one JSON
summary line on stdout.
"""

import json
import logging
import os
import shutil
import subprocess
import sys

EVENT, PROBLEM, SANDBOX = "iris_test", "iris", "starting_kit"
TEAMS = ["test_user", "test_user_2"]
# (team, submission name, source folder in the kit), oldest first.
SUBMISSIONS = [
    ("test_user", "random_forest", "random_forest"),
    ("test_user", "error_in_fit", "error_in_fit"),
    ("test_user_2", "x;touch PWNED$(id)", "random_forest"),
]


def _platform_dirs(kit_src, work_dir):
    """The platform side: ramp-kits/iris, ramp-data/iris (with data/), submissions."""
    kit_dir = os.path.join(work_dir, "ramp-kits", PROBLEM)
    data_dir = os.path.join(work_dir, "ramp-data", PROBLEM)
    subs_dir = os.path.join(work_dir, "submissions")
    shutil.copytree(kit_src, kit_dir, ignore=shutil.ignore_patterns("data", "training_output", "__pycache__"))
    os.makedirs(data_dir)
    subprocess.run([sys.executable, os.path.join(kit_dir, "prepare_data.py"), data_dir], check=True)
    os.makedirs(subs_dir)
    return kit_dir, data_dir, subs_dir


def seed(db_config, kit_src, work_dir):
    from ramp_database.model import Model, Submission
    from ramp_database.testing import setup_files_extension_type
    from ramp_database.tools.event import add_event, add_problem, get_event
    from ramp_database.tools.submission import add_submission
    from ramp_database.tools.team import sign_up_team
    from ramp_database.tools.user import add_user, approve_user
    from ramp_database.utils import session_scope, setup_db

    kit_dir, data_dir, subs_dir = _platform_dirs(kit_src, work_dir)
    db, _ = setup_db(db_config)
    Model.metadata.create_all(db)
    db.dispose()
    with session_scope(db_config) as session:
        setup_files_extension_type(session)
        add_problem(session, PROBLEM, kit_dir, data_dir)
        add_event(session, PROBLEM, EVENT, "Iris (ramp-airflow bench)", SANDBOX, subs_dir, is_public=True)
        for team in TEAMS:
            add_user(
                session,
                name=team,
                password="test",
                lastname="Bench",
                firstname=team,
                email=f"{team}@example.invalid",
                access_level="user",
            )
            approve_user(session, team)
            sign_up_team(session, EVENT, team)  # also submits the sandbox
        event = get_event(session, EVENT)
        # add_submission refuses quick resubmissions by non-admins; the seed
        # bypasses that limit the way ramp-database's submit_starting_kits does.
        min_duration = event.min_duration_between_submissions
        event.min_duration_between_submissions = 0
        session.commit()
        for team, name, src in SUBMISSIONS:
            add_submission(session, EVENT, team, name, os.path.join(kit_dir, "submissions", src))
        event = get_event(session, EVENT)
        event.min_duration_between_submissions = min_duration
        session.commit()
        rows = session.query(Submission).order_by(Submission.id).all()
        return {
            "event": EVENT,
            "problem": PROBLEM,
            "sandbox_name": SANDBOX,
            "submissions_dir": subs_dir,
            "ramp_kit_dir": kit_dir,
            "ramp_data_dir": data_dir,
            "teams": TEAMS,
            "n_cv_folds": len(event.cv_folds),
            "submissions": {s.name: s.id for s in rows if s.name != SANDBOX},
            "sandbox_ids": [s.id for s in rows if s.name == SANDBOX],
            "rows": [{"id": s.id, "name": s.name, "team": s.team.name, "state": s.state, "path": s.path} for s in rows],
        }


def main():
    logging.disable(logging.INFO)
    args = json.load(sys.stdin)
    summary = seed(args["sqlalchemy"], args["kit_dir"], args["work_dir"])
    sys.stdout.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
