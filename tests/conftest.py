"""Fixtures of the test bench: real PostgreSQL, sshd, moto and an Airflow home.

Everything is started on 127.0.0.1 by these fixtures and stopped by PID in
their finalizers (see ``testbench/``). Airflow's environment is exported at
import time, before any test module can import ``airflow``.
"""

from __future__ import annotations

import os
import shutil

import pytest

from testbench import airflow_home as _airflow_home
from testbench import netguard
from testbench.ec2 import running_ec2
from testbench.instance import running_instance
from testbench.postgres import running_postgres
from testbench.ramp_database import seed_ramp_database

AIRFLOW_PLAN = _airflow_home.plan()


def pytest_unconfigure(config):
    AIRFLOW_PLAN.cleanup()


@pytest.fixture(scope="session", autouse=True)
def _loopback_only_session():
    """Guard every Python socket connect of the session (fixtures included)."""
    with netguard.loopback_only() as violations:
        yield violations


@pytest.fixture(autouse=True)
def loopback_only(_loopback_only_session):
    """Fail the test if anything tried to connect outside loopback meanwhile."""
    before = len(_loopback_only_session)
    yield
    new = _loopback_only_session[before:]
    if new:
        del _loopback_only_session[before:]
        pytest.fail("non-loopback connection attempted: " + "; ".join(new))


@pytest.fixture(scope="session")
def postgres():
    """The session's PostgreSQL cluster (:class:`testbench.postgres.PostgresCluster`)."""
    with running_postgres(port=AIRFLOW_PLAN.pg_port, password=AIRFLOW_PLAN.pg_password) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def ramp_template(postgres, tmp_path_factory):
    """The seeded template RAMP database; do not modify it, copy it."""
    work_dir = str(tmp_path_factory.mktemp("ramp-platform"))
    try:
        yield seed_ramp_database(postgres, work_dir=work_dir)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def ramp_db(ramp_template):
    """A seeded RAMP database (``ramp``) shared by the session."""
    db = ramp_template.copy("ramp")
    yield db
    db.drop()


@pytest.fixture
def fresh_ramp_db(ramp_template):
    """A seeded RAMP database of this test's own, dropped afterwards."""
    db = ramp_template.copy()
    yield db
    db.drop()


@pytest.fixture(scope="session")
def instance():
    """The sshd standing in for EC2 instances (:class:`testbench.instance.SSHInstance`)."""
    with running_instance() as inst:
        yield inst


@pytest.fixture(scope="session")
def ec2(instance):
    """moto's EC2 on loopback (:class:`testbench.ec2.MotoEC2`), its env applied.

    The bench key pair is the sshd client key, so a launched instance is
    reachable with ``instance.key_path`` at its reported (loopback) address.
    """
    with running_ec2(public_key=instance.public_key) as moto_ec2:
        with pytest.MonkeyPatch.context() as mp:
            for name, value in moto_ec2.env.items():
                mp.setenv(name, value)
            yield moto_ec2


@pytest.fixture(scope="session")
def airflow_home(postgres):
    """A migrated Airflow home (:class:`testbench.airflow_home.AirflowPlan`)."""
    assert os.environ["AIRFLOW_HOME"] == AIRFLOW_PLAN.home
    _airflow_home.migrate(AIRFLOW_PLAN, postgres)
    yield AIRFLOW_PLAN
    # Close Airflow's database sessions while PostgreSQL still runs, not at interpreter exit.
    from airflow import settings

    settings.dispose_orm()
