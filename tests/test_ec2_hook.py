"""The EC2 hook against moto (testbench/ec2.py), and the pure helpers it builds on."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import uuid

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from ramp_airflow.hooks.ec2 import RampEc2Hook
from ramp_airflow.utils import ec2_errors, ec2_lifecycle, ec2_tags
from testbench.ec2 import refused_launches
from testbench.triggers import async_clients_made

NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.timezone.utc)


def minutes_ago(minutes: float) -> datetime.datetime:
    return NOW - datetime.timedelta(minutes=minutes)


def live_instances(ec2, run_id: str) -> list[dict]:
    filters = [
        {"Name": f"tag:{ec2_tags.RUN_ID}", "Values": [run_id]},
        {"Name": "instance-state-name", "Values": list(ec2_tags.LIVE_STATES)},
    ]
    pages = ec2.client().describe_instances(Filters=filters)["Reservations"]
    return [inst for r in pages for inst in r["Instances"]]


# -- pure helpers -------------------------------------------------------------------------------


def test_tags_name_every_fact_of_the_run():
    tags = ec2_tags.instance_tags("iris", 42, "ramp_iris_train", "manual__1", "attempt_1.launch")
    assert tags == {
        "ramp-airflow": "true",
        "ramp-airflow:event": "iris",
        "ramp-airflow:submission-id": "42",
        "ramp-airflow:submission-folder": "submission_000000042",
        "ramp-airflow:dag-id": "ramp_iris_train",
        "ramp-airflow:run-id": "manual__1",
        "ramp-airflow:task-id": "attempt_1.launch",
        "Name": "ramp-iris-submission_000000042",
    }
    assert ec2_tags.launched_by(tags, "ramp_iris_train", "manual__1")
    assert not ec2_tags.launched_by(tags, "ramp_iris_train", "manual__2")
    assert not ec2_tags.launched_by({**tags, "ramp-airflow": "false"}, "ramp_iris_train", "manual__1")


def test_client_token_is_stable_per_run_type_and_request_kind():
    token = ec2_tags.client_token("dag", "run" * 100, "launch", 42, "t2.micro", "on-demand")
    assert token == ec2_tags.client_token("dag", "run" * 100, "launch", 42, "t2.micro", "on-demand")
    assert len(token) <= 64 and token.isascii()
    others = {
        ec2_tags.client_token("dag", "run" * 100, "launch", 42, "t2.micro", "spot-0"),
        ec2_tags.client_token("dag", "run" * 100, "launch", 42, "u-24tb1.112xlarge", "on-demand"),
        ec2_tags.client_token("dag", "run", "launch", 42, "t2.micro", "on-demand"),
        ec2_tags.client_token("dag", "run" * 100, "launch", 43, "t2.micro", "on-demand"),
        ec2_tags.client_token("dag", "run" * 100, "attempt_2.launch", 42, "t2.micro", "on-demand"),
    }
    assert token not in others and len(others) == 5
    # A long type name and a high spot attempt still fit, and stay apart.
    long_spot = {ec2_tags.client_token("d", "r", "t", 1, "u-24tb1.112xlarge", f"spot-{n}") for n in (10, 11)}
    assert len(long_spot) == 2 and all(len(t) <= 64 for t in long_spot)


@pytest.mark.parametrize(
    ("state", "instance", "system", "verdict"),
    [
        ("pending", "not-applicable", "not-applicable", ec2_lifecycle.WAITING),
        ("running", "initializing", "ok", ec2_lifecycle.WAITING),
        ("running", "ok", "initializing", ec2_lifecycle.WAITING),
        ("running", "ok", "ok", ec2_lifecycle.READY),
        ("stopping", "not-applicable", "not-applicable", ec2_lifecycle.GONE),
        ("terminated", "not-applicable", "not-applicable", ec2_lifecycle.GONE),
    ],
)
def test_readiness(state, instance, system, verdict):
    status = {
        "InstanceState": {"Name": state},
        "InstanceStatus": {"Status": instance},
        "SystemStatus": {"Status": system},
    }
    got, description = ec2_lifecycle.readiness(status)
    assert got == verdict and state in description
    assert ec2_lifecycle.readiness(None)[0] == ec2_lifecycle.GONE


RUN_TAGS = ec2_tags.instance_tags("iris", 42, "ramp_iris_train", "manual__1", "launch")


@pytest.mark.parametrize(
    ("tags", "age_minutes", "run_state", "expected"),
    [
        (RUN_TAGS, 30, "success", "has ended (success)"),
        (RUN_TAGS, 30, "failed", "has ended (failed)"),
        (RUN_TAGS, 30, None, "unknown to Airflow"),
        (RUN_TAGS, 30, "running", None),
        (RUN_TAGS, 30, "queued", None),
        (RUN_TAGS, 5, "success", None),  # within the grace period
        (RUN_TAGS, 5, None, None),
        ({"ramp-airflow": "true", "ramp-airflow:event": "iris"}, 30, None, "no Airflow run tags"),
        ({"ramp-airflow": "true", "ramp-airflow:event": "iris"}, 5, None, None),
    ],
)
def test_orphan_reason(tags, age_minutes, run_state, expected):
    reason = ec2_lifecycle.orphan_reason(tags, minutes_ago(age_minutes), NOW, run_state, grace_period_secs=600)
    if expected is None:
        assert reason is None
    else:
        assert expected in reason


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("InsufficientInstanceCapacity", "no capacity for instance type t9.huge"),
        ("InvalidAMIID.NotFound", "check aws.ami_image_id"),
        ("InvalidAMIID.Malformed", "check aws.ami_image_id"),
        ("InvalidParameterValue", "check aws.instance_type"),
        ("Unsupported", "check aws.instance_type"),
        ("UnauthorizedOperation", "may not launch an instance: grant the permission"),
        ("InvalidKeyPair.NotFound", "check aws.key_name"),
        ("InvalidGroup.NotFound", "check aws.security_group"),
        ("SomethingNew", "EC2 refused to launch an instance"),
    ],
)
def test_explain_names_what_to_fix(code, words):
    text = ec2_errors.explain(code, "EC2's message", "launch an instance", instance_type="t9.huge", image="ami-1")
    assert words in text and f"EC2 said {code}: EC2's message" in text
    assert ec2_errors.is_retryable(code) == (code == "InsufficientInstanceCapacity")


# -- against moto -------------------------------------------------------------------------------


def test_resolve_image_by_id_and_by_name(ec2):
    hook = RampEc2Hook()
    assert hook.resolve_image(image_id=ec2.ami_id) == ec2.ami_id
    # The bench's stranger image has the same name and is newer: it must never win.
    assert hook.resolve_image(image_name=ec2.ami_name) == ec2.ami_id
    name = f"kit-{uuid.uuid4().hex[:8]}"
    older = ec2.client().register_image(Name=name, RootDeviceName="/dev/sda1")["ImageId"]
    newer = ec2.client().register_image(Name=name, RootDeviceName="/dev/sda1")["ImageId"]
    ec2.backend().amis[older].creation_date = datetime.datetime(2025, 1, 1)
    assert hook.resolve_image(image_name=name) == newer
    assert hook.resolve_image(image_name=ec2.ami_name, owners=[ec2.stranger_account]) == ec2.stranger_ami_id


def test_resolve_image_failures_say_which_field(ec2):
    hook = RampEc2Hook()
    with pytest.raises(AirflowFailException, match=r"AMI ami-00000000000000000 does not exist .* aws.ami_image_id"):
        hook.resolve_image(image_id="ami-00000000000000000")
    with pytest.raises(AirflowFailException, match=r"AMI named 'nope' is owned by self: check aws.ami_image_name"):
        hook.resolve_image(image_name="nope")
    with pytest.raises(AirflowFailException, match="exactly one"):
        hook.resolve_image(image_id=ec2.ami_id, image_name=ec2.ami_name)


def test_launch_tags_the_instance_and_a_retry_reuses_it(ec2):
    hook = RampEc2Hook()
    args = ec2.launch_args()
    launched = hook.launch_instance(**args)
    instance_id = launched["instance_id"]
    assert launched == {"instance_id": instance_id, "instance_type": "t2.micro", "market": "on-demand"}
    assert hook.launch_instance(**args) == launched
    assert [i["InstanceId"] for i in live_instances(ec2, args["run_id"])] == [instance_id]
    instance = hook.describe_instance(instance_id)
    assert ec2_tags.tags_of(instance) == ec2_tags.instance_tags(
        "iris", 42, "ramp_iris_train", args["run_id"], "attempt_1.launch_instance"
    )
    assert instance["InstanceType"] == "t2.micro" and instance["KeyName"] == ec2.key_name
    assert instance["ImageId"] == ec2.ami_id
    assert [g["GroupName"] for g in instance["SecurityGroups"]] == [ec2.security_group]
    assert "InstanceLifecycle" not in instance  # on demand
    assert hook.get_ssh_address(instance_id) == "127.0.0.1"
    # Another run, or another training attempt (task) of the same run, gets its own instance.
    assert hook.launch_instance(**ec2.launch_args(run_id=args["run_id"] + "-2"))["instance_id"] != instance_id
    assert hook.launch_instance(**{**args, "task_id": "attempt_2.launch_instance"})["instance_id"] != instance_id
    # Once terminated, the instance is not reused: a new launch gets a new one.
    hook.terminate_instance(instance_id)
    assert hook.launch_instance(**args)["instance_id"] != instance_id


def test_spot_instance(ec2):
    hook = RampEc2Hook()
    launched = hook.launch_instance(**ec2.launch_args(), use_spot_instance=True)
    assert launched["market"] == "spot" and launched["instance_type"] == "t2.micro"
    assert hook.describe_instance(launched["instance_id"])["InstanceLifecycle"] == "spot"


def test_spot_falls_back_to_on_demand_of_the_same_type(ec2):
    hook = RampEc2Hook(spot_retry_secs=0.05)
    args = ec2.launch_args(instance_type=["t2.micro", "m5.large"])
    with refused_launches({"t2.micro": "InsufficientInstanceCapacity"}, markets=("spot",)) as requests:
        launched = hook.launch_instance(**args, use_spot_instance=True, spot_wait_secs=0.3)
    assert launched["market"] == "on-demand" and launched["instance_type"] == "t2.micro"
    assert "InstanceLifecycle" not in hook.describe_instance(launched["instance_id"])
    spot_tries = requests.count(("t2.micro", "spot"))
    assert spot_tries >= 2 and requests == [("t2.micro", "spot")] * spot_tries + [("t2.micro", "on-demand")]
    assert [i["InstanceId"] for i in live_instances(ec2, args["run_id"])] == [launched["instance_id"]]


def test_the_next_type_is_launched_when_the_first_has_no_capacity(ec2, capsys):
    hook = RampEc2Hook()
    args = ec2.launch_args(instance_type=["t3.large", "m5.large"])
    with refused_launches({"t3.large": "InsufficientInstanceCapacity"}, message="no t3.large here") as requests:
        launched = hook.launch_instance(**args)
        assert hook.launch_instance(**args) == launched  # a retry gets it back, and asks EC2 for nothing new
    assert requests == [("t3.large", "on-demand"), ("m5.large", "on-demand")]
    assert launched == {"instance_id": launched["instance_id"], "instance_type": "m5.large", "market": "on-demand"}
    assert hook.describe_instance(launched["instance_id"])["InstanceType"] == "m5.large"
    assert [i["InstanceId"] for i in live_instances(ec2, args["run_id"])] == [launched["instance_id"]]
    log = capsys.readouterr().out
    assert "EC2 refused instance type t3.large (InsufficientInstanceCapacity: no t3.large here)" in log
    assert f"Launched on-demand instance {launched['instance_id']} of type m5.large" in log


def test_one_spot_wait_for_all_the_types(ec2):
    """The first type's spot wait uses it up: the next type gets one spot try, then on demand."""
    hook = RampEc2Hook(spot_retry_secs=0.05)
    args = ec2.launch_args(instance_type=["t3.large", "m5.large", "c5.large"])
    refusals = {"t3.large": "InsufficientInstanceCapacity", "m5.large": "InsufficientInstanceCapacity"}
    with refused_launches(refusals) as requests:
        launched = hook.launch_instance(**args, use_spot_instance=True, spot_wait_secs=0.3)
    first_spot = requests.count(("t3.large", "spot"))
    assert first_spot >= 2
    assert requests[first_spot:] == [
        ("t3.large", "on-demand"),
        ("m5.large", "spot"),
        ("m5.large", "on-demand"),
        ("c5.large", "spot"),
    ]
    assert launched["instance_type"] == "c5.large" and launched["market"] == "spot"
    assert hook.describe_instance(launched["instance_id"])["InstanceLifecycle"] == "spot"


