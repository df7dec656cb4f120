"""Train real submissions with the real ramp-test on the bench's sshd, end to end."""

from __future__ import annotations

import asyncio
import csv
import glob
import json
import os
import pathlib
import shutil
import subprocess
import time

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowSkipException, TaskDeferred
from airflow.triggers.base import TaskSkippedEvent, TaskSuccessEvent

from ramp_airflow.operators.training import FetchResultsOperator, RsyncTrainOperator
from ramp_airflow.sensors.instance import TrainingFinishedSensor
from ramp_airflow.triggers.training import TrainingFinishedTrigger
from ramp_airflow.utils.instance_login import InstanceLogin
from testbench._proc import pid_alive, wait_until
from testbench.instance import KIT_SRC
from testbench.triggers import RecordingTaskInstance, run_trigger

FOLDS = 2  # testbench/kit/problem.py
SLOW_ESTIMATOR = """import time
from sklearn.ensemble import RandomForestClassifier


def get_estimator():
    time.sleep({secs})  # long enough to restart sshd or time out meanwhile
    return RandomForestClassifier(n_estimators=2, random_state=0)
"""
_next_id = iter(range(4200, 5000))


@pytest.fixture
def submission(tmp_path, instance):
    """Copy a bench submission as ``submission_<id>``; return ``(id, submissions_path, remote_dir)``."""

    def make(name="random_forest", estimator=None, extra_files=(), sid=None):
        sid = sid or next(_next_id)
        dest = tmp_path / "submissions" / f"submission_{sid:09d}"
        shutil.copytree(os.path.join(KIT_SRC, "submissions", name), dest)
        if estimator is not None:
            (dest / "estimator.py").write_text(estimator)
        for file_name in extra_files:
            (dest / file_name).write_text("x = 1\n")
        os.chmod(tmp_path, 0o755)
        return sid, str(tmp_path / "submissions"), os.path.join(instance.kit_dir, "submissions", dest.name)

    return make


def login(instance) -> InstanceLogin:
    return InstanceLogin(
        ami_user_name=instance.user,
        key_path=instance.key_path,
        ssh_port=instance.port,
        remote_ramp_kit_folder=instance.remote_kit_folder,
    )


def start(instance, sid, path, context=None, **kwargs):
    op = RsyncTrainOperator(
        task_id="train",
        submission_id=sid,
        ramp_submissions_path=path,
        address=instance.host,
        login=login(instance),
        **kwargs,
    )
    return op.execute(context or {})


class TaskTry:
    """Stands in for the task instance of a context: which task of which run, which try."""

    def __init__(self, run_id="run", try_number=1):
        self.dag_id, self.run_id, self.task_id, self.map_index, self.try_number = "dag", run_id, "train", -1, try_number


def wait_sensor(instance, sid, host_key, **kwargs):
    """The training wait as the training DAG has it."""
    return TrainingFinishedSensor(
        task_id="wait",
        submission_id=sid,
        address=instance.host,
        host_key=host_key,
        login=login(instance),
        poke_interval=0.5,
        **{"instance_id": None, **kwargs},
    )


def watch(instance, sid, host_key, timeout=120, poll_interval=0.5, **kwargs):
    """Run the training trigger the sensor defers to; return its event's payload."""
    trigger = TrainingFinishedTrigger(
        submission_id=sid,
        address=instance.host,
        host_key=host_key,
        instance_id=kwargs.pop("instance_id", None),
        login=login(instance).to_dict(),
        aws={},
        poll_interval=poll_interval,
        **kwargs,
    )
    return run_trigger(trigger, timeout).payload


def fetch(instance, sid, host_key, tmp_path, **kwargs):
    op = FetchResultsOperator(
        task_id="fetch",
        submission_id=sid,
        address=instance.host,
        host_key=host_key,
        login=login(instance),
        expected_folds=FOLDS,
        local_predictions_folder=str(tmp_path / "predictions"),
        local_log_folder=str(tmp_path / "logs"),
        **kwargs,
    )
    return op.execute({})


