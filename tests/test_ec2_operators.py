"""The EC2 tasks: launch, wait until ready, terminate, sweep; on moto, through execute() and dag.test()."""

from __future__ import annotations

import datetime
import importlib.util
import json
import threading
import uuid

import pytest
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowTaskTimeout,
    PokeReturnValue,
    TaskDeferred,
)
from airflow.sdk import DAG
from airflow.triggers.base import TaskFailedEvent, TaskSuccessEvent
from botocore.exceptions import BotoCoreError

from ramp_airflow.hooks.ec2 import RampEc2Hook
from ramp_airflow.operators.ec2 import LAUNCHED_XCOM_KEY, LaunchInstanceOperator
from ramp_airflow.operators.terminations import TerminateInstanceOperator
from ramp_airflow.sensors.instance import InstanceReadySensor
from ramp_airflow.triggers.ec2 import InstanceReadyTrigger, ec2_hook
from ramp_airflow.utils import cost_ledger, ec2_lifecycle, ec2_tags
from ramp_airflow.utils.aws_credentials import AwsCredentials
from ramp_airflow.utils.layout import cost_ledger_file
from testbench._proc import wait_until
from testbench.ec2 import refused_launches
from testbench.event_config import write_connection_config
from testbench.relay import relay_to
from testbench.training_runs import PushingTaskInstance
from testbench.training_runs import task_context as context
from testbench.triggers import RecordingTaskInstance, async_clients_made, run_trigger

DAG_ID = "ramp_iris_train"


@pytest.fixture
def run_id() -> str:
    return f"manual__{uuid.uuid4()}"


@pytest.fixture
def dag():
    with DAG(DAG_ID, schedule=None) as the_dag:
        yield the_dag


def launch_operator(ec2, **kwargs) -> LaunchInstanceOperator:
    params = dict(
        task_id=f"launch_{uuid.uuid4().hex[:6]}",
        submission_id=42,
        event_name="iris",
        instance_type="t2.micro",
        key_name=ec2.key_name,
        security_group=ec2.security_group,
        ami_image_name=ec2.ami_name,
    )
    params.update(kwargs)
    return LaunchInstanceOperator(**params)


def live(ec2, run_id: str) -> list[str]:
    """The ids of the live instances tagged with ``run_id``."""
    filters = [
        {"Name": f"tag:{ec2_tags.RUN_ID}", "Values": [run_id]},
        {"Name": "instance-state-name", "Values": list(ec2_tags.LIVE_STATES)},
    ]
    reservations = ec2.client().describe_instances(Filters=filters)["Reservations"]
    return [instance["InstanceId"] for r in reservations for instance in r["Instances"]]


def state_of(ec2, instance_id: str) -> str:
    return RampEc2Hook().describe_instance(instance_id)["State"]["Name"]


def test_launch_pushes_a_tagged_instance_and_a_retry_reuses_it(ec2, dag, run_id):
    operator = launch_operator(ec2, submission_id="42")  # as a template renders it
    instance_id = operator.execute(context(run_id))
    assert operator.execute(context(run_id)) == instance_id  # the task's retry
    instance = RampEc2Hook().describe_instance(instance_id)
    assert instance["ImageId"] == ec2.ami_id  # the account's own image, not the stranger's newer one
    assert ec2_tags.tags_of(instance) == ec2_tags.instance_tags("iris", 42, DAG_ID, run_id, operator.task_id)
    assert launch_operator(ec2).execute(context(run_id)) != instance_id  # another attempt's task


def test_launch_with_an_existing_instance_launches_nothing(ec2, dag, run_id):
    existing = ec2.launch(InstanceType="m5.large")["InstanceId"]
    pushed = context(run_id)
    assert launch_operator(ec2, existing_instance_id=existing).execute(pushed) == existing
    assert live(ec2, run_id) == []
    launched = {"instance_id": existing, "instance_type": "m5.large", "market": "on-demand"}
    assert pushed["ti"].xcoms == {LAUNCHED_XCOM_KEY: launched}
    ec2.client().terminate_instances(InstanceIds=[existing])
    with pytest.raises(AirflowFailException, match=f"existing instance {existing} cannot train"):
        launch_operator(ec2, existing_instance_id=existing).execute(context(run_id))


def test_launch_with_no_existing_instance_rendered_as_text(ec2, dag, run_id):
    instance_id = launch_operator(ec2, existing_instance_id="None").execute(context(run_id))
    assert live(ec2, run_id) == [instance_id]