def test_a_type_the_zone_does_not_offer_for_spot_is_not_asked_on_demand(ec2):
    hook = RampEc2Hook(spot_retry_secs=0.05)
    args = ec2.launch_args(instance_type=["t3.large", "m5.large"])
    with refused_launches({"t3.large": "Unsupported"}, markets=("spot",)) as requests:
        launched = hook.launch_instance(**args, use_spot_instance=True, spot_wait_secs=0.3)
    assert requests == [("t3.large", "spot"), ("m5.large", "spot")]
    assert (launched["instance_type"], launched["market"]) == ("m5.large", "spot")


@pytest.mark.parametrize(
    ("codes", "exception"),
    [
        (("InsufficientInstanceCapacity", "Unsupported"), AirflowException),  # capacity may come back: retried
        (("Unsupported", "Unsupported"), AirflowFailException),  # neither type is offered: a retry cannot help
    ],
)
def test_every_type_refused_is_one_error_naming_each(ec2, capsys, codes, exception):
    args = ec2.launch_args(instance_type=["t3.large", "m5.large"])
    with refused_launches(dict(zip(args["instance_type"], codes)), message="EC2's own words") as requests:
        with pytest.raises(exception) as raised:
            RampEc2Hook().launch_instance(**args)
    assert raised.type is exception and requests == [("t3.large", "on-demand"), ("m5.large", "on-demand")]
    text = str(raised.value)
    assert f"t3.large: {codes[0]} (EC2's own words); m5.large: {codes[1]} (EC2's own words)" in text
    assert "EC2 refused every type of aws.instance_type" in text
    assert ("Try again later, or add other" in text) == (exception is AirflowException)
    assert text in capsys.readouterr().out
    assert live_instances(ec2, args["run_id"]) == []


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("UnauthorizedOperation", "may not launch an instance"),
        ("InvalidKeyPair.NotFound", "check aws.key_name"),
        ("InvalidParameterValue", "instance type t3.large: check aws.instance_type"),  # e.g. a misspelt type
    ],
)
def test_an_error_that_is_not_about_capacity_fails_at_once(ec2, code, words):
    args = ec2.launch_args(instance_type=["t3.large", "m5.large"])
    with refused_launches({"t3.large": code}) as requests:
        with pytest.raises(AirflowFailException, match=words):
            RampEc2Hook().launch_instance(**args, use_spot_instance=True, spot_wait_secs=0.3)
    assert requests == [("t3.large", "spot")]  # neither on demand nor the next type
    assert live_instances(ec2, args["run_id"]) == []


