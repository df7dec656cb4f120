"""Read-only questions about an event's EC2 setup, for ``ramp-airflow check-aws``.

Each method is one EC2 Describe call; "no such thing" comes back as None, and every other error of
botocore passes through unexplained, so that the check can tell a missing permission from a refused
credential or an unreachable endpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

from botocore.exceptions import ClientError

from ramp_airflow.hooks.ec2 import RampEc2Hook
from ramp_airflow.utils import ec2_errors
from ramp_airflow.utils.ec2_requests import is_group_id


class RampEc2AccountHook(RampEc2Hook):
    """
    :class:`~ramp_airflow.hooks.ec2.RampEc2Hook` (same credentials, same AMI resolution) plus the
    descriptions the account check needs; it takes the same parameters.
    """

    def describe_image(self, image_id: str, owners: Sequence[str] | None = None) -> dict | None:
        """
        The AMI's description, or None.

        :param image_id: an AMI id
        :param owners: when given, only an image one of them owns (EC2 resolves ``self`` and aliases
            such as ``amazon``, as in the launch's lookup by name)
        """
        owned = {"Owners": list(owners)} if owners else {}
        images = self.conn.describe_images(Filters=[{"Name": "image-id", "Values": [image_id]}], **owned)["Images"]
        return images[0] if images else None

    def describe_key_pair(self, key_name: str) -> dict | None:
        """The key pair's description, or None when the region has none of that name."""
        try:
            return self.conn.describe_key_pairs(KeyNames=[key_name])["KeyPairs"][0]
        except ClientError as err:
            if ec2_errors.code_of(err) != "InvalidKeyPair.NotFound":
                raise
        return None

    def describe_security_group(self, security_group: str) -> dict | None:
        """The group the launch would use (an ``sg-`` id, else a name in the default VPC), or None."""
        key = "GroupIds" if is_group_id(security_group) else "GroupNames"
        try:
            return self.conn.describe_security_groups(**{key: [security_group]})["SecurityGroups"][0]
        except ClientError as err:
            if ec2_errors.code_of(err) != "InvalidGroup.NotFound":
                raise
        return None