def test_launch_falls_back_to_the_next_type_and_pushes_the_one_used(ec2, dag, run_id, capsys):
    operator = launch_operator(ec2, instance_type=["t3.large", "m5.large"], use_spot_instance=True, spot_wait_secs=1)
    operator.hook.spot_retry_secs = 0.2
    pushed = context(run_id)
    with refused_launches({"t3.large": "InsufficientInstanceCapacity"}, message="no t3.large here") as requests:
        instance_id = operator.execute(pushed)
    *spot_tries, refused_on_demand, used = requests
    assert set(spot_tries) == {("t3.large", "spot")}  # the one spot wait, spent on the first type
    assert (refused_on_demand, used) == (("t3.large", "on-demand"), ("m5.large", "spot"))
    assert pushed["ti"].xcoms == {
        LAUNCHED_XCOM_KEY: {"instance_id": instance_id, "instance_type": "m5.large", "market": "spot"}
    }
    assert live(ec2, run_id) == [instance_id]
    log = capsys.readouterr().out
    assert "EC2 refused instance type t3.large (InsufficientInstanceCapacity: no t3.large here)" in log
    assert f"Launched spot instance {instance_id} of type m5.large" in log


def test_launch_failures_leave_nothing_running(ec2, dag, run_id):
    with pytest.raises(AirflowFailException, match="No available AMI named 'no-such-kit'"):
        launch_operator(ec2, ami_image_name="no-such-kit").execute(context(run_id))
    with pytest.raises(AirflowFailException, match="submission id must be a non-negative integer"):
        launch_operator(ec2, submission_id="x;rm -rf").execute(context(run_id))
    assert live(ec2, run_id) == []


def test_ready_sensor_defers_then_pushes_the_ssh_address(ec2, dag, run_id):
    instance_id = launch_operator(ec2).execute(context(run_id))
    sensor = InstanceReadySensor(task_id="ready", instance_id=instance_id, poke_interval=0.2, timeout=60)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context(run_id))
    assert deferred.value.method_name == "execute_complete"
    classpath, kwargs = deferred.value.trigger.serialize()
    module, name = classpath.rsplit(".", 1)
    trigger = getattr(importlib.import_module(module), name)(**kwargs)  # as the triggerer rebuilds it
    assert isinstance(trigger, InstanceReadyTrigger) and kwargs["instance_id"] == instance_id
    assert kwargs["end_from_trigger"] is False  # deferred from a worker, it resumes there

    ec2.set_status_delay(1)  # status checks pass one second after launch
    try:
        event = run_trigger(trigger)
    finally:
        ec2.set_status_delay(0)
    assert event.payload["status"] == "ready" and event.payload["address"] == "127.0.0.1"
    ti = PushingTaskInstance()
    assert sensor.execute_complete({"ti": ti}, event.payload) == "127.0.0.1"
    assert ti.xcoms == {"ready_at": event.payload["ready_at"]}  # when the trigger saw it ready, for the ledger
    assert (
        datetime.datetime.fromisoformat(event.payload["ready_at"])
        > RampEc2Hook().describe_instance(instance_id)["LaunchTime"]
    )
    assert sensor.execute_complete({"ti": ti}, {**event.payload, "address": "127.0.0.2"}) == "127.0.0.2"


def test_the_secret_key_reaches_a_trigger_only_through_the_config(ec2, tmp_path):
    config = write_connection_config(tmp_path / "config.yml", access_key_id="KEYID", secret_access_key="key-secret")
    credentials = AwsCredentials(access_key_id="KEYID", secret_access_key="key-secret")
    sensor = InstanceReadySensor(
        task_id="ready",
        instance_id="{{ ti.xcom_pull(task_ids='launch') }}",
        aws_credentials=credentials,
        config_path=str(config),
    )
    stored = sensor.start_trigger_args.trigger_kwargs  # what the serialized DAG and the trigger row hold
    assert sensor.start_from_trigger and stored["instance_id"] == "{{ ti.xcom_pull(task_ids='launch') }}"
    assert "key-secret" not in repr(stored) and "key-secret" not in repr(credentials)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    assert "key-secret" not in repr(deferred.value.trigger.serialize())
    hook = ec2_hook(stored["aws"])  # as the triggerer builds it
    assert (hook.access_key_id, hook._secret_access_key) == ("KEYID", "key-secret")
    with pytest.raises(ValueError, match="config_path"):
        ec2_hook({**stored["aws"], "config_path": None})


