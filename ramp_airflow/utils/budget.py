"""The event's budget (``aws.budget``): how much of it the cost ledger says is spent.

The budget is money when the config has a price table (``aws.instance_price_per_hour``), instance-hours
otherwise. Only terminated instances are in the ledger: trainings running when the budget is reached
finish, and add their cost after it. A type the ledger holds but the price table no longer prices (the
table changed) is counted at the table's highest price, so that a budget is never overrun unseen.
"""

from __future__ import annotations

from dataclasses import dataclass

from ramp_airflow.config import EventConfig, load_config
from ramp_airflow.utils import cost_ledger
from ramp_airflow.utils.layout import cost_ledger_file

MONEY = "in money"
INSTANCE_HOURS = "instance-hours"


@dataclass(frozen=True)
class BudgetUse:
    """How much of the event's budget is spent."""

    spent: float
    budget: float
    unit: str  # MONEY or INSTANCE_HOURS

    @property
    def exhausted(self) -> bool:
        return self.spent >= self.budget

    def __str__(self) -> str:
        return f"{self.spent:.2f} of aws.budget {self.budget:g} ({self.unit}) spent"


def budget_use(config: EventConfig) -> BudgetUse | None:
    """
    The event's spending against its budget, from its cost ledger; None when it has no budget.

    :raises cost_ledger.LedgerError: when the ledger file is not one
    """
    aws = config.aws
    if aws.budget is None:
        return None
    totals = cost_ledger.event_totals(cost_ledger_file(aws.local_log_folder, config.event_name))
    prices = aws.instance_price_per_hour
    if not prices:
        return BudgetUse(totals.billed_seconds / 3600, aws.budget, INSTANCE_HOURS)
    amount, unpriced = totals.cost(prices)
    amount += sum(unpriced.values()) * max(prices.values()) / 3600
    return BudgetUse(amount, aws.budget, MONEY)


def exhausted_budget(config_path: str | None) -> BudgetUse | None:
    """
    The event's budget use when the budget is spent; None otherwise, or without a budget or config.

    The config is read afresh each time, so that a budget the organiser raises counts at once.
    """
    if config_path is None:
        return None
    use = budget_use(load_config(config_path))
    return use if use is not None and use.exhausted else None
