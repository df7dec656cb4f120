"""A RAMP database, created and seeded by the real ramp-database package.

The seeding runs ``testbench/ramp_seed.py`` in the RAMP virtualenv (see its
docstring for why a separate interpreter). Seeding takes a few seconds, so the
bench seeds one *template* database per session and hands out cheap copies
(``CREATE DATABASE x TEMPLATE ramp_template``) to tests that change states.
The copies share the template's ``path_ramp_submissions`` folder, which training
only reads.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import tempfile

from ramp_airflow.utils.layout import local_submission_dir
from testbench.postgres import PostgresCluster

RAMP_PYTHON = "/opt/ramp-airflow/ramp-venv/bin/python"
HERE = os.path.dirname(os.path.abspath(__file__))
KIT_DIR = os.path.join(HERE, "kit")
SEED_SCRIPT = os.path.join(HERE, "ramp_seed.py")
TEMPLATE_DB = "ramp_template"
_copies = itertools.count(1)


@dataclasses.dataclass
class RampDatabase:
    """One seeded RAMP database in the bench cluster.

    ``submissions`` maps each non-sandbox submission name to its id;
    ``sandbox_ids`` are the ``starting_kit`` rows (one per team); ``rows`` lists
    every submission (id, name, team, state, path) as seeded.
    """

    cluster: PostgresCluster
    dbname: str
    event: str
    problem: str
    sandbox_name: str
    submissions_dir: str
    ramp_kit_dir: str
    ramp_data_dir: str
    teams: list
    n_cv_folds: int
    submissions: dict
    sandbox_ids: list
    rows: list

    @property
    def dsn(self) -> str:
        return self.cluster.dsn(self.dbname)

    @property
    def url(self) -> str:
        return self.cluster.url(self.dbname)

    @property
    def sqlalchemy_config(self) -> dict:
        return self.cluster.sqlalchemy_config(self.dbname)

    def connect(self, autocommit: bool = True):
        return self.cluster.connect(self.dbname, autocommit=autocommit)

    def submission_folder(self, submission_id: int) -> str:
        return local_submission_dir(self.submissions_dir, submission_id)

    def query(self, sql: str, params=()) -> list:
        """Run one query and return all rows (for assertions in tests)."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def copy(self, dbname: str | None = None) -> "RampDatabase":
        """A fresh database cloned from this one (which must have no sessions)."""
        dbname = dbname or f"ramp_copy_{os.getpid()}_{next(_copies)}"
        self.cluster.create_database(dbname, template=self.dbname)
        return dataclasses.replace(self, dbname=dbname)

    def drop(self) -> None:
        self.cluster.drop_database(self.dbname)


def seed_ramp_database(
    cluster: PostgresCluster, dbname: str = TEMPLATE_DB, work_dir: str | None = None, timeout: float = 180.0
) -> RampDatabase:
    """Create ``dbname`` and fill it with the bench event (see ramp_seed.py).

    ``work_dir`` receives the platform's kit, data and submissions folders
    (a new temp dir by default; the caller removes it).
    """
    work_dir = work_dir or tempfile.mkdtemp(prefix="bench-ramp-")
    cluster.create_database(dbname)
    payload = {"sqlalchemy": cluster.sqlalchemy_config(dbname), "kit_dir": KIT_DIR, "work_dir": work_dir}
    env = {
        "PATH": "/opt/ramp-airflow/ramp-venv/bin:/usr/bin:/bin",
        "HOME": work_dir,
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
    }
    # -I: isolated mode, so the script's own folder (which holds this
    # module, also named ramp_database) is not put on sys.path.
    proc = subprocess.run(
        [RAMP_PYTHON, "-I", SEED_SCRIPT],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=work_dir,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"RAMP seeding failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return RampDatabase(cluster=cluster, dbname=dbname, **summary)