def test_ready_sensor_fails_loudly_when_the_instance_goes_away(ec2, dag, run_id):
    instance_id = launch_operator(ec2).execute(context(run_id))
    ec2.set_status_delay(3600)
    try:
        sensor = InstanceReadySensor(
            task_id="ready", instance_id=instance_id, poke_interval=0.1, timeout=60, deferrable=False
        )
        assert sensor.poke({}) is False
        RampEc2Hook().terminate_instance(instance_id)  # e.g. a reclaimed spot instance
        with pytest.raises(AirflowException, match=f"Instance {instance_id} stopped or disappeared .*terminated"):
            sensor.poke({})
        trigger = InstanceReadyTrigger(instance_id, {}, 0.1, timeout_secs=60)
        event = run_trigger(trigger)
        trigger.end_from_trigger = True  # started from the triggerer: it fails the task itself
        assert isinstance(run_trigger(trigger), TaskFailedEvent)
    finally:
        ec2.set_status_delay(0)
    assert event.payload["status"] == "gone"
    with pytest.raises(AirflowException, match="stopped or disappeared"):
        sensor.execute_complete({}, event.payload)


def test_ready_sensor_poke_and_timeout(ec2, dag, run_id, monkeypatch):
    instance_id = launch_operator(ec2).execute(context(run_id))
    sensor = InstanceReadySensor(task_id="ready", instance_id=instance_id, timeout=5, deferrable=False)
    ec2.set_status_delay(3600)
    try:
        assert sensor.poke({}) is False
        trigger = InstanceReadyTrigger(instance_id, {}, 0.1, timeout_secs=0.3)
        event = run_trigger(trigger)
    finally:
        ec2.set_status_delay(0)
    assert event.payload["status"] == "timeout" and "initializing" in event.payload["message"]
    with pytest.raises(AirflowException, match=r"not ready after 5s .* raise aws.instance_ready_timeout_secs"):
        sensor.execute_complete({}, event.payload)
    ti = PushingTaskInstance()
    done = sensor.poke({"ti": ti})
    assert isinstance(done, PokeReturnValue) and done.is_done and done.xcom_value == "127.0.0.1"
    assert set(ti.xcoms) == {"ready_at"}
    with pytest.raises(AirflowException, match="Unexpected event"):
        sensor.execute_complete({}, {"status": "ready", "instance_id": "i-someone-else", "message": ""})
    ending = InstanceReadyTrigger(instance_id, {}, 0.1, timeout_secs=5, end_from_trigger=True)
    ending.task_instance = RecordingTaskInstance(monkeypatch)
    assert isinstance(run_trigger(ending), TaskSuccessEvent)
    assert ending.task_instance.xcoms == {
        "return_value": "127.0.0.1",
        "ready_at": ending.task_instance.xcoms["ready_at"],
    }
    datetime.datetime.fromisoformat(ending.task_instance.xcoms["ready_at"])


def test_the_ready_wait_rides_out_an_ec2_outage_on_its_one_client(ec2, dag, run_id, monkeypatch):
    """EC2 unreachable mid-wait (connections cut, then refused): the trigger's held client recovers."""
    instance_id = launch_operator(ec2).execute(context(run_id))
    made, answers = async_clients_made(monkeypatch), []
    readiness = RampEc2Hook.get_readiness_async

    async def recorded(self, *args):
        try:
            answer = await readiness(self, *args)
        except Exception as err:
            answers.append(err)
            raise
        answers.append(answer[0])
        return answer

    monkeypatch.setattr(RampEc2Hook, "get_readiness_async", recorded)
    outage_error: list[BaseException] = []

    def outage(relay):
        try:
            wait_until(lambda: answers.count(ec2_lifecycle.WAITING) >= 2, 60, "two polls through the relay")
            relay.cut()
            cut_at = len(answers)
            wait_until(lambda: len(answers) >= cut_at + 2, 60, "two polls during the outage")
            relay.listen()
            ec2.set_status_delay(0)
        except BaseException as err:
            outage_error.append(err)

    ec2.set_status_delay(3600)
    try:
        with relay_to(ec2.port) as relay:
            monkeypatch.setenv("AWS_ENDPOINT_URL", relay.url)
            cutter = threading.Thread(target=outage, args=(relay,))
            cutter.start()
            try:
                event = run_trigger(InstanceReadyTrigger(instance_id, {}, 0.1, timeout_secs=120))
            finally:
                cutter.join(timeout=120)
    finally:
        ec2.set_status_delay(0)
    assert not outage_error, outage_error
    assert event.payload["status"] == "ready" and event.payload["address"] == "127.0.0.1"
    failed = [answer for answer in answers if isinstance(answer, Exception)]
    # What the trigger takes for EC2 not answering (botocore's, after its own retries).
    assert failed and all(isinstance(err, BotoCoreError) for err in failed), answers
    assert answers[-1] == ec2_lifecycle.READY
    assert len(made) == 1  # the same client before, during and after the outage, the address lookup included


