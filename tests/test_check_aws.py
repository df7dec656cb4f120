"""``ramp-airflow check-aws`` against moto: a good setup, and each way an account can be set up wrong.

Each case makes its own security groups (deleted afterwards) and only reads the bench's AMIs and key
pair, so that moto's state stays as the other tests expect it.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import types
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import NoCredentialsError, NoRegionError
from moto.core.authorization import enable_iam_authentication

from ramp_airflow.cli import main
from ramp_airflow.config import AwsSettings
from ramp_airflow.config.schema import settings_of
from ramp_airflow.utils import account_check, ec2_errors
from testbench._proc import free_port
from testbench.event_config import write_event_config

CLI = str(Path(sys.executable).with_name("ramp-airflow"))
# The check never opens the RAMP database: the config only has to name one.
NO_DATABASE = types.SimpleNamespace(
    event="iris",
    sqlalchemy_config={"drivername": "postgresql", "username": "ramp", "host": "127.0.0.1", "database": "ramp"},
)
WORKERS = "10.1.2.3/32"
FIELD_CHECKS = 5  # the AMI, the key pair, the group exists, lets SSH in, lets nothing out


@pytest.fixture
def make_group(ec2):
    """Create security groups of this test's own (SSH in from WORKERS unless told, egress as AWS sets it)."""
    client, created = ec2.client(), []

    def make(ssh: bool = True, egress: bool = False, more_ingress: list | None = None) -> dict:
        group_id = client.create_security_group(GroupName=f"check-{uuid.uuid4().hex[:8]}", Description="check-aws")[
            "GroupId"
        ]
        created.append(group_id)
        ingress = list(more_ingress or [])
        if ssh:
            ingress.append({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": WORKERS}]})
        if ingress:
            client.authorize_security_group_ingress(GroupId=group_id, IpPermissions=ingress)
        if not egress:
            default = client.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]["IpPermissionsEgress"]
            client.revoke_security_group_egress(GroupId=group_id, IpPermissions=default)
        return client.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]

    yield make
    for group_id in created:
        client.delete_security_group(GroupId=group_id)


@pytest.fixture
def check(ec2, instance, tmp_path, capsys):
    """Run ``ramp-airflow check-aws`` in this process on a bench config; (exit status, output lines)."""

    def run(**aws_overrides) -> tuple[int, list[str]]:
        aws_overrides.setdefault("ssh_port", 22)
        path = write_event_config(tmp_path / f"{uuid.uuid4().hex[:8]}.yml", NO_DATABASE, instance, ec2, **aws_overrides)
        status = main(["check-aws", str(path)])
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        # In this process Airflow may log to stdout too (an earlier test imported it): the check's lines name the file.
        return status, [line.removeprefix(f"{path}: ") for line in out.splitlines() if line.startswith(f"{path}: ")]

    return run


def levels(lines: list[str]) -> list[str]:
    return [line.split(":", 1)[0] for line in lines]


def the_error(lines: list[str]) -> str:
    [error] = [line for line in lines if line.startswith("ERROR: ")]
    return error


