"""The result parser on crafted training_output trees, as ramp-test writes them and broken."""

from __future__ import annotations

import json
import os

import pytest

from ramp_airflow.utils.training_results import parse_training_results

SCORES = "step,acc,error,time\ntrain,0.9,0.1,0.5\nvalid,0.8,0.2,0.01\ntest,0.7,0.3,0.02\n"
BAGGED = "step,n_bag,acc,error\ntest,1,0.75,0.25\nvalid,0,0.8,0.2\nvalid,1,0.85,0.15\ntest,0,0.7,0.3\n"
TRACEBACK = 'Traceback (most recent call last):\n  File "x.py"\nValueError: boom\n'


def write(path, text, binary=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if binary else "w") as f:
        f.write(text)


@pytest.fixture
def tree(tmp_path):
    """A good 2-fold output; returns ``(predictions_dir, log_dir)``."""
    out, logs = tmp_path / "out", tmp_path / "logs"
    for i in range(2):
        fold = out / f"fold_{i}"
        for name in ("y_pred_train.npz", "y_pred_test.npz"):
            write(fold / name, b"PK", binary=True)
        for step, secs in (("train", "1.5"), ("valid", "0.25"), ("test", "0.125")):
            write(fold / f"{step}_time", secs)
        write(fold / "scores.csv", SCORES)
        write(fold / "state.txt", "scored")
    write(out / "bagged_scores.csv", BAGGED)
    write(logs / "log", "Testing\nBagged scores\n")
    return str(out), str(logs)


def parse(tree, folds=2):
    result = parse_training_results(42, tree[0], tree[1], folds)
    json.dumps(result, allow_nan=False)  # plain, JSON-serialisable values
    return result


def test_a_good_tree(tree):
    write(os.path.join(tree[1], "mprof.dat"), "CMDLINE ramp-test\nMEM 10.5 1.0\nMEM 120.25 2.0\nMEM 99.0 3.0\n")
    result = parse(tree)
    assert result["success"] is True and result["error_msg"] == "" and result["max_ram"] == 120.25
    assert result["folds"][1] == {
        "train_time": 1.5,
        "valid_time": 0.25,
        "test_time": 0.125,
        "scores": {
            "train": {"acc": 0.9, "error": 0.1},
            "valid": {"acc": 0.8, "error": 0.2},
            "test": {"acc": 0.7, "error": 0.3},
        },
    }
    assert result["bagged_scores"] == {
        "valid": {"acc": [0.8, 0.85], "error": [0.2, 0.15]},
        "test": {"acc": [0.7, 0.75], "error": [0.3, 0.25]},
    }


def test_missing_fold_and_log_traceback_with_ansi(tree):
    os.rename(os.path.join(tree[0], "fold_1"), os.path.join(tree[0], "gone"))
    write(
        os.path.join(tree[1], "log"), b"CV fold 0\n\x1b[31mTraceback (most recent call last):\x1b[0m\n\xff boom\n", True
    )
    result = parse(tree)
    assert result["success"] is False and result["folds"] == []
    assert "holds folds [0], expected fold_0 to fold_1" in result["error_msg"]
    assert result["error_msg"].endswith("Traceback (most recent call last):\n\ufffd boom\n")


def test_fold_count_must_match_the_event(tree):
    result = parse(tree, folds=3)
    assert result["success"] is False and "expected fold_0 to fold_2" in result["error_msg"]


def test_missing_npz_names_the_file(tree):
    os.remove(os.path.join(tree[0], "fold_0", "y_pred_test.npz"))
    result = parse(tree)
    assert result["success"] is False
    assert os.path.join(tree[0], "fold_0", "y_pred_test.npz") + " is missing" in result["error_msg"]


def test_error_txt_gives_the_log_from_the_first_traceback(tree):
    write(os.path.join(tree[0], "fold_0", "error.txt"), TRACEBACK)
    write(os.path.join(tree[1], "log"), "Testing\nCV fold 0\n" + TRACEBACK)
    result = parse(tree)
    assert result["success"] is False and result["error_msg"] == TRACEBACK


def test_error_txt_without_a_log(tree):
    write(os.path.join(tree[0], "fold_1", "error.txt"), "\x1b[1m" + TRACEBACK)
    os.remove(os.path.join(tree[1], "log"))
    assert parse(tree)["error_msg"] == TRACEBACK