def test_a_bad_ami_fails_at_once(ec2, monkeypatch):
    import moto.settings

    monkeypatch.setattr(moto.settings, "ENABLE_AMI_VALIDATION", True)  # moto's own answer: InvalidAMIID.NotFound
    args = ec2.launch_args(image_id="ami-00000000000000000", instance_type=["t3.large", "m5.large"])
    with refused_launches({}) as requests:
        with pytest.raises(AirflowFailException, match="AMI ami-00000000000000000 does not exist"):
            RampEc2Hook().launch_instance(**args)
    assert requests == [("t3.large", "on-demand")]


@pytest.mark.parametrize(
    ("code", "exception", "words"),
    [
        ("InsufficientInstanceCapacity", AirflowException, "AWS has no capacity for instance type t2.micro"),
        ("UnauthorizedOperation", AirflowFailException, "may not launch an instance"),
        ("Unsupported", AirflowFailException, "check aws.instance_type"),
    ],
)
def test_launch_errors_in_plain_words(ec2, capsys, code, exception, words):
    """With one instance type (a string, as every config had), a refusal reads as it always did."""
    args = ec2.launch_args()
    with (
        refused_launches({"t2.micro": code}, message="EC2's own words"),
        pytest.raises(exception, match=words) as raised,
    ):
        RampEc2Hook().launch_instance(**args)
    # Capacity comes back: only that one may be retried by Airflow.
    assert (raised.type is AirflowException) == (code == "InsufficientInstanceCapacity")
    assert words in capsys.readouterr().out  # Airflow's log, printed by structlog
    assert live_instances(ec2, args["run_id"]) == []


