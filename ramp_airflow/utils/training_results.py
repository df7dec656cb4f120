"""Parse a downloaded ``training_output``, log and ``mprof.dat`` into the recording step's result.

Pure file reading, no network: any missing, malformed, oversized or non-finite content makes the
result a training failure whose ``error_msg`` names the file, never an exception, so that no
submission is left stuck in an intermediate state. The files are the participant's: they are read
as :mod:`ramp_airflow.utils.untrusted_text` reads them. The format is the one ``ramp-test
--save-output`` writes (see ``CONTRACT.md``). The result holds plain Python values only
(JSON-serialisable).
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import re

from ramp_airflow.utils import layout
from ramp_airflow.utils.untrusted_text import UnsafeFile, capped, clean, read_bounded, read_head_and_tail

STEPS = ("train", "valid", "test")
BAGGED_STEPS = ("valid", "test")
PREDICTION_FILES = ("y_pred_train.npz", "y_pred_test.npz")
ERROR_FILE = "error.txt"
_FOLD = re.compile(r"^fold_(\d+)$")
# What ramp-test writes is a few KiB; anything far larger is refused rather than read.
RESULT_FILE_MAX_BYTES = 16 << 20
MPROF_MAX_BYTES = 64 << 20
# Of a long log, the head and the tail are read; error_msg keeps its head and its tail, the
# traceback being at the end.
LOG_HEAD_BYTES, LOG_TAIL_BYTES = 64 << 10, 1 << 20
ERROR_MSG_HEAD_CHARS, ERROR_MSG_TAIL_CHARS = 4000, 16000


class _Malformed(Exception):
    """A result file that is missing or does not hold what ``ramp-test`` writes."""


def read_text(path: str, max_bytes: int = RESULT_FILE_MAX_BYTES) -> str | None:
    """A result file decoded leniently, or ``None`` if missing; ``_Malformed`` if not a regular file or too large."""
    try:
        return read_bounded(path, max_bytes)
    except UnsafeFile as err:
        raise _Malformed(str(err)) from None


def error_from_log(log: str) -> str:
    """The log from its first ``Traceback`` to the end (all of it if none), cleaned."""
    log = clean(log)
    start = log.find("Traceback")
    return log[start:] if start >= 0 else log


def _read_log(path: str) -> str | None:
    """The training log (its head and tail when long), or ``None`` if missing or not a regular file."""
    try:
        return read_head_and_tail(path, LOG_HEAD_BYTES, LOG_TAIL_BYTES)
    except UnsafeFile:
        return None


def max_ram(mprof_path: str) -> float | None:
    """The largest ``MEM <MiB> <time>`` value of an ``mprof.dat``; ``None`` if none can be read."""
    try:
        text = read_bounded(mprof_path, MPROF_MAX_BYTES)
    except UnsafeFile:
        return None
    values = []
    for line in (text or "").splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "MEM":
            try:
                values.append(float(words[1]))
            except ValueError:
                continue  # a line cut short while mprof was killed; the others still count
    finite = [v for v in values if math.isfinite(v)]
    return max(finite) if finite else None


def _number(path: str) -> float:
    text = read_text(path)
    if text is None:
        raise _Malformed(f"{path} is missing")
    try:
        value = float(text.strip())
    except ValueError:
        raise _Malformed(f"{path} does not hold a number: {clean(text[:80])!r}") from None
    if not math.isfinite(value):
        raise _Malformed(f"{path} holds {value}, not a finite number")
    return value


def _csv_rows(path: str, key_columns: int) -> tuple[list[str], list[list[str]]]:
    text = read_text(path)
    if text is None:
        raise _Malformed(f"{path} is missing")
    try:
        rows = [row for row in csv.reader(io.StringIO(text)) if row]
    except csv.Error as err:  # a field over the csv module's limit, a NUL byte
        raise _Malformed(f"{path} is not a readable CSV file ({err})") from None
    if not rows or len(rows[0]) <= key_columns:
        raise _Malformed(f"{path} has no header with score names")
    header = rows[0]
    if any(len(row) != len(header) for row in rows[1:]):
        raise _Malformed(f"{path} has rows whose length differs from its header")
    return header, rows[1:]


def _float(path: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise _Malformed(f"{path} holds {clean(value[:80])!r} where a score was expected") from None
    if not math.isfinite(number):
        raise _Malformed(f"{path} holds {number} where a finite score was expected")
    return number


def fold_scores(path: str) -> dict[str, dict[str, float]]:
    """``{step: {score_name: value}}`` from a fold's ``scores.csv`` (its ``time`` column dropped)."""
    header, rows = _csv_rows(path, 1)
    names = [n for n in header[1:] if n != "time"]
    by_step = {row[0]: dict(zip(header[1:], row[1:])) for row in rows}
    missing = [step for step in STEPS if step not in by_step]
    if missing:
        raise _Malformed(f"{path} has no row for step(s) {', '.join(missing)}")
    return {step: {n: _float(path, by_step[step][n]) for n in names} for step in STEPS}


