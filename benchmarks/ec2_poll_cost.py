"""
What one EC2 status poll of a trigger costs in CPU: with a new aiobotocore client per poll, and with one
client held for the whole wait (``RampEc2Hook.held_async_client``, as ``InstanceReadyTrigger`` does).

moto runs in a child process, so that its CPU is not counted; the figures are this process's CPU
seconds per ``DescribeInstanceStatus`` poll. Inside a network namespace:

    unshare -n bash -c 'ip link set lo up && .venv/bin/python benchmarks/ec2_poll_cost.py'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_MOTO = """
import json, sys
sys.path.insert(0, sys.argv[1])
from testbench.ec2 import running_ec2
with running_ec2() as ec2:
    print(json.dumps({"env": ec2.env, "instance_id": ec2.launch()["InstanceId"]}), flush=True)
    sys.stdin.read()  # until the parent closes it
"""


async def polls(instance_id: str, count: int, held: bool) -> None:
    from ramp_airflow.hooks.ec2 import RampEc2Hook

    hook = RampEc2Hook()
    if held:
        async with hook.held_async_client():
            for _ in range(count):
                await hook.get_readiness_async(instance_id)
    else:
        for _ in range(count):
            await hook.get_readiness_async(instance_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--polls", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    moto = subprocess.Popen(
        [sys.executable, "-c", _MOTO, str(ROOT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        started = json.loads(moto.stdout.readline())
        # Airflow's log lines (a line per client made) would bury the figures; read before Airflow is imported.
        os.environ.update(started["env"], AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING")
        for _ in range(args.repeats):
            for held in (False, True):
                cpu, wall = time.process_time(), time.monotonic()
                asyncio.run(polls(started["instance_id"], args.polls, held))
                cpu, wall = (time.process_time() - cpu) / args.polls, (time.monotonic() - wall) / args.polls
                label = "one client held" if held else "a client per poll"
                print(f"{label:>18}: {cpu * 1000:5.1f} ms CPU, {wall * 1000:5.1f} ms wall per poll", flush=True)
    finally:
        moto.stdin.close()
        moto.wait(timeout=30)


if __name__ == "__main__":
    main()
