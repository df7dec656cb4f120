"""How long EC2 bills an instance, and what that costs: the one place for the billing rule.

The rule applied: EC2 bills a Linux instance per second with a 60 s minimum, so an instance's billed
seconds are ``max(60, ceil(termination - launch))``, from EC2's ``LaunchTime`` to the moment our
terminate call was made. It is an estimate, slightly high: EC2 starts billing once the instance runs
(``LaunchTime`` is a little earlier) and stops when it starts shutting down (a little after our call),
and it leaves out the EBS volume, billed apart. An instance found already stopped or terminated (a
reclaimed spot instance) stopped costing before our call: its seconds are an upper bound.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping

MINIMUM_BILLED_SECS = 60


def billed_seconds(launched_at: datetime.datetime, terminated_at: datetime.datetime) -> int:
    """
    The seconds EC2 bills for an instance launched and terminated at these (timezone-aware) times.

    :param launched_at: EC2's ``LaunchTime``
    :param terminated_at: when the terminate call was made; a clock behind EC2's still bills the minimum
    """
    return max(MINIMUM_BILLED_SECS, math.ceil((terminated_at - launched_at).total_seconds()))


def cost(seconds: float, instance_type: str, prices: Mapping[str, float]) -> float | None:
    """
    What ``seconds`` of ``instance_type`` cost at ``prices`` (``aws.instance_price_per_hour``).

    :return: the amount, in the prices' currency; None when the table has no price for the type
    """
    price = prices.get(instance_type)
    return None if price is None else seconds * price / 3600
