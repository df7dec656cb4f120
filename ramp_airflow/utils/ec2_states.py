"""EC2 instance states, grouped by what they mean for a training, and markets: the one place they are written."""

from __future__ import annotations

# An instance in one of these can train (a pending one once it boots).
USABLE_STATES = ("pending", "running")
# Once an instance is in one of these it will not become ready without someone starting it.
GONE_STATES = ("shutting-down", "terminated", "stopping", "stopped")
# Instances in these states still cost money or can come back; terminated ones are gone.
LIVE_STATES = ("pending", "running", "stopping", "stopped")


def market_of(instance: dict) -> str:
    """``spot`` or ``on-demand``, from an instance's EC2 description (which names no lifecycle for on-demand)."""
    return instance.get("InstanceLifecycle", "on-demand")