def test_terminate_only_what_this_run_launched(ec2, dag, run_id):
    launched = launch_operator(ec2).execute(context(run_id))
    other_run = launch_operator(ec2).execute(context(run_id + "-other"))
    existing = ec2.launch()["InstanceId"]
    for task_id, instance_id in [("t1", existing), ("t2", other_run), ("t3", launched), ("t4", launched)]:
        TerminateInstanceOperator(task_id=task_id, instance_id=instance_id).execute(context(run_id))
    assert state_of(ec2, launched) == "terminated"
    assert state_of(ec2, existing) == "running"
    assert state_of(ec2, other_run) == "running"
    TerminateInstanceOperator(task_id="gone", instance_id="i-0123456789abcdef0").execute(context(run_id))
    for task_id, instance_id in [("none", None), ("none_text", "None"), ("empty", "")]:  # the launch failed
        TerminateInstanceOperator(task_id=task_id, instance_id=instance_id).execute(context(run_id))
    assert state_of(ec2, other_run) == "running"


def age(ec2, instance_id: str, minutes: float) -> None:
    """Move an instance's launch time back, as if it had been running that long."""
    instance = ec2.backend().get_instance(instance_id)
    instance.launch_time -= datetime.timedelta(minutes=minutes)


DAG_FILE = """
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

from ramp_airflow.operators.ec2 import LaunchInstanceOperator
from ramp_airflow.operators.terminations import SweepOrphanInstancesOperator, TerminateInstanceOperator
from ramp_airflow.sensors.instance import InstanceReadySensor

with DAG("ramp_done_{suffix}", schedule=None) as done_dag:
    EmptyOperator(task_id="noop")

with DAG("ramp_sweep_{suffix}", schedule=None) as sweep_dag:
    SweepOrphanInstancesOperator(task_id="sweep", event_name="{event}", grace_period_secs=600, ledger_path="{ledger}")

with DAG("ramp_train_{suffix}", schedule=None) as train_dag:
    launch = LaunchInstanceOperator(
        task_id="launch", submission_id="{{{{ params.submission_id }}}}", params={{"submission_id": 42}},
        event_name="{event}", instance_type="t2.micro", key_name="{key_name}", security_group="{security_group}",
        ami_image_name="{ami_name}",
    )
    ready = InstanceReadySensor(task_id="ready", instance_id=launch.output, poke_interval=0.2, timeout=60)
    terminate = TerminateInstanceOperator(task_id="terminate", instance_id=launch.output)
    launch >> ready >> terminate.as_teardown(setups=launch)

with DAG("ramp_unready_{suffix}", schedule=None) as unready_dag:
    launch = LaunchInstanceOperator(
        task_id="launch", submission_id=42, event_name="{event}", instance_type="t2.micro", key_name="{key_name}",
        security_group="{security_group}", ami_image_name="{ami_name}",
    )
    ready = InstanceReadySensor(
        task_id="ready", instance_id="{{{{ ti.xcom_pull(task_ids='launch') }}}}", poke_interval=0.1, timeout=0.5
    )
    terminate = TerminateInstanceOperator(task_id="terminate", instance_id=launch.output)
    launch >> ready >> terminate.as_teardown(setups=launch)

with DAG("ramp_fail_{suffix}", schedule=None) as fail_dag:
    launch = LaunchInstanceOperator(
        task_id="launch", submission_id=42, event_name="{event}", instance_type="t2.micro", key_name="{key_name}",
        security_group="{security_group}", ami_image_name="{ami_name}",
    )
    ready = InstanceReadySensor(task_id="ready", instance_id=launch.output, poke_interval=0.2, timeout=60)
    terminate = TerminateInstanceOperator(task_id="terminate", instance_id=launch.output)
    launch >> ready >> terminate.as_teardown(setups=launch)
"""