def test_good_submission_trains_and_parses_as_written(instance, submission, tmp_path):
    sid, path, remote = submission()
    started = start(instance, sid, path)
    assert started["host_key"].split() == instance.known_hosts_line.split()[1:]
    assert watch(instance, sid, started["host_key"]) == {
        "status": "success",
        "result": {"outcome": "finished", "exit_code": 0},
    }
    result = fetch(instance, sid, started["host_key"], tmp_path)
    assert result["success"] is True and result["error_msg"] == "" and result["max_ram"] is None
    out = os.path.join(remote, "training_output")
    for i, fold in enumerate(result["folds"]):
        with open(os.path.join(out, f"fold_{i}", "scores.csv")) as f:
            rows = {row["step"]: row for row in csv.DictReader(f)}
        for step in ("train", "valid", "test"):
            assert fold["scores"][step] == {k: float(v) for k, v in rows[step].items() if k not in ("step", "time")}
            with open(os.path.join(out, f"fold_{i}", f"{step}_time")) as f:
                assert fold[f"{step}_time"] == float(f.read())
    with open(os.path.join(out, "bagged_scores.csv")) as f:
        bagged = list(csv.DictReader(f))
    for row in bagged:
        for name in ("acc", "error", "bal_acc"):
            assert result["bagged_scores"][row["step"]][name][int(row["n_bag"])] == float(row[name])
    assert os.path.isfile(tmp_path / "predictions" / f"submission_{sid:09d}" / "fold_1" / "y_pred_test.npz")
    assert "Bagged scores" in (tmp_path / "logs" / f"submission_{sid:09d}" / "log").read_text()


def test_failing_submission_gives_its_traceback(instance, submission, tmp_path):
    sid, path, _ = submission("error_in_fit")
    started = start(instance, sid, path)
    assert watch(instance, sid, started["host_key"])["result"] == {"outcome": "finished", "exit_code": 1}
    result = fetch(instance, sid, started["host_key"], tmp_path)
    assert result["success"] is False
    assert result["error_msg"].startswith("Traceback")
    assert "ValueError: error_in_fit: this submission fails on purpose" in result["error_msg"]


def test_memory_profiling_gives_max_ram(instance, submission, tmp_path):
    sid, path, _ = submission()
    started = start(instance, sid, path, memory_profiling=True)
    assert watch(instance, sid, started["host_key"])["result"]["outcome"] == "finished"
    result = fetch(instance, sid, started["host_key"], tmp_path)
    assert result["success"] is True
    assert result["max_ram"] > 0


def read_pid(remote):
    with open(os.path.join(remote, "training_job", "pid")) as f:
        return int(f.read())


def test_sshd_restart_during_training_is_survived(instance, submission, tmp_path):
    sid, path, remote = submission(estimator=SLOW_ESTIMATOR.format(secs=6))
    started = start(instance, sid, path)

    async def restart_then_watch():
        loop = asyncio.get_running_loop()
        watcher = asyncio.ensure_future(loop.run_in_executor(None, watch, instance, sid, started["host_key"]))
        await asyncio.sleep(1.5)  # let the trigger poll at least once before the drop
        await loop.run_in_executor(None, instance.restart)
        return await watcher

    assert asyncio.run(restart_then_watch()) == {"status": "success", "result": {"outcome": "finished", "exit_code": 0}}
    assert fetch(instance, sid, started["host_key"], tmp_path)["success"] is True


def test_the_wait_defers_from_a_worker_and_resumes_with_the_outcome(instance, submission):
    """How dag.test() (ramp_aws_train) runs the wait: execute defers, the worker resumes with the event."""
    sid, path, _ = submission()
    started = start(instance, sid, path)
    sensor = wait_sensor(instance, sid, started["host_key"])
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    assert deferred.value.trigger.end_from_trigger is False
    event = run_trigger(deferred.value.trigger)
    assert sensor.execute_complete({}, event.payload) == {"outcome": "finished", "exit_code": 0}


def test_the_wait_starts_and_ends_in_the_triggerer(instance, submission, monkeypatch):
    """Started from the triggerer, the trigger gets the sensor's templates and ends the task itself."""
    sensor = wait_sensor(instance, "{{ ti.xcom_pull(task_ids='claim')['id'] }}", "{{ host_key }}")
    assert sensor.start_from_trigger is True
    kwargs = sensor.start_trigger_args.trigger_kwargs
    assert kwargs["submission_id"] == "{{ ti.xcom_pull(task_ids='claim')['id'] }}" and kwargs["end_from_trigger"]
    assert set(TrainingFinishedSensor.template_fields) <= set(kwargs)
    assert "secret" not in repr(kwargs)

    sid, path, _ = submission()
    started = start(instance, sid, path)
    # As the triggerer has it once it rendered the templates: strings.
    trigger = TrainingFinishedTrigger(**{**kwargs, "submission_id": str(sid), "host_key": started["host_key"]})
    trigger.task_instance = RecordingTaskInstance(monkeypatch)
    assert isinstance(run_trigger(trigger), TaskSuccessEvent)
    assert trigger.task_instance.xcoms == {"return_value": {"outcome": "finished", "exit_code": 0}}


