"""EC2's error codes, told in plain words that name the config field to fix."""

from __future__ import annotations

from collections.abc import Sequence

from botocore import exceptions as boto_errors

# Capacity comes back by itself: a later try (a task retry) may succeed.
CAPACITY_CODES = ("InsufficientInstanceCapacity", "InsufficientCapacity", "InsufficientHostCapacity")
# What a spot request answers when spot capacity or price does not allow it right now.
SPOT_UNAVAILABLE_CODES = (*CAPACITY_CODES, "SpotMaxPriceTooLow", "MaxSpotInstanceCountExceeded")
# What refuses one instance type, not the request: the next type of aws.instance_type is tried. EC2 says
# Unsupported when the zone does not offer the type; a type that does not exist at all (a typo,
# InvalidParameterValue) is a config error, and fails at once.
TYPE_REFUSED_CODES = (*CAPACITY_CODES, "Unsupported")
_PERMISSION_CODES = ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "AuthFailure")
# The credentials themselves are refused: no other request can succeed either.
_REFUSED_CREDENTIALS_CODES = ("AuthFailure",)
_INSTANCE_TYPE_CODES = ("InvalidParameterValue", "Unsupported", "InvalidInstanceType", "InvalidInstanceType.NotFound")


def code_of(err: boto_errors.ClientError) -> str:
    """botocore's ``Error.Code`` of a refused request."""
    return err.response.get("Error", {}).get("Code", "")


def message_of(err: boto_errors.ClientError) -> str:
    """botocore's ``Error.Message`` of a refused request."""
    return err.response.get("Error", {}).get("Message", "")


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


def explain_unanswered(err: boto_errors.BotoCoreError, action: str) -> str:
    """
    One plain sentence about a request that EC2 never answered: no credentials, or no endpoint.

    :param err: what botocore raised instead of an answer
    :param action: what was being done, e.g. "find the key pair"
    """
    if isinstance(err, boto_errors.NoCredentialsError | boto_errors.PartialCredentialsError):
        text = (
            "no AWS credentials were found: give aws.aws_conn_id, aws.profile_name, or aws.access_key_id with "
            "aws.secret_access_key (or set boto3's environment, e.g. AWS_PROFILE)."
        )
    elif isinstance(err, boto_errors.NoRegionError):
        text = "no AWS region is set: give aws.region_name (or the Airflow AWS connection's region_name extra)."
    elif isinstance(err, boto_errors.ProfileNotFound):
        text = "the AWS profile does not exist on this machine: check aws.profile_name (or AWS_PROFILE)."
    elif isinstance(err, boto_errors.ConnectionError):
        text = (
            "EC2 cannot be reached: check aws.region_name, the endpoint (the Airflow AWS connection's endpoint_url "
            "extra, AWS_ENDPOINT_URL) and this machine's network."
        )
    else:
        text = "boto3 failed before EC2 could answer."
    return f"Could not {action}: {text} (botocore said: {err})"


def no_request_can_succeed(err: Exception) -> bool:
    """True when the credentials or the endpoint fail, so that every other request would fail alike."""
    if isinstance(err, boto_errors.ClientError):
        return code_of(err) in _REFUSED_CREDENTIALS_CODES
    return isinstance(err, boto_errors.BotoCoreError)


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
