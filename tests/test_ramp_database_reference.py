"""Our recording against ramp-board's own: real ramp-test output, ramp-database 0.10.1's readers.

One database records a real ``training_output`` with :class:`RampDatabaseHook`; a second one
stores the same output with ramp-database's own setters, in the RAMP virtualenv, the way
ramp-engine's dispatcher calls them (``tests/ramp_reference.py``). ramp-database's readers
must then see the same thing in both.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import zlib

import pytest

from ramp_airflow.config import DatabaseSettings
from ramp_airflow.hooks.ramp_database import RampDatabaseHook
from ramp_airflow.utils import layout
from ramp_airflow.utils.claim_sql import RunRef
from ramp_airflow.utils.cv_bags import encode_cv_bags, numpy_float64_pickle
from ramp_airflow.utils.training_results import parse_training_results
from testbench.ramp_database import KIT_DIR, RAMP_PYTHON

RAMP_BIN = os.path.dirname(RAMP_PYTHON)
REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ramp_reference.py")
# ramp-database reads scores.csv and bagged_scores.csv with pandas' C float parser, which is
# not correctly rounded: "0.9111111111111111" becomes 0.9111111111111112 and
# "0.013698630136986356" becomes 0.0136986301369863 (~1e-15 relative). We store the value the
# file holds (float(text)), so those scores agree to 1e-13 relative, every other value exactly.
CSV_SCORE_KEYS = ("scores", "bagged_scores", "cv_bags")


def _same(a, b) -> bool:
    """Equal, floats to within pandas' parsing error."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-13, abs_tol=1e-300)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _ramp_env(home: str) -> dict:
    return {"PATH": f"{RAMP_BIN}:/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}


def _ramp_python(code_or_script: list[str], payload: dict | None, home: str) -> dict | str:
    # -I: neither tests/ nor the project shadows ramp-database's own modules.
    proc = subprocess.run(
        [RAMP_PYTHON, "-I", *code_or_script],
        input=json.dumps(payload) if payload else "",
        capture_output=True,
        text=True,
        env=_ramp_env(home),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cv_bags_are_numpy_126_pickles(tmp_path):
    cases = [[0.5, 0.25, 1 / 3], [1.0], [float("nan"), 2, -0.0, 1e308], [0.1] * 300, [0.2] * 70000]
    code = (
        "import json, sys, zlib, pickle, numpy as np\n"
        "cases, blobs = json.loads(sys.stdin.read())\n"
        "print(json.dumps([[np.array(c, dtype=np.float64).dumps().hex() == b,\n"
        "                   pickle.loads(zlib.decompress(bytes.fromhex(z))).tolist() == c]\n"
        "                  for c, b, z in zip(cases, *blobs)]))\n"
    )
    blobs = [[numpy_float64_pickle(c).hex() for c in cases], [encode_cv_bags(c).hex() for c in cases]]
    # NaN compares unequal to itself, so only the byte check applies to that case.
    checks = _ramp_python(["-c", code], [cases, blobs], str(tmp_path))
    assert [c[0] for c in checks] == [True] * len(cases)
    assert [c[1] for i, c in enumerate(checks) if i != 2] == [True] * (len(cases) - 1)
    assert zlib.decompress(encode_cv_bags([0.5])) == numpy_float64_pickle([0.5])
    with pytest.raises(ValueError):
        encode_cv_bags([])
    with pytest.raises(TypeError):
        numpy_float64_pickle([True])


def _train(tmp_path, submission: str, sub_id: int) -> tuple[str, str]:
    """Run real ramp-test under mprof on a copy of the bench kit; return (training_output, log dir)."""
    kit = tmp_path / "kit"
    shutil.copytree(KIT_DIR, kit, ignore=shutil.ignore_patterns("data", "training_output", "__pycache__"))
    env = _ramp_env(str(tmp_path))
    subprocess.run([RAMP_PYTHON, "prepare_data.py"], cwd=kit, env=env, check=True, timeout=120)
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    with open(log_dir / layout.LOG_FILE, "w") as log:
        subprocess.run(
            [
                "mprof",
                "run",
                "--include-children",
                f"--output={log_dir / layout.MPROF_FILE}",
                "ramp-test",
                "--submission",
                submission,
                "--save-output",
            ],
            cwd=kit,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=300,
        )
    return str(kit / "submissions" / submission / layout.TRAINING_OUTPUT), str(log_dir)


@pytest.mark.parametrize("submission", ["random_forest", "error_in_fit"])
def test_recording_matches_ramp_database(ramp_template, tmp_path, submission):
    ours, theirs = ramp_template.copy(), ramp_template.copy()
    try:
        sub_id = ramp_template.submissions[submission]
        output, log_dir = _train(tmp_path, submission, sub_id)
        result = parse_training_results(sub_id, output, log_dir, ramp_template.n_cv_folds)
        assert result["success"] is (submission == "random_forest"), result["error_msg"]
        assert result["max_ram"] and result["max_ram"] > 0

        hook = RampDatabaseHook(database=DatabaseSettings(postgres_conn_id=None, **ours.sqlalchemy_config))
        hook.claim_submission(sub_id, RunRef("ramp_train_reference", "manual__reference"))
        hook.set_training(sub_id)
        hook.record_results(sub_id, result)

        _ramp_python(
            [REFERENCE],
            {
                "action": "record",
                "sqlalchemy": theirs.sqlalchemy_config,
                "submission_id": sub_id,
                "training_output": output,
                "success": result["success"],
                "error_msg": result["error_msg"],
                "max_ram": result["max_ram"],
            },
            str(tmp_path),
        )

        read = [
            _ramp_python(
                [REFERENCE],
                {"action": "read", "sqlalchemy": db.sqlalchemy_config, "submission_id": sub_id},
                str(tmp_path),
            )
            for db in (ours, theirs)
        ]
        assert read[0].keys() == read[1].keys()
        for key in read[0]:
            if key in CSV_SCORE_KEYS:
                assert _same(read[0][key], read[1][key]), (key, read[0][key], read[1][key])
            else:
                assert read[0][key] == read[1][key], (key, read[0][key], read[1][key])
        expected_state = "scored" if result["success"] else "training_error"
        assert read[0]["state"] == expected_state
        assert read[0]["fold_states"] == [expected_state] * ramp_template.n_cv_folds
        assert read[0]["max_ram"] == result["max_ram"] and read[0]["stamped"] == [True, True]
        if result["success"]:
            assert read[0]["error_msg"] == "" and read[0]["times"][0]["train"] > 0
            assert {b["dtype"] for b in read[0]["cv_bags"].values()} == {"float64"}
        else:
            assert "Traceback" in read[0]["error_msg"]
    finally:
        ours.drop()
        theirs.drop()