def test_a_lost_instance_skips_the_wait_so_that_the_next_attempt_runs(instance, ec2, submission):
    sid, path, _ = submission(estimator=SLOW_ESTIMATOR.format(secs=600))
    started = start(instance, sid, path)
    instance_id = ec2.launch()["InstanceId"]
    ec2.client().terminate_instances(InstanceIds=[instance_id])
    instance.stop()  # every poll fails, and EC2 reports the instance terminated
    try:
        sensor = wait_sensor(instance, sid, started["host_key"], instance_id=instance_id, skip_when_lost=True)
        kwargs = sensor.start_trigger_args.trigger_kwargs
        assert isinstance(run_trigger(TrainingFinishedTrigger(**kwargs)), TaskSkippedEvent)
        assert watch(instance, sid, started["host_key"], instance_id=instance_id)["result"] == {"outcome": "lost"}
        with pytest.raises(AirflowSkipException, match=f"instance {instance_id} was lost"):
            sensor.execute_complete({}, {"status": "success", "result": {"outcome": "lost"}})
    finally:
        instance.start()
        watch(instance, sid, started["host_key"], training_timeout_secs=0.1)


def test_timeout_kills_the_process_group(instance, submission):
    sid, path, remote = submission(estimator=SLOW_ESTIMATOR.format(secs=600))
    started = start(instance, sid, path)
    event = watch(instance, sid, started["host_key"], training_timeout_secs=1.0)
    assert event["result"]["outcome"] == "timeout" and event["result"]["after_secs"] > 1.0
    pgid = read_pid(remote)
    assert pgid == started["pid"]
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)


def test_the_end_and_the_timeout_are_seen_before_the_next_poll(instance, submission):
    """Each poll waits on the instance: a poll interval far longer than the bound is never waited out."""
    sid, path, _ = submission(estimator=SLOW_ESTIMATOR.format(secs=2))
    started = start(instance, sid, path)
    event = watch(instance, sid, started["host_key"], timeout=60, poll_interval=3600)
    assert event["result"] == {"outcome": "finished", "exit_code": 0}

    sid, path, _ = submission(estimator=SLOW_ESTIMATOR.format(secs=600))
    started = start(instance, sid, path)
    event = watch(instance, sid, started["host_key"], timeout=60, poll_interval=3600, training_timeout_secs=1.0)
    assert event["result"]["outcome"] == "timeout" and event["result"]["after_secs"] > 1.0


def test_a_retried_start_does_not_start_a_second_training(instance, submission):
    sid, path, remote = submission(estimator=SLOW_ESTIMATOR.format(secs=600))
    first = start(instance, sid, path)
    second = start(instance, sid, path, host_key=first["host_key"])
    try:
        assert (second["pid"], second["started_at"]) == (first["pid"], first["started_at"])
        assert read_pid(remote) == first["pid"] and pid_alive(first["pid"])
    finally:
        event = watch(instance, sid, first["host_key"], training_timeout_secs=0.1)
        assert event["result"]["outcome"] == "timeout"


def test_a_changed_host_key_is_refused(instance, submission, tmp_path):
    sid, path, _ = submission()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other_key = (tmp_path / "other.pub").read_text()
    with pytest.raises(Exception, match="host key"):
        start(instance, sid, path, host_key=other_key)
    event = watch(instance, sid, other_key)
    assert event["status"] == "error" and "Host key" in event["message"]


def test_shell_metacharacters_change_nothing_on_the_instance(instance, submission, tmp_path):
    nasty = ["$(touch PWNED_a)", "`touch PWNED_b`", "x; touch PWNED_c", "' ; touch PWNED_d '"]
    sid, path, remote = submission(extra_files=nasty)
    with pytest.raises(ValueError):
        start(instance, "1; touch PWNED_e", path)  # a templated id that is not a number never runs
    started = start(instance, sid, path)
    assert watch(instance, sid, started["host_key"])["result"]["outcome"] == "finished"
    assert fetch(instance, sid, started["host_key"], tmp_path)["success"] is True
    assert set(nasty) <= set(os.listdir(remote))  # uploaded as plain files
    found = [
        p
        for root in (instance.home, os.getcwd(), str(tmp_path))
        for p in glob.glob(os.path.join(root, "**", "PWNED*"), recursive=True)
        if "PWNED_" in os.path.basename(p) and os.path.dirname(p) != remote
    ]
    assert found == []