def test_a_good_setup_as_a_subprocess(ec2, instance, tmp_path, make_group):
    group = make_group()
    config = write_event_config(
        tmp_path / "config.yml", NO_DATABASE, instance, ec2, security_group=group["GroupName"], ssh_port=22
    )
    proc = subprocess.run(
        [CLI, "check-aws", str(config)],
        env={**os.environ, **ec2.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == FIELD_CHECKS and all(line.startswith(f"{config}: OK: ") for line in lines), lines
    assert f"{ec2.ami_id}, the newest named {ec2.ami_name!r}" in lines[0] and ec2.account_id in lines[0]
    assert f"TCP 22 (aws.ssh_port) in from {WORKERS}" in lines[3]
    assert "no outbound rule" in lines[4]


def test_a_group_given_by_id_and_an_ami_by_id(check, ec2, make_group):
    group = make_group()
    status, lines = check(security_group=group["GroupId"], ami_image_id=ec2.ami_id, ami_image_name=None)
    assert (status, levels(lines)) == (0, ["OK"] * FIELD_CHECKS), lines
    assert f"aws.ami_image_id {ec2.ami_id}" in lines[0]


def test_a_missing_ami(check, ec2, make_group):
    group = make_group()["GroupName"]
    status, lines = check(security_group=group, ami_image_name="no-such-kit")
    assert status == 2 and "aws.ami_image_name" in the_error(lines) and "aws.ami_owners" in the_error(lines)
    assert levels(lines) == ["ERROR"] + ["OK"] * (FIELD_CHECKS - 1)  # the other checks still ran
    status, lines = check(security_group=group, ami_image_id="ami-0123456789abcdef0", ami_image_name=None)
    assert status == 2 and "aws.ami_image_id" in the_error(lines)


def test_an_ami_of_a_stranger(check, ec2, make_group):
    group = make_group()["GroupName"]
    status, lines = check(security_group=group, ami_image_id=ec2.stranger_ami_id, ami_image_name=None)
    assert status == 2
    assert f"belongs to account {ec2.stranger_account}" in the_error(lines) and "aws.ami_owners" in the_error(lines)
    # Listing its owner is how an organiser says the account is trusted.
    status, lines = check(
        security_group=group, ami_image_id=ec2.stranger_ami_id, ami_image_name=None, ami_owners=[ec2.stranger_account]
    )
    assert status == 0, lines


def test_a_missing_key_pair(check, make_group):
    status, lines = check(security_group=make_group()["GroupName"], key_name="nobody-key")
    assert status == 2 and "'nobody-key'" in the_error(lines) and "aws.key_name" in the_error(lines)


def test_a_missing_group(check):
    status, lines = check(security_group="no-such-group")
    assert status == 2 and "'no-such-group'" in the_error(lines) and "aws.security_group" in the_error(lines)
    assert levels(lines) == ["OK", "OK", "ERROR"]


def test_no_ssh_ingress(check, make_group):
    group = make_group(ssh=False)
    status, lines = check(security_group=group["GroupName"])
    error = the_error(lines)
    assert status == 2 and "TCP 22 (aws.ssh_port)" in error
    assert f"authorize-security-group-ingress --group-id {group['GroupId']} --protocol tcp --port 22" in error
    # Another port in the config is checked, not 22.
    status, lines = check(security_group=make_group()["GroupName"], ssh_port=2222)
    assert status == 2 and "TCP 2222 (aws.ssh_port)" in the_error(lines)


def test_the_default_egress_rule_and_its_fix(check, ec2, make_group):
    group = make_group(egress=True)
    status, lines = check(security_group=group["GroupName"])
    error = the_error(lines)
    assert status == 2 and "outbound rules (all traffic with 0.0.0.0/0)" in error and "private test data" in error
    # The printed command is the fix: applied as it says, the check passes.
    command = shlex.split(error.split("remove them: ", 1)[1])
    assert command[:5] == ["aws", "ec2", "revoke-security-group-egress", "--group-id", group["GroupId"]]
    assert command[5] == "--ip-permissions"
    ec2.client().revoke_security_group_egress(GroupId=command[4], IpPermissions=json.loads(command[6]))
    status, lines = check(security_group=group["GroupName"])
    assert status == 0, lines


def test_ingress_beyond_ssh_is_a_warning(check, make_group):
    wide = {"IpProtocol": "tcp", "FromPort": 8000, "ToPort": 8080, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    status, lines = check(security_group=make_group(more_ingress=[wide])["GroupName"])
    assert status == 0
    [warning] = [line for line in lines if line.startswith("WARNING: ")]
    assert "tcp 8000-8080 with 0.0.0.0/0" in warning and "aws.ssh_port" in warning


def test_refused_credentials_give_one_line(check, make_group):
    group = make_group()["GroupName"]
    with enable_iam_authentication():
        status, lines = check(security_group=group, access_key_id="AKIANOBODY", secret_access_key="wrong")
    assert status == 2 and len(lines) == 1
    assert "AuthFailure" in lines[0] and "aws.access_key_id" in lines[0]


def test_a_missing_permission_names_its_check(check, ec2, make_group):
    group = make_group()["GroupName"]
    iam, user = ec2.client("iam"), f"check-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    allowed = {"Effect": "Allow", "Action": ["ec2:DescribeImages", "ec2:DescribeKeyPairs"], "Resource": "*"}
    policy = json.dumps({"Version": "2012-10-17", "Statement": [allowed]})
    iam.put_user_policy(UserName=user, PolicyName="describe", PolicyDocument=policy)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    try:
        with enable_iam_authentication():
            status, lines = check(
                security_group=group, access_key_id=key["AccessKeyId"], secret_access_key=key["SecretAccessKey"]
            )
    finally:
        iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
        iam.delete_user_policy(UserName=user, PolicyName="describe")
        iam.delete_user(UserName=user)
    assert status == 2 and levels(lines) == ["OK", "OK", "ERROR"]
    assert "may not describe the security group" in lines[2] and "ec2:DescribeSecurityGroups" in lines[2]


def test_an_unknown_profile(check, make_group):
    status, lines = check(security_group=make_group()["GroupName"], profile_name="no-such-profile")
    assert status == 2 and len(lines) == 1 and "aws.profile_name" in lines[0]


def test_an_unreachable_endpoint_as_a_subprocess(ec2, instance, tmp_path):
    config = write_event_config(tmp_path / "config.yml", NO_DATABASE, instance, ec2)
    closed = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.run(
        [CLI, "check-aws", str(config)],
        env={**os.environ, **ec2.env, "AWS_ENDPOINT_URL": closed, "AWS_MAX_ATTEMPTS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    [line] = proc.stdout.splitlines()
    assert line.startswith(f"{config}: ERROR: Could not find the AMI: EC2 cannot be reached") and closed in line


def test_a_config_error_exits_2(check, ec2, instance, tmp_path, capsys):
    path = write_event_config(tmp_path / "bad.yml", NO_DATABASE, instance, ec2, instance_typ="t2.micro")
    assert main(["check-aws", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "aws.instance_typ" in err


# -- the pure helpers, on descriptions moto does not make ------------------------------------------


def bench_aws(**overrides) -> AwsSettings:
    fields = dict(
        ami_image_id="ami-1",
        ami_image_name=None,
        ami_owners=("self",),
        ami_user_name="ubuntu",
        instance_type="t2.micro",
        key_name="key",
        security_group="sg-1",
        remote_ramp_kit_folder="kit",
        local_predictions_folder="/p",
        local_log_folder="/l",
    )
    defaults = {name: spec.default for name, spec in settings_of(AwsSettings).items() if name not in fields}
    return AwsSettings(**{**defaults, **fields, **overrides})


def test_an_ami_that_is_not_available_yet():
    line = account_check.image_line(bench_aws(), {"ImageId": "ami-1", "OwnerId": "1", "State": "pending"}, True)
    assert line.level == account_check.ERROR and "pending" in line.text and "aws.ami_image_id" in line.text


def test_rules_of_every_kind():
    everything = {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": "sg-1", "UserId": "1", "Description": "d"}]}
    v6 = {"IpProtocol": "tcp", "FromPort": 0, "ToPort": 65535, "Ipv6Ranges": [{"CidrIpv6": "::/0", "Description": "d"}]}
    listed = {"IpProtocol": "udp", "FromPort": 53, "ToPort": 53, "PrefixListIds": [{"PrefixListId": "pl-1"}]}
    group = {"GroupId": "sg-1", "IpPermissions": [everything, listed], "IpPermissionsEgress": [v6, listed]}
    lines = account_check.security_group_lines(bench_aws(), group, "eu-west-3")
    assert [line.level for line in lines] == ["OK", "OK", "WARNING", "ERROR"]
    assert lines[1].text.endswith("lets TCP 22 (aws.ssh_port) in from sg-1")  # all traffic lets SSH in too
    assert "all traffic with sg-1; udp 53 with pl-1" in lines[2].text
    assert "tcp 0-65535 with ::/0; udp 53 with pl-1" in lines[3].text
    command = shlex.split(lines[3].text.split("remove them: ", 1)[1])
    assert json.loads(command[-1]) == [
        {"IpProtocol": "tcp", "FromPort": 0, "ToPort": 65535, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]},
        listed,
    ]


@pytest.mark.parametrize(
    ("err", "field"),
    [(NoCredentialsError(), "aws.aws_conn_id"), (NoRegionError(), "aws.region_name")],
)
def test_unanswered_requests_name_the_field(err, field):
    line = account_check.failure_line(err, "find the key pair")
    assert line.level == account_check.ERROR and line.text.startswith("Could not find the key pair: ")
    assert field in line.text and ec2_errors.no_request_can_succeed(err)
