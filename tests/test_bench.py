"""The test bench itself: real services up, the kit trained over SSH by hand.

These tests prove the bench is faithful before the provider is tested on it:
the RAMP rows are what ramp-database writes, EC2 addresses are loopback, and the
instance trains the kit with the real ``ramp-test`` through a login shell.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess

import pytest

from testbench import netguard
from testbench._proc import wait_until
from testbench.ec2 import assert_loopback
from testbench.instance import KIT_REL

SUBMISSIONS_ON_INSTANCE = f"{KIT_REL}/submissions"


def test_seeded_ramp_database(ramp_db):
    rows = ramp_db.query(
        "SELECT s.id, s.name, s.state, t.name, e.ramp_sandbox_name "
        "FROM submissions s JOIN event_teams et ON s.event_team_id = et.id "
        "JOIN events e ON et.event_id = e.id JOIN teams t ON et.team_id = t.id "
        "WHERE e.name = %s ORDER BY s.id",
        (ramp_db.event,),
    )
    assert {r[2] for r in rows} == {"new"}
    assert {r[4] for r in rows} == {"starting_kit"}
    by_name = {r[1]: r[0] for r in rows if r[1] != "starting_kit"}
    assert by_name == ramp_db.submissions
    assert set(by_name) == {"random_forest", "error_in_fit", "x;touch PWNED$(id)"}
    assert len([r for r in rows if r[1] == "starting_kit"]) == len(ramp_db.teams) == 2
    assert ramp_db.query("SELECT count(*) FROM cv_folds")[0][0] == 2 == ramp_db.n_cv_folds
    fold_states = ramp_db.query("SELECT DISTINCT state::text FROM submission_on_cv_folds")
    assert fold_states == [("new",)]
    assert ramp_db.query("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")[0][0] == 26
    assert [r[0] for r in ramp_db.query("SELECT name FROM event_score_types ORDER BY id")] == [
        "acc",
        "error",
        "bal_acc",
    ]
    for sub_id, *_ in rows:
        folder = ramp_db.submission_folder(sub_id)
        assert os.path.basename(folder) == f"submission_{sub_id:09d}"
        assert os.path.isfile(os.path.join(folder, "estimator.py"))


def test_fresh_ramp_db_is_isolated(fresh_ramp_db, ramp_db):
    assert fresh_ramp_db.dbname != ramp_db.dbname
    fresh_ramp_db.query("UPDATE submissions SET state = 'training_error'")
    assert {r[0] for r in ramp_db.query("SELECT state FROM submissions")} == {"new"}


def test_moto_gives_loopback_and_owner_filtered_amis(ec2):
    described = ec2.launch()
    assert_loopback(described["PublicIpAddress"])
    assert_loopback(described["PrivateIpAddress"])
    client = ec2.client()
    by_name = [{"Name": "name", "Values": [ec2.ami_name]}]
    everyone = client.describe_images(Filters=by_name)["Images"]
    newest = max(everyone, key=lambda image: image["CreationDate"])
    assert newest["ImageId"] == ec2.stranger_ami_id  # the trap: newer, not ours
    ours = client.describe_images(Owners=["self"], Filters=by_name)["Images"]
    assert [image["ImageId"] for image in ours] == [ec2.ami_id]
    assert client.describe_key_pairs(KeyNames=[ec2.key_name])["KeyPairs"]
    client.terminate_instances(InstanceIds=[described["InstanceId"]])


def test_status_checks_can_be_delayed(ec2):
    ec2.set_status_delay(30)
    try:
        instance_id = ec2.launch()["InstanceId"]
        status = ec2.client().describe_instance_status(InstanceIds=[instance_id])
        assert status["InstanceStatuses"][0]["InstanceStatus"]["Status"] == "initializing"
    finally:
        ec2.set_status_delay(0)
    status = ec2.client().describe_instance_status(InstanceIds=[instance_id])
    assert status["InstanceStatuses"][0]["InstanceStatus"]["Status"] == "ok"


def test_network_guard_refuses_non_loopback():
    with pytest.raises(netguard.NonLoopbackConnection):
        socket.create_connection(("192.0.2.1", 22), timeout=0.5)  # TEST-NET-1
    netguard.violations.clear()  # this one was on purpose


def _ssh(instance, host):
    return instance.ssh_argv() + [f"{instance.user}@{host}"]


def _rsync(instance, src, dst):
    proc = subprocess.run(
        ["rsync", "-a", "-e", instance.rsync_rsh(), src, dst], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


def _train(instance, host, folder, mprof=False):
    """Run ramp-test for ``folder`` on the instance via a login shell."""
    ramp_test = ["ramp-test", "--submission", folder, "--save-output"]
    if mprof:
        out = f"submissions/{folder}/mprof.dat"
        ramp_test = ["mprof", "run", "--include-children", f"--output={out}"] + ramp_test
    inner = f"cd {shlex.quote(KIT_REL)} && {shlex.join(ramp_test)}"
    remote = shlex.join(["bash", "-lc", inner])
    return subprocess.run(_ssh(instance, host) + [remote], capture_output=True, text=True, timeout=180)


def _upload_and_train(ramp_db, instance, host, name, tmp_path, mprof=False):
    sub_id = ramp_db.submissions[name]
    folder = f"submission_{sub_id:09d}"
    remote_dir = f"{instance.user}@{host}:{SUBMISSIONS_ON_INSTANCE}/{folder}/"
    _rsync(instance, ramp_db.submission_folder(sub_id) + "/", remote_dir)
    proc = _train(instance, host, folder, mprof=mprof)
    local = tmp_path / folder
    local.mkdir()
    _rsync(instance, remote_dir + "training_output", str(local))
    if mprof:
        _rsync(instance, remote_dir + "mprof.dat", str(local))
    return proc, local


def test_train_kit_over_ssh_by_hand(ramp_db, instance, ec2, tmp_path):
    host = ec2.launch()["PublicIpAddress"]
    assert_loopback(host)
    proc, local = _upload_and_train(ramp_db, instance, host, "random_forest", tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for fold in ("fold_0", "fold_1"):
        for name in ("y_pred_train.npz", "y_pred_test.npz", "scores.csv", "train_time", "valid_time", "test_time"):
            assert (local / "training_output" / fold / name).is_file(), (fold, name)
        assert not (local / "training_output" / fold / "error.txt").exists()
        header = (local / "training_output" / fold / "scores.csv").read_text().split()[0]
        assert header == "step,acc,error,bal_acc,time"
    assert (local / "training_output" / "bagged_scores.csv").is_file()


def test_failing_submission_writes_error_txt(ramp_db, instance, ec2, tmp_path):
    host = ec2.launch()["PublicIpAddress"]
    proc, local = _upload_and_train(ramp_db, instance, host, "error_in_fit", tmp_path)
    assert proc.returncode == 1
    error = (local / "training_output" / "fold_0" / "error.txt").read_text()
    assert "error_in_fit: this submission fails on purpose" in error


def test_mprof_records_memory(ramp_db, instance, ec2, tmp_path):
    host = ec2.launch()["PublicIpAddress"]
    proc, local = _upload_and_train(ramp_db, instance, host, "x;touch PWNED$(id)", tmp_path, mprof=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = (local / "mprof.dat").read_text().splitlines()
    assert lines[0].startswith("CMDLINE")
    mem = [float(line.split()[1]) for line in lines if line.startswith("MEM ")]
    assert mem and max(mem) > 10
    assert not any("PWNED" in p for p in os.listdir(instance.home))


def test_sshd_restart_keeps_port_and_keys(instance):
    old_pid = instance.pid
    instance.restart()
    assert instance.pid != old_pid
    proc = instance.run(["ramp-test", "--help"])
    assert proc.returncode == 0, proc.stderr


def test_sshd_restart_drops_open_connections(instance):
    # A session of an earlier test may still be exiting: only one that appears after the client
    # started is its own (else sshd could restart before the client connects, and the client then
    # reaches the new sshd and sleeps).
    earlier = set(instance.session_pids())
    client = subprocess.Popen(
        _ssh(instance, instance.host) + ["sleep 60"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: set(instance.session_pids()) - earlier, 10, "the ssh session to open")
        instance.restart()
        assert client.wait(timeout=15) != 0
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(timeout=10)
    assert instance.run(["true"]).returncode == 0


def test_airflow_home_is_migrated(airflow_home, postgres):
    assert os.environ["AIRFLOW_HOME"] == airflow_home.home
    conn = postgres.connect("airflow")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM alembic_version")
            assert cur.fetchone()[0] == 1
            cur.execute("SELECT count(*) FROM dag")
            assert cur.fetchone()[0] == 0  # load_examples is off
    finally:
        conn.close()
