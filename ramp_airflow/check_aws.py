"""``ramp-airflow check-aws``: an event's AMI, key pair and security group, checked with read-only EC2 calls.

The hook asks EC2 (:mod:`~ramp_airflow.hooks.ec2_account`), the pure helpers of
:mod:`~ramp_airflow.utils.account_check` judge the answers; this module runs the checks in order.
"""

from __future__ import annotations

from collections.abc import Iterator

from airflow.providers.common.compat.sdk import AirflowException
from botocore.exceptions import BotoCoreError, ClientError

from ramp_airflow.config import AwsSettings, EventConfig
from ramp_airflow.dag_factory.arguments import aws_credentials
from ramp_airflow.hooks.ec2_account import RampEc2AccountHook
from ramp_airflow.utils import account_check, ec2_errors
from ramp_airflow.utils.account_check import CheckLine


def account_lines(config: EventConfig) -> Iterator[CheckLine]:
    """The checks' lines, in order; when the credentials or the endpoint fail, one line says so and ends them."""
    hook = RampEc2AccountHook(**aws_credentials(config).hook_kwargs())
    for action, step in _CHECKS:
        try:
            yield from step(config.aws, hook)
        except (BotoCoreError, ClientError, AirflowException) as err:
            yield account_check.failure_line(err, action)
            # The hook's own errors carry botocore's as their cause.
            if ec2_errors.no_request_can_succeed(err.__cause__ or err):
                return


def _image_lines(aws: AwsSettings, hook: RampEc2AccountHook) -> list[CheckLine]:
    image_id = hook.resolve_image(aws.ami_image_id, aws.ami_image_name, aws.ami_owners)  # as the launch does
    owned = hook.describe_image(image_id, aws.ami_owners)
    return [account_check.image_line(aws, owned or hook.describe_image(image_id), allowed=owned is not None)]


def _key_pair_lines(aws: AwsSettings, hook: RampEc2AccountHook) -> list[CheckLine]:
    return [account_check.key_pair_line(aws, hook.describe_key_pair(aws.key_name), hook.conn.meta.region_name)]


def _security_group_lines(aws: AwsSettings, hook: RampEc2AccountHook) -> list[CheckLine]:
    group = hook.describe_security_group(aws.security_group)
    return account_check.security_group_lines(aws, group, hook.conn.meta.region_name)


# What each check does, for its error line, and the check.
_CHECKS = (
    ("find the AMI", _image_lines),
    ("find the key pair", _key_pair_lines),
    ("describe the security group", _security_group_lines),
)
