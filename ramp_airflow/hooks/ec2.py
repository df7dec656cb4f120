"""The backend's EC2 work, on the amazon provider's :class:`EC2Hook` (client API).

Credentials, in this order: an Airflow AWS connection when ``aws_conn_id`` is given (its
``endpoint_url`` extra points at another endpoint); else the config's ``profile_name`` or
access keys; else boto3's own chain and environment (``AWS_PROFILE``, ``AWS_ENDPOINT_URL``...).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from functools import cached_property, partial
from typing import NoReturn

from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook
from airflow.providers.amazon.aws.utils import trim_none_values
from airflow.providers.amazon.aws.utils.connection_wrapper import AwsConnectionWrapper
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException
from botocore.exceptions import ClientError

from ramp_airflow.utils import ec2_errors, ec2_lifecycle, ec2_requests, ec2_tags

_NOT_FOUND = "InvalidInstanceID.NotFound"


class RampEc2Hook(EC2Hook):
    """
    Launch, watch and terminate the instances that train RAMP submissions.

    :param aws_conn_id: an Airflow AWS connection; None uses the settings below, then boto3's chain
    :param region_name: the AWS region (default: the connection's, then boto3's)
    :param profile_name: a profile of the AWS shared config files (``aws.profile_name``)
    :param access_key_id: an access key id (``aws.access_key_id``), with ``secret_access_key``
    :param secret_access_key: its secret (never logged)
    :param spot_retry_secs: how long to wait between two spot launch attempts
    """

    def __init__(
        self,
        aws_conn_id: str | None = None,
        region_name: str | None = None,
        profile_name: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        spot_retry_secs: float = 10,
        **kwargs,
    ) -> None:
        super().__init__(api_type="client_type", aws_conn_id=aws_conn_id, region_name=region_name, **kwargs)
        self.profile_name = profile_name
        self.access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self.spot_retry_secs = spot_retry_secs
        self._held_async_client = None

    @cached_property
    def conn_config(self) -> AwsConnectionWrapper:
        """The named Airflow connection, else the config's profile or keys as an unnamed connection."""
        if self.aws_conn_id or not (self.profile_name or self.access_key_id):
            return super().conn_config
        extra = trim_none_values({"profile_name": self.profile_name, "region_name": self._region_name})
        return AwsConnectionWrapper.from_connection_metadata(
            conn_id="ramp-config-aws-section",
            login=self.access_key_id,
            password=self._secret_access_key,
            extra=extra,
        )

    @contextlib.contextmanager
    def _explained(self, action: str, **facts) -> Iterator[None]:
        """Turn EC2's errors into plain words; failures a retry cannot fix fail the task at once."""
        try:
            yield
        except ClientError as err:
            code, message = ec2_errors.code_of(err), ec2_errors.message_of(err)
            self._fail(ec2_errors.explain(code, message, action, **facts), ec2_errors.is_retryable(code), err)

    def _fail(self, text: str, retryable: bool, cause: Exception | None = None) -> NoReturn:
        """Log and raise ``text``; failures a retry cannot fix fail the task at once."""
        self.log.error("%s", text)
        raise (AirflowException if retryable else AirflowFailException)(text) from cause

    def resolve_image(self, image_id: str | None = None, image_name: str | None = None, owners=("self",)) -> str:
        """
        The AMI to launch: ``image_id`` as given, or the newest image named ``image_name``.

        :param image_id: an AMI id; checked to exist
        :param image_name: an AMI name (EC2 wildcards allowed), looked up among ``owners`` only,
            so that a stranger's public image of the same name is never used
        :param owners: account ids, or ``self`` for the account of the credentials
        :return: the AMI id
        """
        if (image_id is None) == (image_name is None):
            raise AirflowFailException("give exactly one of aws.ami_image_id and aws.ami_image_name")
        with self._explained("find the AMI", image=image_id or image_name):
            if image_id is not None:
                if not self.conn.describe_images(ImageIds=[image_id])["Images"]:
                    raise AirflowFailException(
                        f"The AMI {image_id} is not visible to this account: "
                        "check aws.ami_image_id and aws.region_name."
                    )
                return image_id
            filters = [{"Name": "name", "Values": [image_name]}, {"Name": "state", "Values": ["available"]}]
            images = self.conn.describe_images(Owners=list(owners), Filters=filters)["Images"]
        if not images:
            raise AirflowFailException(
                f"No available AMI named {image_name!r} is owned by {', '.join(owners)}: check aws.ami_image_name "
                "and aws.ami_owners (a public image of another account is never used unless its owner is listed)."
            )
        newest = max(images, key=lambda image: image["CreationDate"])
        self.log.info("AMI %r resolves to %s (created %s)", image_name, newest["ImageId"], newest["CreationDate"])
        return newest["ImageId"]

    def find_launched_instances(self, submission_id: int, dag_id: str, run_id: str, task_id: str) -> list[dict]:
        """The live instances that the task ``task_id`` of a run launched for ``submission_id``."""
        tags = ec2_tags.launch_filter_tags(submission_id, dag_id, run_id, task_id)
        return self._describe(ec2_tags.tag_filters(tags))

    def list_run_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """The live instances that any task of one run launched."""
        tags = {ec2_tags.BACKEND: ec2_tags.BACKEND_VALUE, ec2_tags.DAG_ID: dag_id, ec2_tags.RUN_ID: run_id}
        return self._describe(ec2_tags.tag_filters(tags))

    def list_backend_instances(self, event_name: str) -> list[dict]:
        """The event's live backend instances: EC2 descriptions, with ``Tags`` and ``LaunchTime``."""
        tags = {ec2_tags.BACKEND: ec2_tags.BACKEND_VALUE, ec2_tags.EVENT: event_name}
        return self._describe(ec2_tags.tag_filters(tags))

    def _describe(self, filters: list[dict]) -> list[dict]:
        with self._explained("list instances"):
            pages = self.conn.get_paginator("describe_instances").paginate(Filters=filters)
            return [inst for page in pages for reservation in page["Reservations"] for inst in reservation["Instances"]]

    def launch_instance(
        self,
        *,
        image_id: str,
        instance_type: str | Sequence[str],
        key_name: str,
        security_group: str,
        event_name: str,
        submission_id: int,
        dag_id: str,
        run_id: str,
        task_id: str,
        use_spot_instance: bool = False,
        spot_wait_secs: float = 120,
        max_lifetime_secs: float | None = None,
    ) -> dict[str, str]:
        """
        Launch one tagged instance for a submission, or return the one this run already launched.

        :param image_id: the AMI id (see :meth:`resolve_image`)
        :param instance_type: e.g. ``t2.micro``, or a list of types tried in order: the next only
            when EC2 refuses one for capacity or does not offer it in the zone
            (:data:`~ramp_airflow.utils.ec2_errors.TYPE_REFUSED_CODES`)
        :param key_name: the EC2 key pair to log in with
        :param security_group: a security group name (default VPC) or id (``sg-...``)
        :param event_name: the RAMP event; ``submission_id`` the submission to train
        :param dag_id: the launching run's DAG, ``run_id`` that run, ``task_id`` the launching task
            (its retries get the same instance back)
        :param use_spot_instance: try a spot instance of each type before launching it on demand
        :param spot_wait_secs: how long to keep trying spot, all types together
        :param max_lifetime_secs: the instance powers itself off after this long, and a power-off
            terminates it: a failsafe that holds even when Airflow is gone (the AMI must run its
            user data at boot, as cloud-init does)
        :return: the instance's id, type and market (:func:`~ramp_airflow.utils.ec2_lifecycle.launched`)
        """
        existing = self.find_launched_instances(submission_id, dag_id, run_id, task_id)
        if existing:
            launched = ec2_lifecycle.launched(existing[0])
            self.log.info("An earlier try launched %s for submission %s: reusing it", launched, submission_id)
            return launched
        tags = ec2_tags.instance_tags(event_name, submission_id, dag_id, run_id, task_id)
        params = ec2_requests.run_request(image_id, key_name, security_group, tags, max_lifetime_secs)
        token = partial(ec2_tags.client_token, dag_id, run_id, task_id, submission_id)
        # One spot wait for all the types: spot_wait_secs bounds what spot adds to a launch, as with one type.
        spot_deadline = time.monotonic() + spot_wait_secs if use_spot_instance else None
        refusals = []
        for one_type in (instance_type,) if isinstance(instance_type, str) else instance_type:
            with self._explained("launch an instance", instance_type=one_type, image=image_id):
                try:
                    return self._launch_type(params, one_type, token, spot_deadline)
                except ClientError as err:
                    code, message = ec2_errors.code_of(err), ec2_errors.message_of(err)
                    if code not in ec2_errors.TYPE_REFUSED_CODES:
                        raise
                    refusals.append((one_type, code, message))
                    self.log.warning("EC2 refused instance type %s (%s: %s)", one_type, code, message)
        self._fail(ec2_errors.types_refused(refusals), any(ec2_errors.is_retryable(c) for _, c, _ in refusals))

    def _launch_type(self, params: dict, instance_type: str, token, spot_deadline: float | None) -> dict[str, str]:
        """One instance type: spot until ``spot_deadline`` (tried at least once; None: never), then on demand."""
        attempt = 0
        while spot_deadline is not None:
            try:
                spot = ec2_requests.of_type(params, instance_type, spot=True)
                return self._run(spot, token(instance_type, f"spot-{attempt}"))
            except ClientError as err:
                code = ec2_errors.code_of(err)
                if code not in ec2_errors.SPOT_UNAVAILABLE_CODES:
                    raise
                remaining = spot_deadline - time.monotonic()
                if remaining <= 0:
                    self.log.warning(
                        "No spot %s within aws.spot_wait_secs (%s): on demand", instance_type, ec2_errors.code_of(err)
                    )
                    break
                self.log.info(
                    "No spot capacity yet (%s); trying again for %.0fs more", ec2_errors.code_of(err), remaining
                )
                time.sleep(min(self.spot_retry_secs, remaining))
                attempt += 1
        return self._run(ec2_requests.of_type(params, instance_type), token(instance_type, "on-demand"))

    def _run(self, params: dict, client_token: str) -> dict[str, str]:
        launched = ec2_lifecycle.launched(self.conn.run_instances(**params, ClientToken=client_token)["Instances"][0])
        self.log.info(
            "Launched %s instance %s of type %s", launched["market"], launched["instance_id"], launched["instance_type"]
        )
        return launched

    def describe_instance(self, instance_id: str) -> dict | None:
        """The instance's EC2 description, or None when EC2 does not know it."""
        with self._explained(f"describe instance {instance_id}"), _unknown_instance():
            return _first_instance(self.conn.describe_instances(InstanceIds=[instance_id]))

    @contextlib.asynccontextmanager
    async def held_async_client(self) -> AsyncIterator[None]:
        """
        Make the ``*_async`` calls of this block share one aiobotocore client. A client costs 70-110 ms
        of CPU to make and 4 ms a call to use (benchmarks/ec2_poll_cost.py), and a trigger that polls
        each second would otherwise make one per poll.
        """
        async with await self.get_async_conn() as client:
            self._held_async_client = client
            try:
                yield
            finally:
                self._held_async_client = None

    @contextlib.asynccontextmanager
    async def _async_client(self) -> AsyncIterator:
        if self._held_async_client is not None:
            yield self._held_async_client
        else:
            async with await self.get_async_conn() as client:
                yield client

    async def describe_instance_async(self, instance_id: str) -> dict | None:
        """:meth:`describe_instance` with aiobotocore, for triggers."""
        async with self._async_client() as client:
            with self._explained(f"describe instance {instance_id}"), _unknown_instance():
                return _first_instance(await client.describe_instances(InstanceIds=[instance_id]))

    def get_ssh_address(self, instance_id: str) -> str:
        """The address to SSH to: the public IP, else the private one (a VPN or a bastion reaches it)."""
        return _ssh_address(instance_id, self.describe_instance(instance_id))

    async def get_ssh_address_async(self, instance_id: str) -> str:
        """:meth:`get_ssh_address` with aiobotocore, for triggers."""
        return _ssh_address(instance_id, await self.describe_instance_async(instance_id))

    def get_readiness(self, instance_id: str) -> tuple[str, str]:
        """(:data:`~ramp_airflow.utils.ec2_lifecycle.READY`, ``WAITING`` or ``GONE``; a description)."""
        response = None
        with self._explained(f"check the status of instance {instance_id}"), _unknown_instance():
            response = self.conn.describe_instance_status(InstanceIds=[instance_id], IncludeAllInstances=True)
        return _readiness(response)

    async def get_readiness_async(self, instance_id: str) -> tuple[str, str]:
        """:meth:`get_readiness` with aiobotocore, for triggers."""
        response = None
        async with self._async_client() as client:
            with _unknown_instance():
                response = await client.describe_instance_status(InstanceIds=[instance_id], IncludeAllInstances=True)
        return _readiness(response)

    def terminate_instance(self, instance_id: str) -> str | None:
        """
        Terminate an instance; one that is already gone counts as done.

        :return: its state before termination, or None when EC2 does not know it
        """
        changes = None
        with self._explained(f"terminate instance {instance_id}"), _unknown_instance():
            changes = self.conn.terminate_instances(InstanceIds=[instance_id])["TerminatingInstances"]
        if changes is None:
            self.log.info("Instance %s is already gone", instance_id)
            return None
        previous = changes[0]["PreviousState"]["Name"] if changes else None
        self.log.info("Terminated instance %s (it was %s)", instance_id, previous)
        return previous


@contextlib.contextmanager
def _unknown_instance() -> Iterator[None]:
    """Let EC2's "no such instance" through as an empty answer; the caller's result stays None."""
    try:
        yield
    except ClientError as err:
        if ec2_errors.code_of(err) != _NOT_FOUND:
            raise


def _readiness(response: dict | None) -> tuple[str, str]:
    statuses = response["InstanceStatuses"] if response else []
    return ec2_lifecycle.readiness(next(iter(statuses), None))


def _first_instance(response: dict) -> dict | None:
    return next((inst for r in response["Reservations"] for inst in r["Instances"]), None)


def _ssh_address(instance_id: str, instance: dict | None) -> str:
    if instance is None:
        raise AirflowException(f"Instance {instance_id} does not exist (any more): it cannot be reached")
    address = instance.get("PublicIpAddress") or instance.get("PrivateIpAddress")
    if not address:
        raise AirflowException(f"Instance {instance_id} has no IP address (state {instance['State']['Name']})")
    return address