def test_a_dead_training_is_reported_as_died(instance, submission):
    sid, path, remote = submission(estimator=SLOW_ESTIMATOR.format(secs=600))
    started = start(instance, sid, path)
    os.killpg(started["pid"], 9)  # e.g. the OOM killer: no exit code gets written
    wait_until(lambda: not pid_alive(started["pid"]), 10, "the training to die")
    assert watch(instance, sid, started["host_key"])["result"] == {"outcome": "died"}


def test_a_retry_after_the_training_ended_does_not_train_again(instance, submission, tmp_path):
    sid, path, remote = submission("error_in_fit")
    first = start(instance, sid, path, {"ti": TaskTry()})
    assert watch(instance, sid, first["host_key"])["result"]["outcome"] == "finished"
    started_at = (pathlib.Path(remote) / "training_job" / "started_at").read_text()

    # The same task of the same run, tried again: the ended training is the retry's, as it is.
    retry = start(instance, sid, path, {"ti": TaskTry(try_number=2)})
    assert (retry["pid"], retry["started_at"]) == (first["pid"], first["started_at"])
    assert (pathlib.Path(remote) / "training_job" / "started_at").read_text() == started_at
    assert (pathlib.Path(remote) / "log").read_text().count("Testing Iris classification") == 1
    assert fetch(instance, sid, retry["host_key"], tmp_path)["success"] is False

    # Another run trains it again.
    start(instance, sid, path, {"ti": TaskTry(run_id="other")})
    assert watch(instance, sid, first["host_key"])["result"]["outcome"] == "finished"
    assert (pathlib.Path(remote) / "training_job" / "started_at").read_text() != started_at


def test_a_retry_whose_instance_is_gone_reaches_nothing(instance, ec2, submission, tmp_path):
    sid, path, remote = submission()
    instance_id = ec2.launch()["InstanceId"]
    ec2.client().terminate_instances(InstanceIds=[instance_id])
    retry = {"ti": TaskTry(try_number=2)}
    with pytest.raises(AirflowSkipException, match=f"instance {instance_id} was lost"):
        start(instance, sid, path, retry, instance_id=instance_id, skip_when_lost=True)
    with pytest.raises(AirflowException, match=f"instance {instance_id} was lost"):
        start(instance, sid, path, retry, instance_id=instance_id)
    assert not os.path.exists(remote)  # nothing was uploaded to whoever holds the address now
    with pytest.raises(AirflowSkipException, match="nothing to fetch"):
        fetch(
            instance,
            sid,
            instance.known_hosts_line.split(maxsplit=1)[1],
            tmp_path,
            training_outcome={"outcome": "lost"},
        )


def test_a_fetch_replaces_every_local_copy_and_removes_what_the_instance_lacks(instance, submission, tmp_path):
    sid, path, remote = submission()
    started = start(instance, sid, path, memory_profiling=True)
    assert watch(instance, sid, started["host_key"])["result"]["outcome"] == "finished"
    assert fetch(instance, sid, started["host_key"], tmp_path)["success"] is True
    predictions = tmp_path / "predictions" / f"submission_{sid:09d}"
    logs = tmp_path / "logs" / f"submission_{sid:09d}"
    (predictions / "stale.npz").write_text("from an earlier training")
    assert sorted(os.listdir(logs)) == ["log", "mprof.dat"]

    shutil.rmtree(os.path.join(remote, "training_output"))
    os.remove(os.path.join(remote, "mprof.dat"))
    result = fetch(instance, sid, started["host_key"], tmp_path)
    assert result["success"] is False and result["error_msg"].endswith(f"{predictions} is missing")
    assert not predictions.exists() and sorted(os.listdir(logs)) == ["log"]  # nothing stale, no staging left


# Participants' attacks, through the real ramp-test on the real sshd: each may spoil its own result only.

# ramp-workflow refuses a submission that says ``open``: pathlib writes as well.
FORGED_START = """import os, pathlib, time
from sklearn.ensemble import RandomForestClassifier

record = pathlib.Path("submissions", "{folder}", "training_job")
(record / "started_at").write_text("99999999999.0")  # far in the future: a limit counted there never passes
{extra}
time.sleep(600)


def get_estimator():
    return RandomForestClassifier(n_estimators=2)
"""
LOG_AS_A_PIPE = 'log = os.path.join("submissions", "{folder}", "log")\nos.remove(log)\nos.mkfifo(log)'


