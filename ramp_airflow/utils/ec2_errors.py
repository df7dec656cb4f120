"""EC2's error codes, told in plain words that name the config field to fix."""

from __future__ import annotations

from collections.abc import Sequence

# Capacity comes back by itself: a later try (a task retry) may succeed.
CAPACITY_CODES = ("InsufficientInstanceCapacity", "InsufficientCapacity", "InsufficientHostCapacity")
# What a spot request answers when spot capacity or price does not allow it right now.
SPOT_UNAVAILABLE_CODES = (*CAPACITY_CODES, "SpotMaxPriceTooLow", "MaxSpotInstanceCountExceeded")
# What refuses one instance type, not the request: the next type of aws.instance_type is tried. EC2 says
# Unsupported when the zone does not offer the type; a type that does not exist at all (a typo,
# InvalidParameterValue) is a config error, and fails at once.
TYPE_REFUSED_CODES = (*CAPACITY_CODES, "Unsupported")
_PERMISSION_CODES = ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "AuthFailure")
_INSTANCE_TYPE_CODES = ("InvalidParameterValue", "Unsupported", "InvalidInstanceType", "InvalidInstanceType.NotFound")


def is_retryable(code: str) -> bool:
    """True when the same request may succeed later (no capacity now, throttling)."""
    return code in CAPACITY_CODES or code in ("RequestLimitExceeded", "Throttling", "InstanceLimitExceeded")


def explain(code: str, message: str, action: str, instance_type: str | None = None, image: str | None = None) -> str:
    """
    One plain sentence (plus EC2's own words) about a failed EC2 request.

    :param code: botocore's ``Error.Code``
    :param message: botocore's ``Error.Message``
    :param action: what was being done, e.g. "launch an instance"
    :param instance_type: the instance type of the request, when there was one
    :param image: the AMI of the request, when there was one
    """
    if code in CAPACITY_CODES:
        text = (
            f"AWS has no capacity for instance type {instance_type} right now. Try again later, or "
            "choose another aws.instance_type or aws.region_name."
        )
    elif code == "InstanceLimitExceeded":
        text = "The account's instance (vCPU) limit is reached: terminate instances or ask AWS for a higher quota."
    elif code.startswith("InvalidAMIID"):
        text = f"The AMI {image} does not exist here or cannot be used: check aws.ami_image_id and aws.region_name."
    elif code in _INSTANCE_TYPE_CODES:
        text = (
            f"EC2 refused the request, most likely the instance type {instance_type}: check aws.instance_type "
            "(it must exist and be offered in the region)."
        )
    elif code in _PERMISSION_CODES:
        text = (
            f"The AWS credentials in use may not {action}: grant the permission to the user or role, or check "
            "aws.profile_name, aws.access_key_id or the Airflow AWS connection (aws.aws_conn_id)."
        )
    elif code.startswith("InvalidKeyPair"):
        text = "The key pair does not exist in this region: check aws.key_name."
    elif code.startswith("InvalidGroup"):
        text = "The security group does not exist in this region: check aws.security_group."
    else:
        text = f"EC2 refused to {action}."
    return f"Could not {action}: {text} (EC2 said {code}: {message})"


def types_refused(refusals: Sequence[tuple[str, str, str]]) -> str:
    """
    Why no instance was launched when EC2 refused every type of ``aws.instance_type``.

    :param refusals: (instance type, EC2's code, EC2's message) per type, in the order tried
    """
    if len(refusals) == 1:
        instance_type, code, message = refusals[0]
        return explain(code, message, "launch an instance", instance_type=instance_type)
    reasons = "; ".join(f"{instance_type}: {code} ({message})" for instance_type, code, message in refusals)
    # Capacity comes back; a type the zone does not offer does not.
    advice = "Try again later, or add" if any(is_retryable(code) for _, code, _ in refusals) else "Add"
    return (
        f"Could not launch an instance: EC2 refused every type of aws.instance_type ({reasons}). {advice} "
        "other instance types to aws.instance_type, or choose another aws.region_name."
    )
