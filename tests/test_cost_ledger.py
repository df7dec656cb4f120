"""The cost ledger: the billing rule, appends from many processes, the terminating tasks' rows, cost-report."""

from __future__ import annotations

import csv
import datetime
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ramp_airflow.cost_report import run_summary
from ramp_airflow.utils import billing, cost_ledger, ec2_tags
from ramp_airflow.utils.layout import cost_ledger_file
from testbench.event_config import write_connection_config
from testbench.training_runs import task_context

CLI = str(Path(sys.executable).with_name("ramp-airflow"))
UTC = datetime.timezone.utc
START = datetime.datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "seconds, billed", [(0, 60), (-5, 60), (59.2, 60), (60, 60), (60.01, 61), (100, 100), (3600, 3600)]
)
def test_billed_seconds_per_second_with_a_minute_minimum(seconds, billed):
    assert billing.billed_seconds(START, START + datetime.timedelta(seconds=seconds)) == billed


def description(instance_id: str, submission_id: int, launched: datetime.datetime, run=None, **extra) -> dict:
    """An instance as EC2 describes it, tagged as the backend tags it."""
    tags = {
        ec2_tags.SUBMISSION_ID: str(submission_id),
        ec2_tags.RUN_ID: run or f"run-{submission_id}",
        ec2_tags.TASK_ID: "attempt_1.launch_instance",
    }
    return {
        "InstanceId": instance_id,
        "InstanceType": "t2.micro",
        "LaunchTime": launched,
        "Tags": [{"Key": key, "Value": value} for key, value in tags.items()],
        **extra,
    }


def row(instance_id: str, submission_id: int, launched, secs: float, submission=None, run=None, **extra) -> dict:
    return cost_ledger.ledger_row(
        description(instance_id, submission_id, launched, run, **extra),
        terminated_at=launched + datetime.timedelta(seconds=secs),
        state_at_termination="running",
        terminated_by="attempt_1.terminate_instance",
        submission=submission,
    )


def test_a_row_from_ec2_and_the_claim_and_what_a_participant_chose():
    submission = {"id": 3, "team": '=HYPERLINK("x")', "name": "rf\n\x1b[31mred\tname"}
    ready = (START + datetime.timedelta(seconds=30)).isoformat()
    spot = description("i-1", 3, START, InstanceLifecycle="spot")
    entry = cost_ledger.ledger_row(
        spot,
        terminated_at=START + datetime.timedelta(seconds=90.5),
        state_at_termination="running",
        terminated_by="attempt_1.terminate_instance",
        submission=submission,
        ready_at=ready,
    )
    assert entry == {
        "submission_id": "3",
        "team": '\'=HYPERLINK("x")',  # never a spreadsheet formula
        "submission_name": "rf red name",  # one line, no escape sequences
        "run_id": "run-3",
        "launched_by": "attempt_1.launch_instance",
        "terminated_by": "attempt_1.terminate_instance",
        "instance_id": "i-1",
        "instance_type": "t2.micro",
        "market": "spot",
        "launch_time": "2025-03-01T10:00:00+00:00",
        "ready_time": "2025-03-01T10:00:30+00:00",
        "termination_time": "2025-03-01T10:01:30+00:00",
        "state_at_termination": "running",
        "billed_seconds": "91",
    }
    assert row("i-2", 3, START, 10)["market"] == "on-demand" and row("i-2", 3, START, 10)["ready_time"] == ""


APPENDER = """
import sys
from ramp_airflow.utils import cost_ledger
path, worker, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
row = dict.fromkeys(cost_ledger.COLUMNS, "")
row.update(team="t" * 3000, billed_seconds="60", launch_time="2025-03-01T10:00:00+00:00")
for number in range(count):
    cost_ledger.append(path, {**row, "instance_id": f"i-{worker}-{number}"})
    if number == count // 2:
        cost_ledger.append(path, {**row, "instance_id": "i-shared"})  # each worker's retried teardown
"""


def test_appends_from_many_processes_keep_every_line_whole_and_each_instance_once(tmp_path):
    ledger = str(tmp_path / "logs" / "iris_cost_ledger.csv")
    workers, count = 6, 60
    procs = [
        subprocess.Popen([sys.executable, "-c", APPENDER, ledger, str(worker), str(count)]) for worker in range(workers)
    ]
    assert [proc.wait(timeout=120) for proc in procs] == [0] * workers
    text = Path(ledger).read_text()
    lines = text.splitlines()
    assert lines[0] == ",".join(cost_ledger.COLUMNS) and text.endswith("\n")
    assert all(len(values) == len(cost_ledger.COLUMNS) for values in csv.reader(lines))
    ids = [entry["instance_id"] for entry in cost_ledger.read_rows(ledger)]
    expected = {f"i-{worker}-{number}" for worker in range(workers) for number in range(count)} | {"i-shared"}
    assert len(ids) == len(lines) - 1 == len(expected) and set(ids) == expected


