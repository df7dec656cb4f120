"""
Participants' attacks through whole training runs: real ``ramp-test`` on the real sshd, real Airflow.

Each submission below is a participant's attack. Whatever it does, its run must end within its bound
with the submission's own ``training_error``, its instance terminated, nothing linked or special
created on the Airflow side, local files and task logs under their caps, and the secret it reaches
for (the event config, holding the RAMP database's password) nowhere: not in the RAMP database, not
in Airflow's (XCom, rendered fields, trigger rows), not in the task logs, not in the local folders.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import time

import pytest

from testbench.event_config import write_event_config
from testbench.training_runs import instances_of, task_states

# ramp-workflow refuses a submission that says ``open``: pathlib and os write as well. Each runs in
# the kit folder on the instance, as ramp-test imports the estimator for the first fold.
HEADER = """import os, pathlib, sys
from sklearn.ensemble import RandomForestClassifier

here = pathlib.Path("submissions", "{folder}")
output = here / "training_output"
"""
FOOTER = """

def get_estimator():
    return RandomForestClassifier(n_estimators=2)
"""
ATTACKS = {
    # Links to the Airflow side's config in place of the log, the memory profile and an output file;
    # a pipe among the outputs; then a failure, so that the log would become the error message.
    "links and pipes": """
(here / "log").unlink()
(here / "log").symlink_to("{config}")
(here / "mprof.dat").unlink(missing_ok=True)
(here / "mprof.dat").symlink_to("{config}")
(output / "fold_0").mkdir(parents=True, exist_ok=True)
(output / "fold_0" / "scores.csv").symlink_to("{config}")
os.mkfifo(output / "pipe")
raise ValueError("links and pipes")
""",
    # Colour codes, NUL bytes, invalid UTF-8 and a 300 KB line, then 42 MB of log over 14 s (each
    # poll brings back a chunk of the log, so a flood must last to reach the live log's cap), then a failure.
    "log flood": """
