"""A training run's conf: the fields a trigger form or `airflow dags trigger --conf` gives."""

from __future__ import annotations

import re

import pytest

from ramp_airflow.utils.run_conf import RunConfError, SubmissionRequest, parse_run_conf


@pytest.mark.parametrize(
    "conf, expected",
    [
        ({"submission_id": 42}, SubmissionRequest(42, None, None, None)),
        ({"team": "a;b", "name": "x$(id)"}, SubmissionRequest(None, "a;b", "x$(id)", None)),
        (
            {"submission_id": 7, "instance_id": "i-0123456789abcdef0"},
            SubmissionRequest(7, None, None, "i-0123456789abcdef0"),
        ),
        # The UI form sends every field, unset ones as null.
        (
            {"submission_id": 3, "team": None, "name": None, "instance_id": None, "retrain": False},
            SubmissionRequest(3, None, None, None),
        ),
        ({"submission_id": 3, "retrain": True}, SubmissionRequest(3, None, None, None, retrain=True)),
    ],
)
def test_good_confs(conf, expected):
    assert parse_run_conf(conf) == expected


@pytest.mark.parametrize(
    "conf, message",
    [
        ({}, "name the submission: give conf.submission_id, or conf.team and conf.name"),
        ({"submission_id": "42"}, "conf.submission_id must be a whole number, not '42'"),
        ({"submission_id": True}, "conf.submission_id must be a whole number"),
        ({"submission_id": 0}, "conf.submission_id must be positive"),
        (
            {"submission_id": 4, "team": "t", "name": "n"},
            "give either conf.submission_id, or conf.team and conf.name, not both",
        ),
        ({"team": "t"}, "conf.name is missing"),
        ({"name": "n"}, "conf.team is missing"),
        ({"team": 5, "name": "n"}, "conf.team must be a non-empty string"),
        ({"submision_id": 4}, "conf.submision_id: unknown field (did you mean 'submission_id'?)"),
        ({"submission_id": 4, "instance_id": "i-1; rm -rf /"}, "conf.instance_id must be an EC2 instance id"),
        ({"submission_id": 4, "retrain": "yes"}, "conf.retrain must be true or false, not 'yes'"),
        ([1], "must be a JSON object"),
    ],
)
def test_bad_confs_name_the_field(conf, message):
    with pytest.raises(RunConfError, match=re.escape(message)):
        parse_run_conf(conf)