@pytest.mark.parametrize(
    ("file", "text", "message"),
    [
        ("fold_0/scores.csv", "step,acc,time\ntrain,0.9,1\nvalid,x,1\ntest,0.7,1\n", "holds 'x' where a score"),
        ("fold_0/scores.csv", "step,acc,time\ntrain,0.9,1\n", "no row for step(s) valid, test"),
        ("fold_0/scores.csv", "", "no header"),
        ("fold_1/train_time", "fast", "does not hold a number"),
        ("bagged_scores.csv", "step,n_bag,acc\nvalid,0,0.8\ntest,0,0.7\n", "no row for step valid, n_bag 1"),
        ("bagged_scores.csv", "step,n_bag,acc\nvalid,0\n", "rows whose length differs"),
    ],
)
def test_malformed_files_name_the_file(tree, file, text, message):
    write(os.path.join(tree[0], file), text)
    result = parse(tree)
    assert result["success"] is False and result["folds"] == []
    assert os.path.join(tree[0], file) in result["error_msg"] and message in result["error_msg"]


@pytest.mark.parametrize("file", ["fold_0/valid_time", "fold_1/scores.csv", "bagged_scores.csv"])
def test_missing_files_name_the_file(tree, file):
    os.remove(os.path.join(tree[0], file))
    result = parse(tree)
    assert result["success"] is False and result["error_msg"] == os.path.join(tree[0], file) + " is missing"


def test_no_training_output_at_all(tmp_path):
    result = parse_training_results(7, str(tmp_path / "none"), str(tmp_path / "none"), 2)
    assert result == {
        "submission_id": 7,
        "success": False,
        "error_msg": f"{tmp_path / 'none'} is missing",
        "max_ram": None,
        "folds": [],
        "bagged_scores": {"valid": {}, "test": {}},
    }


def test_malformed_mprof_lines_are_skipped(tree):
    write(os.path.join(tree[1], "mprof.dat"), "CMDLINE x\nMEM abc 1\nMEM 5.5 2\nMEM")
    assert parse(tree)["max_ram"] == 5.5
    write(os.path.join(tree[1], "mprof.dat"), "garbage")
    assert parse(tree)["max_ram"] is None


# A participant's code writes these files: whatever they hold is that submission's training error,
# never a crash, a hang or a read of anything else on the Airflow side.


@pytest.mark.parametrize(
    ("file", "text", "message"),
    [
        ("fold_0/scores.csv", "step,acc,time\ntrain,0.9,1\nvalid,nan,1\ntest,0.7,1\n", "finite score"),
        ("bagged_scores.csv", "step,n_bag,acc\nvalid,0,inf\nvalid,1,1\ntest,0,1\ntest,1,1\n", "finite score"),
        ("fold_0/scores.csv", "step,acc,time\ntrain," + "9" * 300_000 + ",1\n", "not a readable CSV file"),
        ("fold_0/scores.csv", "step,acc,time\ntrain,0.9\x00,1\nvalid,1,1\ntest,1,1\n", "'0.9' where a score"),
        ("fold_1/test_time", "1" * (17 << 20), "larger than 16 MiB"),
    ],
)
def test_hostile_result_files_are_the_submissions_training_error(tree, file, text, message):
    write(os.path.join(tree[0], file), text)
    result = parse(tree)
    assert result["success"] is False and os.path.join(tree[0], file) in result["error_msg"]
    assert message in result["error_msg"] and "\x00" not in result["error_msg"]


def test_links_and_pipes_are_refused_not_followed(tree, tmp_path):
    secret = tmp_path / "config.yml"
    secret.write_text("password: hunter2\n")
    scores = os.path.join(tree[0], "fold_0", "scores.csv")
    os.remove(scores)
    os.symlink(secret, scores)
    log = os.path.join(tree[1], "log")
    os.remove(log)
    os.mkfifo(log)  # a read would block forever
    result = parse(tree)
    assert result["success"] is False and f"{scores} cannot be opened as a regular file" in result["error_msg"]
    assert "hunter2" not in json.dumps(result)


def test_error_msg_is_clean_and_keeps_the_head_and_the_tail_of_a_long_log(tree):
    write(os.path.join(tree[0], "fold_0", "error.txt"), TRACEBACK)
    noise = "".join(f"line {i} \x00\x07\x1b[2J\x1b]0;title\x07 \xff\n" for i in range(100_000))
    log = b"Traceback (most recent call last):\n" + noise.encode("latin-1") + TRACEBACK.encode()  # \xff: not UTF-8
    write(os.path.join(tree[1], "log"), log, True)
    message = parse(tree)["error_msg"]
    assert message.startswith("Traceback (most recent call last):\nline 0") and message.endswith(TRACEBACK)
    assert "characters cut ..." in message and len(message) < 21_000
    assert not any(c in message for c in "\x00\x07\x1b")