import time
out = sys.stdout.buffer
out.write(b"\\x1b[31mred\\x1b[0m nul:\\x00 bad utf-8:\\xff\\xfe bell:\\x07\\n")
out.write(b"L" * 300_000 + b"\\n")
line = b"flood \\x1b[1mbold\\x1b[0m \\x00" + b"x" * 1000 + b"\\n"
for second in range(14):
    for _ in range(3_000_000 // len(line)):
        out.write(line)
    out.flush()
    time.sleep(1)
raise ValueError("flooded, then failed")
""",
    # A far-future start time in the job's own record, a named pipe in place of the log (a reader of
    # it would block), and a training that never ends.
    "forged start, never ends": """
(here / "training_job" / "started_at").write_text("99999999999.0")
(here / "log").unlink()
os.mkfifo(here / "log")
import time
time.sleep(3600)
""",
    # A 1 GiB sparse log and a 1 GiB sparse output file: 2 GiB once written on the Airflow side.
    "sparse giants": """
output.mkdir(exist_ok=True)
(output / "huge.bin").write_bytes(b"")
os.truncate(output / "huge.bin", 1 << 30)
os.truncate(here / "log", 1 << 30)
""",
}
# What the organiser's config says for each attack (the rest is the bench's), and what the
# submission's error message must then say.
LIMITS = {
    "links and pipes": ({}, "ValueError: links and pipes"),
    "log flood": ({}, "ValueError: flooded, then failed"),
    "forged start, never ends": ({"training_timeout_secs": 20}, "exceeded the event's training_timeout_secs"),
    "sparse giants": ({"max_output_mb": 64}, "more than 64 MiB, the event's limit (max_output_mb)"),
}
# The live log's cap (8 MiB), Airflow's prefix of each of its lines, and the tasks' own lines.
TASK_LOG_MAX_BYTES = 12 << 20


def text_holding(connection, needle: str) -> list[str]:
    """The tables of a database in which some row's text holds ``needle``."""
    with connection.cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        tables = [name for (name,) in cur.fetchall()]
        found = []
        for table in tables:
            cur.execute(f'SELECT count(*) FROM "{table}" t WHERE strpos(t::text, %s) > 0', (needle,))
            if cur.fetchone()[0]:
                found.append(table)
    return found


def read_head(path, max_bytes: int = 64 << 20) -> bytes:
    with open(path, "rb") as file:
        return file.read(max_bytes)


def files_under(*folders) -> list[str]:
    return [os.path.join(root, name) for top in folders for root, dirs, files in os.walk(top) for name in dirs + files]


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_hostile_submission_spoils_only_its_own_result(
    attack, tmp_path, fresh_ramp_db, instance, ec2, airflow_home, postgres, monkeypatch, capfd
):
    from ramp_airflow.dag_factory import event_dags

    db = fresh_ramp_db
    submission_id = db.submissions["random_forest"]
    folder = f"submission_{submission_id:09d}"
    overrides, message = LIMITS[attack]
    # The organiser's AWS secret key (moto takes any): unlike the database password, which the bench's
    # Airflow shares, it is this config's alone, so it can be looked for everywhere.
    secret = secrets.token_hex(16)
    config = write_event_config(
        tmp_path / "config.yml", db, instance, ec2, access_key_id="AKIABENCH", secret_access_key=secret, **overrides
    )
    password = db.sqlalchemy_config["password"]
    # This test's own copy of the submissions, the participant's estimator in place.
    submissions = tmp_path / "submissions"
    shutil.copytree(db.submissions_dir, submissions)
    os.chmod(tmp_path, 0o755)
    code = HEADER + ATTACKS[attack] + FOOTER
    (submissions / folder / "estimator.py").write_text(code.format(folder=folder, config=config))
    db.query("UPDATE events SET path_ramp_submissions = %s WHERE name = %s", (str(submissions), db.event))
    on_instance = os.path.join(instance.kit_dir, "submissions", folder)
    instance.kill_training(submission_id)  # an earlier test's job there, if any
    shutil.rmtree(on_instance, ignore_errors=True)  # and its files
    monkeypatch.setenv("RAMP_AIRFLOW_CONFIG_DIR", str(config))
    training = event_dags(config)[f"ramp_train_{db.event}"]
    earlier = instances_of(ec2, submission_id)

    began = time.monotonic()
    try:
        dag_run = training.test(run_conf={"submission_id": submission_id})
    finally:
        shutil.rmtree(on_instance, ignore_errors=True)
    took = time.monotonic() - began
    task_output = "".join(capfd.readouterr())

    states = task_states(dag_run)
    assert dag_run.state == "success", states
    ((state, error_msg),) = db.query("SELECT state, error_msg FROM submissions WHERE id = %s", (submission_id,))
    assert state == "training_error" and message in error_msg, (state, error_msg[-2000:])
    assert len(error_msg) < 21_000 and not any(c in error_msg for c in "\x00\x1b\x07")
    assert took < 300, f"the run took {took:.0f} s"
    assert list(instances_of(ec2, submission_id, earlier).values()) == ["terminated"]

    local = files_under(tmp_path / "predictions", tmp_path / "logs")
    modes = [os.lstat(path).st_mode for path in local]
    assert all(stat.S_ISREG(mode) or stat.S_ISDIR(mode) for mode in modes), local
    assert sum(os.lstat(path).st_blocks * 512 for path in local) < 64 << 20
    assert len(task_output.encode()) < TASK_LOG_MAX_BYTES
    assert not any(raw in task_output for raw in ("\x00", "\x1b[31mred", "\x1b[1mbold", "\x07"))

    for needle in (secret, password):
        assert needle not in task_output
        assert not [path for path in local if os.path.isfile(path) and needle.encode() in read_head(path)]
        for database in (db.dbname, "airflow"):
            connection = postgres.connect(database)
            try:
                assert text_holding(connection, needle) == [], database
            finally:
                connection.close()
    # The bench's Airflow uses the database password itself: only the AWS key is looked for here.
    assert not [
        path for path in files_under(airflow_home.home) if os.path.isfile(path) and secret.encode() in read_head(path)
    ]