def test_a_ledger_that_is_not_one_is_refused_naming_the_line(tmp_path):
    ledger = tmp_path / "ledger.csv"
    assert cost_ledger.event_totals(str(ledger)) == cost_ledger.Totals()  # none yet: nothing spent
    assert cost_ledger.append(str(ledger), row("i-1", 1, START, 100))
    assert not cost_ledger.append(str(ledger), row("i-1", 1, START, 200))  # the same instance: kept once
    assert cost_ledger.event_totals(str(ledger)) == cost_ledger.Totals(1, 100, {"t2.micro": 100})
    with ledger.open("a") as file:
        file.write("1,2,3\n")
    with pytest.raises(cost_ledger.LedgerError, match=r"line 3 is not a ledger row: 3 fields, not 14"):
        cost_ledger.read_rows(str(ledger))


def test_the_summary_of_a_run():
    rows = [row("i-1", 3, START, 30), row("i-2", 3, START, 100, InstanceLifecycle="spot")]
    assert run_summary(rows, {"id": 3, "team": "alice", "name": "rf"}, "scored") == (
        "Cost of this run: submission 3 ('rf' of team 'alice'), scored: i-1 (t2.micro, on-demand, 60 s), "
        "i-2 (t2.micro, spot, 100 s); 160 s billed in all"
    )
    assert run_summary([], None, None) == (
        "Cost of this run: no submission claimed, no result recorded: no instance terminated; 0 s billed in all"
    )


def test_the_teardown_its_retry_and_the_leftovers_record_each_instance_once(ec2, tmp_path):
    from airflow.sdk import DAG

    from ramp_airflow.hooks.ec2 import RampEc2Hook
    from ramp_airflow.operators.ec2 import LaunchInstanceOperator
    from ramp_airflow.operators.terminations import TerminateInstanceOperator, TerminateRunInstancesOperator

    ledger, run_id = cost_ledger_file(str(tmp_path / "logs"), "iris"), f"manual__{uuid.uuid4()}"
    submission, ready = {"id": 42, "team": "alice", "name": "rf"}, datetime.datetime.now(UTC).isoformat()
    with DAG("ramp_train_iris", schedule=None):
        launched = [
            LaunchInstanceOperator(
                task_id=f"attempt_{number}.launch_instance",
                submission_id=42,
                event_name="iris",
                instance_type="t2.micro",
                key_name=ec2.key_name,
                security_group=ec2.security_group,
                ami_image_name=ec2.ami_name,
            ).execute(task_context(run_id))
            for number in (1, 2)
        ]
        described = [RampEc2Hook().describe_instance(instance_id) for instance_id in launched]
        teardown = TerminateInstanceOperator(
            task_id="attempt_1.terminate_instance",
            instance_id=launched[0],
            ledger_path=ledger,
            submission=submission,
            ready_at=ready,
        )
        teardown.execute({"run_id": run_id})
        teardown.execute({"run_id": run_id})  # its retry
        TerminateRunInstancesOperator(
            task_id="terminate_leftover_instances",
            ledger_path=ledger,
            submission=submission,
            outcome="scored",
            ready_times={"attempt_1.launch_instance": None, "attempt_2.launch_instance": ready},
        ).execute({"run_id": run_id})

    rows = cost_ledger.read_rows(ledger)
    assert [(r["instance_id"], r["launched_by"], r["terminated_by"]) for r in rows] == [
        (launched[0], "attempt_1.launch_instance", "attempt_1.terminate_instance"),
        (launched[1], "attempt_2.launch_instance", "terminate_leftover_instances"),
    ]
    for entry, instance in zip(rows, described):
        assert (entry["submission_id"], entry["team"], entry["submission_name"], entry["run_id"]) == (
            "42",
            "alice",
            "rf",
            run_id,
        )
        assert (entry["instance_type"], entry["market"], entry["state_at_termination"]) == (
            "t2.micro",
            "on-demand",
            "running",
        )
        launch_time = datetime.datetime.fromisoformat(entry["launch_time"])
        assert launch_time == instance["LaunchTime"].replace(microsecond=0)
        assert entry["ready_time"] == datetime.datetime.fromisoformat(ready).isoformat(timespec="seconds")
        ended = datetime.datetime.fromisoformat(entry["termination_time"])
        assert ended >= launch_time and int(entry["billed_seconds"]) >= billing.MINIMUM_BILLED_SECS
    assert RampEc2Hook().list_run_instances("ramp_train_iris", run_id) == []


PRICES = {"t2.micro": 1.2}


