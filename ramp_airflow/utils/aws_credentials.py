"""How the backend's EC2 tasks authenticate to AWS: the one place the credential set is written."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class AwsCredentials:
    """
    The AWS settings of an event (the config's ``aws`` section), in the order the hook applies them.

    An Airflow AWS connection wins; else a profile or an access key pair; else boto3's own chain
    and environment (``AWS_PROFILE``, ``AWS_ENDPOINT_URL``...).

    :param aws_conn_id: an Airflow AWS connection (``aws.aws_conn_id``)
    :param region_name: the AWS region (``aws.region_name``)
    :param profile_name: an AWS profile (``aws.profile_name``)
    :param access_key_id: an access key id (``aws.access_key_id``)
    :param secret_access_key: its secret (``aws.secret_access_key``); never in a repr, a log or a
        trigger's arguments
    """

    aws_conn_id: str | None = None
    region_name: str | None = None
    profile_name: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)

    def hook_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~ramp_airflow.hooks.ec2.RampEc2Hook`."""
        return dataclasses.asdict(self)

    def reference(self, config_path: str | None) -> dict[str, Any]:
        """
        What a trigger carries instead: everything but the secret, and the config file it is read
        back from (trigger arguments are stored in Airflow's database and DAGs).
        """
        kwargs = self.hook_kwargs()
        del kwargs["secret_access_key"]
        return {**kwargs, "config_path": config_path}


# No setting of its own: boto3's chain and environment decide.
DEFAULT_CREDENTIALS = AwsCredentials()