@pytest.mark.parametrize("extra", ["", LOG_AS_A_PIPE], ids=["forged start time", "log replaced by a pipe"])
def test_the_time_limit_holds_whatever_the_instance_says(instance, submission, tmp_path, extra):
    sid = next(_next_id)
    folder = f"submission_{sid:09d}"
    estimator = FORGED_START.format(folder=folder, extra=extra.format(folder=folder))
    sid, path, remote = submission(estimator=estimator, sid=sid)
    started = start(instance, sid, path)
    wait_until(lambda: os.path.exists(os.path.join(remote, "training_job", "started_at")), 30, "the training")
    began = time.monotonic()
    event = watch(instance, sid, started["host_key"], timeout=90, training_timeout_secs=3, poll_interval=1)
    assert event["result"]["outcome"] == "timeout" and time.monotonic() - began < 60
    with pytest.raises(ProcessLookupError):
        os.killpg(started["pid"], 0)
    result = fetch(instance, sid, started["host_key"], tmp_path)
    assert result["success"] is False
    local_log = tmp_path / "logs" / folder / "log"
    assert not local_log.exists() or local_log.is_file()  # a pipe never comes back


def test_links_and_pipes_on_the_instance_never_come_back(instance, submission, tmp_path):
    sid, path, remote = submission()
    started = start(instance, sid, path)
    assert watch(instance, sid, started["host_key"])["result"]["outcome"] == "finished"
    secret = tmp_path / "airflow-side-secret.yml"
    secret.write_text("password: hunter2\n")
    os.chmod(secret, 0o644)
    scores = os.path.join(remote, "training_output", "fold_0", "scores.csv")
    os.remove(scores)
    os.symlink(secret, scores)  # as the participant's code would leave it
    os.remove(os.path.join(remote, "log"))
    os.symlink(secret, os.path.join(remote, "log"))
    os.mkfifo(os.path.join(remote, "training_output", "pipe"))
    result = fetch(instance, sid, started["host_key"], tmp_path)
    assert result["success"] is False and "fold_0/scores.csv is missing" in result["error_msg"]
    assert "hunter2" not in json.dumps(result)
    downloaded = [os.path.join(root, name) for root, dirs, files in os.walk(tmp_path) for name in dirs + files]
    assert not [p for p in downloaded if os.path.islink(p) or not (os.path.isfile(p) or os.path.isdir(p))]


def test_a_download_over_its_limit_is_stopped_and_is_a_training_error(instance, submission, tmp_path):
    sid, path, remote = submission()
    started = start(instance, sid, path)
    assert watch(instance, sid, started["host_key"])["result"]["outcome"] == "finished"
    with open(os.path.join(remote, "training_output", "huge.bin"), "wb") as f:
        f.truncate(1 << 30)  # sparse on the instance, 1 GiB once written here
    result = fetch(instance, sid, started["host_key"], tmp_path, max_output_bytes=32 << 20)
    assert result["success"] is False and "more than 32 MiB, the event's limit (max_output_mb)" in result["error_msg"]
    on_disk = sum(os.lstat(os.path.join(r, n)).st_blocks * 512 for r, d, fs in os.walk(tmp_path) for n in fs)
    assert on_disk < 32 << 20  # stopped, and what came was removed
    assert not (tmp_path / "predictions" / f"submission_{sid:09d}").exists()


def test_a_download_slower_than_its_time_is_stopped_and_is_a_training_error(instance, submission, tmp_path):
    """rsync's own timeout only sees a silent peer: a trickle needs the local bound."""
    sid, path, remote = submission()
    started = start(instance, sid, path)
    assert watch(instance, sid, started["host_key"])["result"]["outcome"] == "finished"
    with open(os.path.join(remote, "training_output", "big.bin"), "wb") as f:
        f.write(os.urandom(1 << 20) * 256)  # 256 MiB: more than a tenth of a second on loopback
    result = fetch(instance, sid, started["host_key"], tmp_path, max_download_secs=0.1)
    assert result["success"] is False and "did not download within 0 s" in result["error_msg"]
    assert not (tmp_path / "predictions" / f"submission_{sid:09d}").exists()
    os.remove(os.path.join(remote, "training_output", "big.bin"))