@pytest.fixture
def test_dags(ec2, airflow_home, tmp_path, monkeypatch):
    """This module's DAGs, in a DAG bundle of their own (dag.test() runs only DAGs of a bundle)."""
    from airflow.configuration import conf

    suffix, event = uuid.uuid4().hex[:8], f"sweep-{uuid.uuid4().hex[:8]}"
    ledger = cost_ledger_file(str(tmp_path / "logs"), event)
    path = tmp_path / "ramp_ec2_test_dags.py"
    path.write_text(
        DAG_FILE.format(
            suffix=suffix,
            event=event,
            key_name=ec2.key_name,
            security_group=ec2.security_group,
            ami_name=ec2.ami_name,
            ledger=ledger,
        )
    )
    bundles = json.loads(conf.get("dag_processor", "dag_bundle_config_list"))
    bundles.append(
        {
            "name": f"ramp-ec2-tests-{suffix}",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(tmp_path)},
        }
    )
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
    spec = importlib.util.spec_from_file_location(f"ramp_ec2_test_dags_{suffix}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.event, module.ledger = event, ledger
    yield module
    from airflow import settings

    # dag.test() leaves a transaction open in Airflow's scoped session; close it while PostgreSQL still runs.
    settings.Session.remove()


def run_with_status_checks_after(ec2, dag, delay: float):
    """A dag.test() run of ``dag`` while instances pass their status checks ``delay`` s after launch."""
    ec2.set_status_delay(delay)
    try:
        run = dag.test()
    finally:
        ec2.set_status_delay(0)
    return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


def test_launch_ready_teardown_in_a_real_dag_run(ec2, test_dags):
    run, states = run_with_status_checks_after(ec2, test_dags.train_dag, 1)
    assert run.state == "success" and states == {"launch": "success", "ready": "success", "terminate": "success"}
    [instance] = [i for i in RampEc2Hook().list_backend_instances(test_dags.event)] or [None]
    assert instance is None  # the teardown terminated it
    launched = ec2.client().describe_instances(Filters=[{"Name": f"tag:{ec2_tags.RUN_ID}", "Values": [run.run_id]}])
    [[instance]] = [r["Instances"] for r in launched["Reservations"]]
    assert instance["State"]["Name"] == "terminated"
    assert ec2_tags.tags_of(instance)[ec2_tags.DAG_ID] == test_dags.train_dag.dag_id
    assert xcom(run, "ready") == "127.0.0.1" and xcom(run, "launch") == instance["InstanceId"]
    launched = {"instance_id": instance["InstanceId"], "instance_type": "t2.micro", "market": "on-demand"}
    assert xcom(run, "launch", LAUNCHED_XCOM_KEY) == launched
    assert datetime.datetime.fromisoformat(xcom(run, "ready", "ready_at")) > instance["LaunchTime"]


def test_an_instance_that_never_gets_ready_is_terminated_by_the_teardown(ec2, test_dags):
    run, states = run_with_status_checks_after(ec2, test_dags.unready_dag, 3600)
    assert run.state == "failed" and states == {"launch": "success", "ready": "failed", "terminate": "success"}
    assert RampEc2Hook().list_backend_instances(test_dags.event) == []


def fail_right_after_creating(monkeypatch):
    """Make the hook's launches fail just after EC2 created the instance (a task timeout hitting then)."""
    run = RampEc2Hook._run

    def run_then_time_out(self, *args, **kwargs):
        run(self, *args, **kwargs)
        raise AirflowTaskTimeout("Timeout, PID: 1234")

    monkeypatch.setattr(RampEc2Hook, "_run", run_then_time_out)


def test_a_launch_failing_after_creating_terminates_it(ec2, dag, run_id, monkeypatch):
    fail_right_after_creating(monkeypatch)
    with pytest.raises(AirflowTaskTimeout):
        launch_operator(ec2).execute(context(run_id))
    [instance] = ec2.client().describe_instances(Filters=[{"Name": f"tag:{ec2_tags.RUN_ID}", "Values": [run_id]}])[
        "Reservations"
    ][0]["Instances"]
    assert instance["State"]["Name"] == "terminated"


def test_failed_launch_in_a_real_dag_run_leaves_nothing(ec2, test_dags, monkeypatch):
    fail_right_after_creating(monkeypatch)
    run = test_dags.fail_dag.test()
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "failed"
    # Airflow runs a teardown only when its setup succeeded: the launch cleaned up itself.
    assert states == {"launch": "failed", "ready": "upstream_failed", "terminate": "upstream_failed"}
    assert RampEc2Hook().list_backend_instances(test_dags.event) == []
    assert ec2.client().describe_instances(Filters=[{"Name": f"tag:{ec2_tags.RUN_ID}", "Values": [run.run_id]}])[
        "Reservations"
    ], "the launch did create an instance"


def xcom(run, task_id: str, key: str = "return_value"):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        query = XComModel.get_many(run_id=run.run_id, key=key, dag_ids=run.dag_id, task_ids=task_id)
        row = session.scalars(query).one()
        return XComModel.deserialize_value(row)


def test_sweep_in_real_dag_runs(ec2, test_dags):
    hook, event = RampEc2Hook(), test_dags.event
    done = test_dags.done_dag.test()
    assert done.state == "success"

    when = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    sweep_dag_id, sweep_run_id = test_dags.sweep_dag.dag_id, f"manual__{when.isoformat()}"

    def launch(dag_id: str, run_id: str, minutes_old: float) -> str:
        instance_id = hook.launch_instance(
            image_id=ec2.ami_id,
            instance_type="t2.micro",
            key_name=ec2.key_name,
            security_group=ec2.security_group,
            event_name=event,
            submission_id=7,
            dag_id=dag_id,
            run_id=run_id,
            task_id="launch",
        )["instance_id"]
        age(ec2, instance_id, minutes_old)
        return instance_id

    ended = launch(done.dag_id, done.run_id, 30)
    unknown = launch("ramp_deleted_dag", "manual__long_ago", 30)
    running = launch(sweep_dag_id, sweep_run_id, 30)  # the sweep's own run: still running
    young = launch("ramp_deleted_dag", "manual__just_now", 1)
    untagged_tags = [
        {"Key": ec2_tags.BACKEND, "Value": ec2_tags.BACKEND_VALUE},
        {"Key": ec2_tags.EVENT, "Value": event},
    ]
    untagged = ec2.launch(TagSpecifications=[{"ResourceType": "instance", "Tags": untagged_tags}])["InstanceId"]
    age(ec2, untagged, 30)
    stranger = ec2.launch()["InstanceId"]
    age(ec2, stranger, 30)

    run = test_dags.sweep_dag.test(run_after=when, logical_date=when)
    assert run.run_id == sweep_run_id and run.state == "success"

    states = {
        name: state_of(ec2, instance_id)
        for name, instance_id in dict(
            ended=ended, unknown=unknown, running=running, young=young, untagged=untagged, stranger=stranger
        ).items()
    }
    assert states == dict(
        ended="terminated",
        unknown="terminated",
        running="running",
        young="running",
        untagged="terminated",
        stranger="running",
    )
    for instance_id in (running, young, stranger):
        hook.terminate_instance(instance_id)
    # The sweep recorded what it terminated; it knows no team, and the untagged instance no submission.
    rows = {row["instance_id"]: row for row in cost_ledger.read_rows(test_dags.ledger)}
    assert set(rows) == {ended, unknown, untagged}
    assert {row["terminated_by"] for row in rows.values()} == {"sweep"} and rows[ended]["submission_id"] == "7"
    assert rows[untagged]["submission_id"] == rows[untagged]["team"] == rows[untagged]["ready_time"] == ""
    assert all(int(row["billed_seconds"]) >= 30 * 60 for row in rows.values())  # launched 30 minutes before


def test_a_missing_run_is_told_apart_from_other_api_errors():
    """On a worker, the Task SDK reports the API server's 404 as an AirflowRuntimeError."""
    from airflow.sdk.exceptions import AirflowRuntimeError, ErrorType
    from airflow.sdk.execution_time.comms import ErrorResponse

    from ramp_airflow.utils.run_states import _status_code

    def error(status: int) -> AirflowRuntimeError:
        return AirflowRuntimeError(ErrorResponse(error=ErrorType.API_SERVER_ERROR, detail={"status_code": status}))

    assert _status_code(error(404)) == 404
    assert _status_code(error(500)) == 500
    assert _status_code(AirflowRuntimeError(ErrorResponse())) is None
