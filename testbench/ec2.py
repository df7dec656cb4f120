"""moto's EC2 API on 127.0.0.1, patched so every instance lives on loopback.

Network safety first: moto hands out made-up addresses (e.g. 54.x public,
172.31.x private) that belong to real hosts on the internet. The provider
connects to whatever address EC2 reports, so the bench patches moto in-process
(the server is a thread of the test process) to report ``127.0.0.1`` as both the
public and the private IP: SSH then reaches the bench sshd and nothing else.
:func:`running_ec2` asserts this on a real launch before yielding.

Also registered: a key pair (the bench's SSH public key), a security group, the
account's own ``iris_backend`` AMI, and a *newer* public ``iris_backend`` AMI of
another account, to test that the AMI lookup filters by owner. Instance status
checks can be held at ``initializing`` for a while (:meth:`MotoEC2.set_status_delay`)
to exercise the provider's waits, and launches refused with EC2's error codes
(:func:`refused_launches`), which moto never answers by itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import ipaddress
import logging
import os
import shutil
import tempfile
import time
import uuid

from testbench._proc import free_port

REGION = "us-east-1"
LOOPBACK = "127.0.0.1"
STRANGER_ACCOUNT = "999988887777"
AMI_NAME = "iris_backend"
KEY_NAME = "bench-key"
SECURITY_GROUP = "bench-sg"
_status_delay = {"seconds": 0.0}


def set_status_delay(seconds: float) -> None:
    """Keep instance/system status ``initializing`` for ``seconds`` after launch."""
    _status_delay["seconds"] = float(seconds)


def _status_wrapper(original):
    def status(self):
        from moto.core.utils import utcnow

        delay = _status_delay["seconds"]
        if self.state_code == 16 and delay > 0:
            age = (utcnow() - self.launch_time).total_seconds()
            if age < delay:
                return {"Status": "initializing", "Details": [{"Name": "reachability", "Status": "initializing"}]}
        return original.fget(self)

    return property(status)


@contextlib.contextmanager
def loopback_patches():
    """Patch moto: loopback IPs for every network interface; delayable status."""
    from moto.ec2.models import elastic_network_interfaces as eni
    from moto.ec2.models.instances import Instance

    saved = (eni.random_public_ip, eni.NetworkInterface.__init__, Instance.instance_status, Instance.system_status)
    original_init = saved[1]

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.private_ip_address = LOOPBACK
        for entry in self.private_ip_addresses:
            entry["PrivateIpAddress"] = LOOPBACK

    eni.random_public_ip = lambda: LOOPBACK
    eni.NetworkInterface.__init__ = init
    Instance.instance_status = _status_wrapper(saved[2])
    Instance.system_status = _status_wrapper(saved[3])
    try:
        yield
    finally:
        (eni.random_public_ip, eni.NetworkInterface.__init__, Instance.instance_status, Instance.system_status) = saved
        set_status_delay(0)


@contextlib.contextmanager
def refused_launches(refusals: dict[str, str], markets=("spot", "on-demand"), message: str = "refused by the bench"):
    """
    Make moto answer RunInstances with an EC2 error, as AWS does when it has no capacity for a type.

    The client gets a real EC2 error response over loopback: the bench patches moto's backend, a
    thread of this process. Yields the (instance type, market) of every RunInstances request, in order.

    :param refusals: instance type to the error code its requests get (e.g. ``InsufficientInstanceCapacity``)
    :param markets: which requests are refused: ``spot``, ``on-demand`` or both
    :param message: EC2's message that goes with the code
    """
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.instances import InstanceBackend

    original, requests = InstanceBackend.run_instances, []

    def run_instances(self, *args, **kwargs):
        request = (kwargs.get("instance_type"), "spot" if kwargs.get("instance_market_options") else "on-demand")
        requests.append(request)
        if request[0] in refusals and request[1] in markets:
            raise EC2ClientError(refusals[request[0]], message)
        return original(self, *args, **kwargs)

    InstanceBackend.run_instances = run_instances
    try:
        yield requests
    finally:
        InstanceBackend.run_instances = original


@contextlib.contextmanager
def recorded_terminations():
    """
    Record when each instance is terminated (moto keeps no such time): yields a dict of instance id to
    ``time.time()`` of its first termination, filled while the block runs. Billed time ends there.
    """
    from moto.ec2.models.instances import Instance

    original, terminated = Instance.terminate, {}

    def terminate(self, *args, **kwargs):
        terminated.setdefault(self.id, time.time())
        return original(self, *args, **kwargs)

    Instance.terminate = terminate
    try:
        yield terminated
    finally:
        Instance.terminate = original


@dataclasses.dataclass
class MotoEC2:
    """The running moto server and what the bench registered in it."""

    endpoint_url: str
    port: int
    env: dict
    account_id: str
    region: str
    ami_id: str
    stranger_ami_id: str
    ami_name: str = AMI_NAME
    key_name: str = KEY_NAME
    security_group: str = SECURITY_GROUP
    stranger_account: str = STRANGER_ACCOUNT

    set_status_delay = staticmethod(set_status_delay)

    def client(self, service: str = "ec2"):
        import boto3

        return boto3.client(
            service,
            region_name=self.region,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )

    def airflow_connection(self) -> dict:
        """An Airflow ``aws`` connection (JSON form) pointing at moto."""
        return {
            "conn_type": "aws",
            "login": self.env["AWS_ACCESS_KEY_ID"],
            "password": self.env["AWS_SECRET_ACCESS_KEY"],
            "extra": {"endpoint_url": self.endpoint_url, "region_name": self.region},
        }

    def launch_args(self, **overrides) -> dict:
        """``RampEc2Hook.launch_instance``'s arguments for the bench AMI, a fresh run of an ``iris`` DAG by default."""
        return (
            dict(
                image_id=self.ami_id,
                instance_type="t2.micro",
                key_name=self.key_name,
                security_group=self.security_group,
                event_name="iris",
                submission_id=42,
                dag_id="ramp_iris_train",
                run_id=f"manual__{uuid.uuid4()}",
                task_id="attempt_1.launch_instance",
            )
            | overrides
        )

    def launch(self, **kwargs) -> dict:
        """Run one instance of the bench AMI and return its description."""
        params = dict(
            ImageId=self.ami_id,
            MinCount=1,
            MaxCount=1,
            InstanceType="t2.micro",
            KeyName=self.key_name,
            SecurityGroups=[self.security_group],
        )
        params.update(kwargs)
        reservation = self.client().run_instances(**params)
        return reservation["Instances"][0]

    def backend(self):
        from moto.ec2.models import ec2_backends

        return ec2_backends[self.account_id][self.region]