@pytest.fixture
def event_ledger(tmp_path):
    """A ledger of five instances of four submissions over four days, and the event's config (no prices)."""
    ledger = cost_ledger_file(str(tmp_path / "logs"), "iris")
    day = datetime.timedelta(days=1)
    alice, bob = {"team": "alice", "name": "rf"}, {"team": "bob", "name": "=HYPERLINK(1)"}
    for entry in [
        row("i-a1", 1, START, 100, alice),
        row("i-a2", 1, START + datetime.timedelta(minutes=5), 30, alice, InstanceLifecycle="spot"),
        row("i-b1", 2, START + day, 3600, bob, InstanceType="t3.large"),
        row("i-b2", 2, START + 2 * day, 200, run="run-2b"),  # the housekeeping's: no team, its submission has one
        row("i-c1", 3, START + 3 * day, 90),  # no team anywhere
    ]:
        assert cost_ledger.append(ledger, entry)
    return write_connection_config(tmp_path / "config.yml")


def cost_report(*args: str, prices: bool = False) -> subprocess.CompletedProcess:
    write_connection_config(Path(args[0]), instance_price_per_hour=PRICES if prices else None)
    return subprocess.run([CLI, "cost-report", *args], capture_output=True, text=True, timeout=60)


def table(proc: subprocess.CompletedProcess) -> list[list[str]]:
    assert proc.returncode == 0, proc.stderr
    return [line.split() for line in proc.stdout.splitlines()]


def test_cost_report_by_team(event_ledger):
    assert table(cost_report(str(event_ledger))) == [
        ["TEAM", "RUNS", "INSTANCES", "BILLED", "S", "HOURS"],
        ["bob", "2", "2", "3800", "1.056"],
        ["alice", "1", "2", "160", "0.044"],
        ["(unknown)", "1", "1", "90", "0.025"],
        ["TOTAL", "4", "5", "4050", "1.125"],
    ]
    lines = cost_report(str(event_ledger)).stdout.splitlines()
    assert len({len(line) for line in lines}) == 1  # the figures are aligned right


def test_cost_report_by_submission_with_prices_since_a_date(event_ledger):
    proc = cost_report(str(event_ledger), "--by", "submission", "--since", "2025-03-02", prices=True)
    assert table(proc) == [
        ["SUBMISSION", "TEAM", "NAME", "RUNS", "INSTANCES", "BILLED", "S", "HOURS", "COST"],
        ["2", "bob", "'=HYPERLINK(1)", "2", "2", "3800", "1.056", "0.0667*"],
        ["3", "(unknown)", "(unknown)", "1", "1", "90", "0.025", "0.0300"],
        ["TOTAL", "3", "3", "3890", "1.081", "0.0967*"],
        "* leaves out the types aws.instance_price_per_hour gives no price for: t3.large (3600 s)".split(),
    ]
    every = table(cost_report(str(event_ledger), "--by", "submission", prices=True))
    assert every[1][:3] == ["2", "bob", "'=HYPERLINK(1)"] and every[2][:3] == ["1", "alice", "rf"]
    assert every[-2] == ["TOTAL", "4", "5", "4050", "1.125", "0.1500*"]


def test_cost_report_without_a_ledger_and_with_bad_input(tmp_path, event_ledger):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = cost_report(str(empty / "config.yml"))
    assert table(proc) == [["TEAM", "RUNS", "INSTANCES", "BILLED", "S", "HOURS"], ["TOTAL", "0", "0", "0", "0.000"]]
    assert "iris_cost_ledger.csv: no cost ledger yet" in proc.stderr
    bad_date = cost_report(str(event_ledger), "--since", "March")
    assert bad_date.returncode == 2 and "'March' is not an ISO date" in bad_date.stderr
    with open(cost_ledger_file(str(tmp_path / "logs"), "iris"), "a") as ledger:
        ledger.write("not,a,row\n")
    broken = cost_report(str(event_ledger))
    assert broken.returncode == 2 and "line 7 is not a ledger row" in broken.stderr


def test_cost_report_loads_neither_airflow_nor_boto(event_ledger):
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ramp_airflow.cli", "cost-report", str(event_ledger)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "TOTAL" in proc.stdout, proc.stderr[-2000:]
    assert "ramp_airflow.cost_report" in proc.stderr  # the import times are there
    assert not re.search(r"\|\s+(airflow|boto3|botocore)(\.|$)", proc.stderr, re.MULTILINE)


def test_prices_are_validated_naming_the_entry(tmp_path):
    from ramp_airflow.config import ConfigError, load_config

    config = write_connection_config(tmp_path / "config.yml", instance_price_per_hour=PRICES)
    assert load_config(config).aws.instance_price_per_hour == {"t2.micro": 1.2}
    write_connection_config(config)
    assert load_config(config).aws.instance_price_per_hour is None
    bad = {"t2.micro": -1, "t3.large": "cheap", "m5.large": 0.1}
    write_connection_config(config, instance_price_per_hour=bad)
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert [p.field for p in err.value.problems] == [
        "aws.instance_price_per_hour.t2.micro",
        "aws.instance_price_per_hour.t3.large",
    ]
    assert "must be a price per hour greater than 0, not -1" in str(err.value)
    write_connection_config(config, instance_price_per_hour=0.1)
    with pytest.raises(ConfigError, match="instance_price_per_hour: must be a mapping of instance types to prices"):
        load_config(config)
