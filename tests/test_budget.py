"""The event's budget against its cost ledger: instance-hours, money, and a type the price table no longer prices."""

from __future__ import annotations

import pytest

from ramp_airflow.config import ConfigError
from ramp_airflow.utils.budget import INSTANCE_HOURS, MONEY, budget_use, exhausted_budget
from testbench.event_config import write_event_config
from testbench.ledger import bill


def write_config(tmp_path, ramp_db, instance, ec2, **aws):
    from ramp_airflow.config import load_config

    return load_config(write_event_config(tmp_path / "config.yml", ramp_db, instance, ec2, **aws))


def test_instance_hours_without_a_price_table(tmp_path, ramp_db, instance, ec2):
    config = write_config(tmp_path, ramp_db, instance, ec2, budget=1.5)
    assert budget_use(config).spent == 0 and not budget_use(config).exhausted  # no ledger yet
    bill(config, "t2.micro", 3600, "i-1")
    bill(config, "m5.large", 1800, "i-2")
    use = budget_use(config)
    assert (use.spent, use.unit, use.exhausted) == (1.5, INSTANCE_HOURS, True)
    assert str(use) == "1.50 of aws.budget 1.5 (instance-hours) spent"
    assert exhausted_budget(config.path) == use


def test_money_with_a_price_table_and_an_unpriced_type_at_the_highest_price(tmp_path, ramp_db, instance, ec2):
    prices = {"t2.micro": 0.5, "m5.large": 2.0}
    config = write_config(tmp_path, ramp_db, instance, ec2, budget=10, instance_price_per_hour=prices)
    bill(config, "t2.micro", 3600, "i-1")  # 0.5
    bill(config, "c5.xlarge", 1800, "i-2")  # no longer in the table: at 2.0, 1.0
    use = budget_use(config)
    assert (use.spent, use.unit, use.exhausted) == (1.5, MONEY, False)
    assert exhausted_budget(config.path) is None
    assert budget_use(write_config(tmp_path, ramp_db, instance, ec2)) is None  # no budget at all


def test_a_budget_in_money_needs_a_price_for_every_instance_type(tmp_path, ramp_db, instance, ec2):
    with pytest.raises(ConfigError, match="aws.instance_price_per_hour: has no price for m5.large"):
        write_config(
            tmp_path,
            ramp_db,
            instance,
            ec2,
            budget=10,
            instance_type=["t2.micro", "m5.large"],
            instance_price_per_hour={"t2.micro": 0.5},
        )