def test_launch_with_an_unknown_instance_type(ec2, monkeypatch):
    import moto.settings

    monkeypatch.setattr(moto.settings, "EC2_ENABLE_INSTANCE_TYPE_VALIDATION", True)
    # A misspelt type is a mistake to fix, not a fallback to take: the next type is not tried.
    args = ec2.launch_args(instance_type=["t9.nonexistent", "t2.micro"])
    with refused_launches({}) as requests:
        with pytest.raises(AirflowFailException, match=r"instance type t9.nonexistent: check aws.instance_type"):
            RampEc2Hook().launch_instance(**args)
    assert requests == [("t9.nonexistent", "on-demand")]
    assert live_instances(ec2, args["run_id"]) == []


def test_readiness_waits_for_status_checks(ec2):
    hook = RampEc2Hook()
    ec2.set_status_delay(3600)
    try:
        instance_id = hook.launch_instance(**ec2.launch_args())["instance_id"]
        assert hook.get_readiness(instance_id)[0] == ec2_lifecycle.WAITING
        assert asyncio.run(hook.get_readiness_async(instance_id))[0] == ec2_lifecycle.WAITING
    finally:
        ec2.set_status_delay(0)
    assert hook.get_readiness(instance_id)[0] == ec2_lifecycle.READY
    assert asyncio.run(hook.get_readiness_async(instance_id))[0] == ec2_lifecycle.READY
    hook.terminate_instance(instance_id)
    verdict, description = hook.get_readiness(instance_id)
    assert verdict == ec2_lifecycle.GONE and "terminated" in description
    assert hook.get_readiness("i-0123456789abcdef0")[0] == ec2_lifecycle.GONE


