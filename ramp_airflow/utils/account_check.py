"""The account check before an event opens: EC2's descriptions turned into lines that say OK or what to fix.

Each line names the config field at fault. The levels: ``ERROR`` for what breaks the event or leaks its
private test data (``ramp-airflow check-aws`` then exits 2); ``WARNING`` for what works but should be
tightened (inbound rules beyond SSH); ``OK`` otherwise. Pure: the EC2 calls are the hook's
(:class:`~ramp_airflow.hooks.ec2_account.RampEc2AccountHook`).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from ramp_airflow.config import AwsSettings
from ramp_airflow.utils import ec2_errors

OK, WARNING, ERROR = "OK", "WARNING", "ERROR"
_ALL_TRAFFIC = "-1"
_TCP = ("tcp", "6")
# The parts of a rule that identify it when it is revoked (descriptions do not).
_RULE_SOURCES = {
    "IpRanges": "CidrIp",
    "Ipv6Ranges": "CidrIpv6",
    "PrefixListIds": "PrefixListId",
    "UserIdGroupPairs": "GroupId",
}


@dataclass(frozen=True)
class CheckLine:
    """One finding: its level (``OK``, ``WARNING`` or ``ERROR``) and what it says."""

    level: str
    text: str

    def __str__(self) -> str:
        return f"{self.level}: {self.text}"


def failure_line(err: Exception, action: str) -> CheckLine:
    """
    The ERROR line of a check that failed before it could judge anything.

    :param err: what the hook raised: botocore's error, or the hook's own (already in plain words)
    :param action: what the check was doing, e.g. "find the key pair"
    """
    if isinstance(err, ClientError):
        return CheckLine(ERROR, ec2_errors.explain(ec2_errors.code_of(err), ec2_errors.message_of(err), action))
    if isinstance(err, BotoCoreError):
        return CheckLine(ERROR, ec2_errors.explain_unanswered(err, action))
    return CheckLine(ERROR, str(err))


def image_line(aws: AwsSettings, image: dict, allowed: bool) -> CheckLine:
    """
    Whether the AMI the launch resolves to may be used.

    :param aws: the config's ``aws`` section
    :param image: the AMI's EC2 description
    :param allowed: whether EC2 lists it among the images of ``aws.ami_owners``
    """
    image_id, owner, owners = image["ImageId"], image.get("OwnerId"), ", ".join(aws.ami_owners)
    found = (
        f"aws.ami_image_id {image_id}" if aws.ami_image_id else f"{image_id}, the newest named {aws.ami_image_name!r}"
    )
    if not allowed:
        return CheckLine(
            ERROR,
            f"the AMI ({found}) belongs to account {owner}, which aws.ami_owners ({owners}) does not list: use an "
            "AMI of your own, or add its owner to aws.ami_owners if you trust that account with the event's data",
        )
    if image.get("State") != "available":
        return CheckLine(
            ERROR, f"the AMI ({found}) is {image.get('State')}: wait until it is available, or fix aws.ami_image_id"
        )
    return CheckLine(OK, f"the AMI ({found}) exists and belongs to {owner}, listed in aws.ami_owners ({owners})")


def key_pair_line(aws: AwsSettings, key_pair: dict | None, region: str) -> CheckLine:
    """Whether the key pair ``aws.key_name`` exists (``key_pair``: its description, or None)."""
    if key_pair is None:
        return CheckLine(
            ERROR,
            f"no key pair named {aws.key_name!r} exists in {region}: fix aws.key_name, or import the public key of "
            f"aws.key_path there (aws ec2 import-key-pair --key-name {shlex.quote(aws.key_name)} ...)",
        )
    return CheckLine(OK, f"the key pair {aws.key_name!r} exists in {region}")


def security_group_lines(aws: AwsSettings, group: dict | None, region: str) -> list[CheckLine]:
    """
    Whether the group ``aws.security_group`` exists, lets SSH in, lets nothing else in, and lets nothing out.

    :param aws: the config's ``aws`` section
    :param group: the group's EC2 description, or None when EC2 does not know it
    :param region: the region asked, for the messages
    """
    if group is None:
        return [
            CheckLine(
                ERROR,
                f"no security group {aws.security_group!r} exists in {region} (a name is looked up in the default "
                "VPC, as the launch does; an sg-... id anywhere): fix aws.security_group",
            )
        ]
    name = f"the security group {aws.security_group!r} ({group['GroupId']})"
    lines = [CheckLine(OK, f"{name} exists in {region}")]
    port = aws.ssh_port
    ssh = [rule for rule in group.get("IpPermissions", []) if _lets_tcp_in(rule, port)]
    if ssh:
        sources = ", ".join(source for rule in ssh for source in _sources(rule))
        lines.append(CheckLine(OK, f"{name} lets TCP {port} (aws.ssh_port) in from {sources}"))
    else:
        lines.append(
            CheckLine(
                ERROR,
                f"{name} lets nothing in on TCP {port} (aws.ssh_port): allow SSH from the Airflow workers "
                f"(aws ec2 authorize-security-group-ingress --group-id {group['GroupId']} --protocol tcp --port {port} "
                "--cidr WORKERS_ADDRESS/32), or fix aws.ssh_port",
            )
        )
    others = [rule for rule in group.get("IpPermissions", []) if not _only_ssh(rule, port)]
    if others:
        lines.append(
            CheckLine(
                WARNING,
                f"{name} also lets in {'; '.join(map(_describe, others))}: groups are stateful, so a program of a "
                "participant listening there can send data out through the answers; let in TCP "
                f"{port} (aws.ssh_port) only",
            )
        )
    egress = group.get("IpPermissionsEgress", [])
    if egress:
        lines.append(
            CheckLine(
                ERROR,
                f"{name} has outbound rules ({'; '.join(map(_describe, egress))}): a participant's code could send "
                f"the private test data out; remove them: {revoke_egress_command(group['GroupId'], egress)}",
            )
        )
    else:
        lines.append(CheckLine(OK, f"{name} has no outbound rule: nothing can leave the instance but SSH answers"))
    return lines


def revoke_egress_command(group_id: str, rules: list[dict]) -> str:
    """The ``aws`` CLI command that removes ``rules``, outbound rules as EC2 describes them, from a group."""
    permissions = json.dumps([_identity(rule) for rule in rules], separators=(",", ":"))
    return shlex.join(
        ["aws", "ec2", "revoke-security-group-egress", "--group-id", group_id, "--ip-permissions", permissions]
    )


def _identity(rule: dict) -> dict:
    """A rule as the revoke takes it: protocol, ports and sources, without descriptions."""
    kept = {key: rule[key] for key in ("IpProtocol", "FromPort", "ToPort") if key in rule}
    for key, field in _RULE_SOURCES.items():
        if rule.get(key):
            kept[key] = [{field: source[field]} for source in rule[key]]
    return kept


def _lets_tcp_in(rule: dict, port: int) -> bool:
    if rule["IpProtocol"] == _ALL_TRAFFIC:
        return True
    return rule["IpProtocol"] in _TCP and rule.get("FromPort", 0) <= port <= rule.get("ToPort", 65535)


def _only_ssh(rule: dict, port: int) -> bool:
    return rule["IpProtocol"] in _TCP and rule.get("FromPort") == rule.get("ToPort") == port


def _sources(rule: dict) -> list[str]:
    sources = [source[field] for key, field in _RULE_SOURCES.items() for source in rule.get(key, [])]
    return sources or ["nowhere"]


def _describe(rule: dict) -> str:
    """E.g. ``all traffic with 0.0.0.0/0`` or ``tcp 8000-8080 with sg-1``."""
    if rule["IpProtocol"] == _ALL_TRAFFIC:
        what = "all traffic"
    else:
        low, high = rule.get("FromPort"), rule.get("ToPort")
        what = f"{rule['IpProtocol']} {low}" if low == high else f"{rule['IpProtocol']} {low}-{high}"
    return f"{what} with {', '.join(_sources(rule))}"