def assert_loopback(address: str | None) -> None:
    """Fail loudly if an address EC2 reports is not loopback."""
    assert address and ipaddress.ip_address(address).is_loopback, (
        f"moto reported a non-loopback address {address!r}: refusing to go on"
    )


def _register(ec2: MotoEC2, public_key: str | None) -> tuple[str, str]:
    from moto.ec2.models.amis import Ami
    from moto.ec2.utils import random_ami_id

    client = ec2.client()
    if public_key:
        client.import_key_pair(KeyName=KEY_NAME, PublicKeyMaterial=public_key.encode())
    else:
        client.create_key_pair(KeyName=KEY_NAME)
    client.create_security_group(GroupName=SECURITY_GROUP, Description="ramp-airflow bench")
    own = client.register_image(
        Name=AMI_NAME, Description="bench kit AMI", Architecture="x86_64", RootDeviceName="/dev/sda1"
    )
    backend = ec2.backend()
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    backend.amis[own["ImageId"]].creation_date = now - datetime.timedelta(days=30)
    stranger = Ami(
        backend,
        random_ami_id(),
        name=AMI_NAME,
        public=True,
        owner_id=STRANGER_ACCOUNT,
        description="not ours",
        creation_date=now,
        architecture="x86_64",
    )
    backend.amis[stranger.id] = stranger
    return own["ImageId"], stranger.id


@contextlib.contextmanager
def running_ec2(public_key: str | None = None, port: int | None = None):
    """Start moto on 127.0.0.1, register the bench resources, yield :class:`MotoEC2`.

    ``public_key``: the OpenSSH public key to import as the key pair (the bench
    sshd's client key), so that the key pair named in configs is the real one.
    """
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.server import ThreadedMotoServer

    port = port or free_port()
    home = tempfile.mkdtemp(prefix="bench-aws-")
    endpoint = f"http://{LOOPBACK}:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.path.join(home, "config"),
        "AWS_SHARED_CREDENTIALS_FILE": os.path.join(home, "credentials"),
    }
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no per-request lines
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=port, verbose=False)
    with loopback_patches():
        server.start()
        try:
            ec2 = MotoEC2(
                endpoint_url=endpoint,
                port=port,
                env=env,
                account_id=DEFAULT_ACCOUNT_ID,
                region=REGION,
                ami_id="",
                stranger_ami_id="",
            )
            ec2.ami_id, ec2.stranger_ami_id = _register(ec2, public_key)
            probe = ec2.launch()
            assert_loopback(probe.get("PublicIpAddress"))
            assert_loopback(probe.get("PrivateIpAddress"))
            ec2.client().terminate_instances(InstanceIds=[probe["InstanceId"]])
            yield ec2
        finally:
            server.stop()
            shutil.rmtree(home, ignore_errors=True)