def test_held_async_client_serves_every_call_of_its_block(ec2, monkeypatch):
    hook = RampEc2Hook()
    instance_id = hook.launch_instance(**ec2.launch_args())["instance_id"]
    made = async_clients_made(monkeypatch)

    async def polls() -> list:
        async with hook.held_async_client():
            seen = [await hook.get_readiness_async(instance_id) for _ in range(3)]
            seen.append(await hook.get_ssh_address_async(instance_id))
        seen.append(await hook.get_readiness_async(instance_id))  # outside: a client of its own
        return seen

    seen = asyncio.run(polls())
    assert [verdict for verdict, _ in seen[:3]] == [ec2_lifecycle.READY] * 3
    assert seen[3] == hook.get_ssh_address(instance_id)
    assert seen[4][0] == ec2_lifecycle.READY
    assert len(made) == 2
    hook.terminate_instance(instance_id)


def test_terminate_twice_and_unknown(ec2):
    hook = RampEc2Hook()
    instance_id = hook.launch_instance(**ec2.launch_args())["instance_id"]
    assert hook.terminate_instance(instance_id) == "running"
    assert hook.terminate_instance(instance_id) == "terminated"
    assert hook.terminate_instance("i-0123456789abcdef0") is None
    assert hook.describe_instance("i-0123456789abcdef0") is None


