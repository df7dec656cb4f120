"""The AWS parameters every EC2 task of the backend takes, as the amazon provider's ``utils/mixins.py`` does."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ramp_airflow.hooks.ec2 import RampEc2Hook


class RampEc2HookMixin:
    """
    The AWS parameters every EC2 task of the backend takes, and the hook built from them.

    :param aws_conn_id: an Airflow AWS connection (``aws.aws_conn_id``)
    :param region_name: the AWS region (``aws.region_name``)
    :param profile_name: an AWS profile (``aws.profile_name``)
    :param access_key_id: an access key id (``aws.access_key_id``)
    :param secret_access_key: its secret (``aws.secret_access_key``)
    """

    def __init__(
        self,
        *,
        aws_conn_id: str | None = None,
        region_name: str | None = None,
        profile_name: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        # The hook's (and a trigger's) keyword arguments.
        self.aws_params = {
            "aws_conn_id": aws_conn_id,
            "region_name": region_name,
            "profile_name": profile_name,
            "access_key_id": access_key_id,
            "secret_access_key": secret_access_key,
        }

    @cached_property
    def hook(self) -> RampEc2Hook:
        # Imported here: DAG files import the operators at every parse, and boto3 is slow to load.
        from ramp_airflow.hooks.ec2 import RampEc2Hook

        return RampEc2Hook(**self.aws_params)