def bagged_scores(path: str, n_folds: int) -> dict[str, dict[str, list[float]]]:
    """``{step: {score_name: [score of n_bag 0..n_folds-1]}}`` from ``bagged_scores.csv``."""
    header, rows = _csv_rows(path, 2)
    names = header[2:]
    table: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        table[(row[0], row[1])] = row[2:]
    out: dict[str, dict[str, list[float]]] = {}
    for step in BAGGED_STEPS:
        columns: dict[str, list[float]] = {n: [] for n in names}
        for n_bag in range(n_folds):
            values = table.get((step, str(n_bag)))
            if values is None:
                raise _Malformed(f"{path} has no row for step {step}, n_bag {n_bag}")
            for name, value in zip(names, values):
                columns[name].append(_float(path, value))
        out[step] = columns
    return out


def _fold(fold_dir: str) -> dict:
    return {
        **{f"{step}_time": _number(os.path.join(fold_dir, f"{step}_time")) for step in STEPS},
        "scores": fold_scores(os.path.join(fold_dir, "scores.csv")),
    }


def _structure_problems(output_dir: str, expected_folds: int) -> tuple[list[str], list[str], bool]:
    """``(fold dirs in order, problems, training raised)`` of a ``training_output`` tree."""
    if not os.path.isdir(output_dir):
        return [], [f"{output_dir} is missing"], False
    numbers = sorted(int(m.group(1)) for m in map(_FOLD.match, os.listdir(output_dir)) if m)
    folds = [os.path.join(output_dir, f"fold_{i}") for i in range(expected_folds)]
    problems = []
    if numbers != list(range(expected_folds)):
        problems.append(f"{output_dir} holds folds {numbers}, expected fold_0 to fold_{expected_folds - 1}")
    raised = False
    for fold_dir in folds:
        if os.path.exists(os.path.join(fold_dir, ERROR_FILE)):
            raised = True
            problems.append(f"{os.path.join(fold_dir, ERROR_FILE)} exists: the submission raised an error")
        problems += [
            f"{os.path.join(fold_dir, name)} is missing"
            for name in PREDICTION_FILES
            if os.path.isdir(fold_dir) and not os.path.isfile(os.path.join(fold_dir, name))
        ]
    return folds, problems, raised


def _failure_message(problems: list[str], folds: list[str], log_path: str, raised: bool) -> str:
    """Why the training failed, as its team reads it in ``error_msg``: cleaned and capped."""
    message = _uncapped_failure_message(problems, folds, log_path, raised)
    return capped(clean(message), ERROR_MSG_HEAD_CHARS, ERROR_MSG_TAIL_CHARS)


def _uncapped_failure_message(problems: list[str], folds: list[str], log_path: str, raised: bool) -> str:
    log = _read_log(log_path)
    if raised:
        if log is not None:
            return error_from_log(log)
        for fold in folds:
            with contextlib.suppress(_Malformed):
                if (error := read_text(os.path.join(fold, ERROR_FILE))) is not None:
                    return error
        return "\n".join(problems)
    message = "\n".join(problems)
    if log is not None and "Traceback" in log:
        message += "\n\n" + error_from_log(log)
    return message


def failed_result(submission_id: int, error_msg: str, max_ram_mib: float | None = None) -> dict:
    """A training failure's result, in the form :func:`parse_training_results` returns."""
    return {
        "submission_id": int(submission_id),
        "success": False,
        "error_msg": error_msg,
        "max_ram": max_ram_mib,
        "folds": [],
        "bagged_scores": {step: {} for step in BAGGED_STEPS},
    }


def parse_training_results(submission_id: int, predictions_dir: str, log_dir: str, expected_folds: int) -> dict:
    """
    The result of a training from its downloaded files.

    :param submission_id: the submission's id
    :param predictions_dir: the downloaded ``training_output`` (holding ``fold_<i>/``)
    :param log_dir: the folder holding the downloaded ``log`` and ``mprof.dat``
    :param expected_folds: the event's number of CV folds
    :return: ``{"submission_id", "success", "error_msg", "max_ram", "folds", "bagged_scores"}``;
        on failure ``folds`` is ``[]`` and ``bagged_scores`` holds empty mappings.
    """
    log_path = os.path.join(log_dir, layout.LOG_FILE)
    result = failed_result(submission_id, "", max_ram(os.path.join(log_dir, layout.MPROF_FILE)))
    folds, problems, raised = _structure_problems(predictions_dir, expected_folds)
    if not problems:
        try:
            result["folds"] = [_fold(f) for f in folds]
            result["bagged_scores"] = bagged_scores(os.path.join(predictions_dir, "bagged_scores.csv"), len(folds))
            result["success"] = True
            return result
        except _Malformed as err:
            result["folds"] = []
            problems.append(str(err))
    result["error_msg"] = _failure_message(problems, folds, log_path, raised)
    return result