def test_list_backend_instances_of_one_event(ec2):
    hook = RampEc2Hook()
    event = f"ev-{uuid.uuid4().hex[:8]}"
    mine = hook.launch_instance(**ec2.launch_args(event_name=event))["instance_id"]
    hook.launch_instance(**ec2.launch_args(event_name=event + "-other"))
    ec2.launch()  # not the backend's
    listed = hook.list_backend_instances(event)
    assert [i["InstanceId"] for i in listed] == [mine]
    assert ec2_tags.tags_of(listed[0])[ec2_tags.EVENT] == event and listed[0]["LaunchTime"]
    hook.terminate_instance(mine)
    assert hook.list_backend_instances(event) == []


def test_list_the_instances_of_one_run(ec2):
    hook = RampEc2Hook()
    args = ec2.launch_args()
    first = hook.launch_instance(**args)["instance_id"]
    second = hook.launch_instance(**{**args, "task_id": "attempt_2.launch_instance"})["instance_id"]
    hook.launch_instance(**ec2.launch_args())  # another run's
    assert sorted(i["InstanceId"] for i in hook.list_run_instances(args["dag_id"], args["run_id"])) == sorted(
        [first, second]
    )
    hook.terminate_instance(first)
    assert [i["InstanceId"] for i in hook.list_run_instances(args["dag_id"], args["run_id"])] == [second]


def test_an_instance_terminates_itself_after_its_longest_use(ec2):
    """The failsafe that holds when Airflow is gone: a power-off at boot + lifetime, and a power-off terminates."""
    hook = RampEc2Hook()
    instance_id = hook.launch_instance(**ec2.launch_args(), max_lifetime_secs=2 * 3600 + 1)["instance_id"]
    client = ec2.client()
    behavior = client.describe_instance_attribute(InstanceId=instance_id, Attribute="instanceInitiatedShutdownBehavior")
    assert behavior["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    user_data = client.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")["UserData"]["Value"]
    script = base64.b64decode(user_data).decode()
    assert script.startswith("#!/bin/sh\n") and script.rstrip().endswith("shutdown -P +121")
    hook.terminate_instance(instance_id)


# -- credentials --------------------------------------------------------------------------------


def test_config_profile_and_keys(ec2, tmp_path, monkeypatch):
    credentials = tmp_path / "credentials"
    credentials.write_text("[ramp]\naws_access_key_id = PROFILEKEY\naws_secret_access_key = profile-secret\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    by_profile = RampEc2Hook(profile_name="ramp", region_name="eu-west-3")
    assert by_profile.get_credentials().access_key == "PROFILEKEY"
    assert by_profile.conn.meta.region_name == "eu-west-3"
    by_keys = RampEc2Hook(access_key_id="KEYID", secret_access_key="key-secret")
    assert by_keys.get_credentials().access_key == "KEYID"
    # AWS_ENDPOINT_URL still applies: both reach moto.
    assert by_keys.resolve_image(image_id=ec2.ami_id) == ec2.ami_id
    assert RampEc2Hook().get_credentials().access_key == ec2.env["AWS_ACCESS_KEY_ID"]


def test_airflow_connection_wins_with_its_endpoint(ec2, monkeypatch):
    connection = ec2.airflow_connection()
    connection["login"] = "CONNKEY"
    monkeypatch.setenv("AIRFLOW_CONN_RAMP_AWS", json.dumps(connection))
    # A wrong endpoint in the environment: only the connection's endpoint_url reaches moto.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    hook = RampEc2Hook(aws_conn_id="ramp_aws", profile_name="ignored")
    assert hook.get_credentials().access_key == "CONNKEY"
    assert hook.resolve_image(image_id=ec2.ami_id) == ec2.ami_id
