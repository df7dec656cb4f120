"""The RunInstances requests the backend sends: pure, built from the config's validated values."""

from __future__ import annotations

from collections.abc import Mapping

from ramp_airflow.utils import ec2_lifecycle

_SPOT = {
    "MarketType": "spot",
    "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
}


def is_group_id(security_group: str) -> bool:
    """Whether ``aws.security_group`` is a group id (``sg-...``) rather than a name in the default VPC."""
    return security_group.startswith("sg-")


def run_request(
    image_id: str, key_name: str, security_group: str, tags: Mapping[str, str], max_lifetime_secs: float | None
) -> dict:
    """
    The parameters of every launch request of one instance, its type and market aside.

    :param image_id: the AMI id
    :param key_name: the EC2 key pair the instance gets
    :param security_group: a name (default VPC) or an ``sg-`` id
    :param tags: put on the instance and its volumes (see :mod:`ramp_airflow.utils.ec2_tags`)
    :param max_lifetime_secs: the instance powers itself off, and so terminates, after this long (None: never)
    """
    tag_list = [{"Key": key, "Value": value} for key, value in tags.items()]
    group = {"SecurityGroupIds" if is_group_id(security_group) else "SecurityGroups": [security_group]}
    params = dict(
        ImageId=image_id,
        KeyName=key_name,
        MinCount=1,
        MaxCount=1,
        **group,
        TagSpecifications=[{"ResourceType": kind, "Tags": tag_list} for kind in ("instance", "volume")],
        InstanceInitiatedShutdownBehavior="terminate",
    )
    if max_lifetime_secs is not None:
        params["UserData"] = ec2_lifecycle.power_off_script(max_lifetime_secs)
    return params


def of_type(params: dict, instance_type: str, spot: bool = False) -> dict:
    """``params`` (see :func:`run_request`) for one instance type, on the spot market or on demand."""
    market = {"InstanceMarketOptions": _SPOT} if spot else {}
    return {**params, "InstanceType": instance_type, **market}
