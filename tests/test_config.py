"""The event config file: what the seed's users write, and every way it can be wrong."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

from ramp_airflow.cli import main
from ramp_airflow.config import AwsSettings, ConfigError, DatabaseSettings, EventConfig, load_config, validation
from ramp_airflow.config.schema import SECTIONS, SETTING_METADATA_KEY, Setting, derive_sections, setting


@pytest.fixture
def key_file(tmp_path):
    key = tmp_path / "id_rsa"
    key.write_text("not a real key\n")
    key.chmod(0o600)
    return key


def seed_config(key_file, **aws_overrides) -> str:
    """The seed README's example, with a real key file; overrides replace aws lines."""
    aws = {
        "ami_image_id": "ami-0bc19972",
        "ami_user_name": "ubuntu",
        "instance_type": "t2.micro",
        "key_name": "key",
        "key_path": str(key_file),
        "security_group": "launch-wizard-1",
        "remote_ramp_kit_folder": "~/ramp-kits/iris",
        "local_predictions_folder": "./predictions",
        "local_log_folder": "./logs",
        "check_status_interval_secs": "60",
        "check_finished_training_interval_secs": "60",
        "train_loop_interval_secs": "60",
        "memory_profiling": "true",
        "hooks": "\n        after_sucessful_training: cd /mnt/ramp_data/frontend;fab update_leaderboards:e=iris",
    }
    aws.update(aws_overrides)
    lines = "\n".join(f"    {k} : {v}" for k, v in aws.items() if v is not None)
    return (
        textwrap.dedent(
            """\
        sqlalchemy:
            drivername: postgresql
            username: username
            password: secret
            host: localhost
            port: 5432
            database: ramp
        ramp:
            event_name : iris
        aws:
        """
        )
        + lines
        + "\n"
    )


def write(tmp_path, text, name="config.yml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_config(path)
    return [str(p) for p in err.value.problems]


def test_seed_example_loads_with_defaults_and_alias(tmp_path, key_file):
    config = load_config(write(tmp_path, seed_config(key_file)))
    assert config.event_name == "iris"
    assert config.aws.ami_image_id == "ami-0bc19972" and config.aws.ami_image_name is None
    assert config.aws.ami_owners == ("self",)
    assert config.aws.memory_profiling is True
    assert config.aws.check_status_interval_secs == 60
    assert config.aws.ssh_port == 22 and config.aws.training_timeout_secs == 7200
    assert config.aws.training_command == ("ramp-test",)
    assert config.aws.instance_type == ("t2.micro",)  # one type, as the seed gives it
    # Relative local folders are relative to the config file, not to whatever the worker's cwd is.
    assert config.aws.local_predictions_folder == str(tmp_path / "predictions")
    assert config.event_commands == {
        "successful_training": ("cd /mnt/ramp_data/frontend;fab update_leaderboards:e=iris",),
    }
    assert config.database.host == "localhost" and config.database.port == 5432
    assert "secret" not in repr(config)


def test_hook_lists_and_new_fields(tmp_path, key_file):
    text = seed_config(
        key_file,
        ami_image_id=None,
        ami_image_name="iris_backend",
        ami_owners="[self, '123456789012']",
        hooks="\n        start_training: echo start\n        failed_training: [echo one, echo two]",
        training_command="\"'ramp-test' --quick-test\"",
        training_timeout_secs="3600",
        use_spot_instance="true",
        instance_type="[t3.large, m5.large]",
    )
    config = load_config(write(tmp_path, text))
    assert config.aws.instance_type == ("t3.large", "m5.large")  # tried in this order
    assert config.aws.ami_image_name == "iris_backend"
    assert config.aws.ami_owners == ("self", "123456789012")
    assert config.event_commands == {"start_training": ("echo start",), "failed_training": ("echo one", "echo two")}
    assert config.aws.training_command == ("ramp-test", "--quick-test")
    assert config.aws.training_timeout_secs == 3600 and config.aws.use_spot_instance is True


def test_connections_replace_inline_secrets(tmp_path):
    text = textwrap.dedent(
        """\
        sqlalchemy: {postgres_conn_id: ramp_db}
        ramp: {event_name: iris}
        aws:
          ami_image_name: iris_backend
          ami_user_name: ubuntu
          instance_type: t2.micro
          key_name: key
          security_group: default
          remote_ramp_kit_folder: ~/ramp-kits/iris
          local_predictions_folder: /srv/ramp/predictions
          local_log_folder: /srv/ramp/logs
          aws_conn_id: aws_ramp
          ssh_conn_id: ssh_ramp
        """
    )
    config = load_config(write(tmp_path, text))
    assert config.database.postgres_conn_id == "ramp_db" and config.database.host is None
    assert config.aws.key_path is None and config.aws.ssh_conn_id == "ssh_ramp"


@pytest.mark.parametrize(
    "override, expected",
    [
        ({"instance_typ": "t2.micro"}, "aws.instance_typ: unknown field (did you mean 'instance_type'?)"),
        ({"instance_type": None}, "aws.instance_type: missing required field"),
        ({"instance_type": "[]"}, "aws.instance_type: must be a non-empty string or a non-empty list of strings"),
        ({"instance_type": "[t3.large, 5]"}, "aws.instance_type: must be a non-empty string or a non-empty list"),
        ({"instance_type": "[t3.large, '']"}, "aws.instance_type: must be a non-empty string or a non-empty list"),
        ({"instance_type": "{t3.large: 1}"}, "aws.instance_type: must be a non-empty string or a non-empty list"),
        ({"instance_type": "[t3.large, m5.large, t3.large]"}, "aws.instance_type: lists t3.large more than once"),
        ({"memory_profiling": "'yes'"}, "aws.memory_profiling: must be true or false"),
        ({"ami_image_name": "iris_backend"}, "aws.ami_image_id: give exactly one of"),
        ({"ami_image_id": None}, "aws.ami_image_id: give exactly one of"),
        ({"ami_image_id": "0bc19972"}, "aws.ami_image_id: must start with 'ami-'"),
        ({"check_status_interval_secs": "0"}, "aws.check_status_interval_secs: must be greater than 0, not 0"),
        ({"train_loop_interval_secs": "-5"}, "aws.train_loop_interval_secs: must be greater than 0"),
        ({"hooks": "\n        after_training: echo"}, "aws.hooks.after_training: unknown hook"),
        ({"hooks": "\n        start_training: []"}, "aws.hooks.start_training: must be a command or a list"),
        ({"key_path": "/nonexistent/id_rsa"}, "aws.key_path: /nonexistent/id_rsa: No such file or directory"),
        ({"ssh_port": "70000"}, "aws.ssh_port: must be a TCP port"),
        ({"access_key_id": "AKIA"}, "aws.access_key_id: give both"),
    ],
)
def test_each_mistake_names_its_field(tmp_path, key_file, override, expected):
    path = write(tmp_path, seed_config(key_file, **override))
    problems = problems_of(path)
    assert any(p.startswith(f"{path}: ") and expected in p for p in problems), problems


def test_platform_python_must_be_an_executable(tmp_path, key_file):
    def with_python(given: str) -> str:
        return seed_config(key_file).replace("event_name : iris", f"event_name : iris\n    platform_python: {given}")

    assert load_config(write(tmp_path, seed_config(key_file))).platform_python is None
    venv = tmp_path / "ramp-venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to("/usr/bin/python3")
    # Relative to the config file's folder, and left a symlink: a virtualenv's python must stay one.
    assert load_config(write(tmp_path, with_python("ramp-venv/bin/python"))).platform_python == str(venv / "python")
    path = write(tmp_path, with_python("ramp-venv/bin/python3"))
    assert problems_of(path) == [
        f"{path}: ramp.platform_python: {venv}/python3 is not a file; give the RAMP virtualenv's bin/python"
    ]
    (venv / "python3").write_text("#!/bin/sh\n")
    assert problems_of(path) == [
        f"{path}: ramp.platform_python: {venv}/python3 is not executable; give the RAMP virtualenv's bin/python"
    ]


def test_key_readable_by_others_is_refused(tmp_path, key_file):
    key_file.chmod(0o644)
    problems = problems_of(write(tmp_path, seed_config(key_file)))
    assert problems == [
        f"{tmp_path}/config.yml: aws.key_path: {key_file} can be read by other users (mode 0644); run chmod 600 on it"
    ]


def test_all_problems_reported_at_once(tmp_path, key_file):
    text = seed_config(key_file, instance_type=None, memory_profiling="1").replace(
        "event_name : iris", "event_nam: iris"
    )
    problems = problems_of(write(tmp_path, text))
    fields = sorted(p.split(": ")[1] for p in problems)
    assert fields == ["aws.instance_type", "aws.memory_profiling", "ramp.event_nam", "ramp.event_name"]


def test_missing_section_and_bad_event_name(tmp_path):
    problems = problems_of(write(tmp_path, "ramp:\n  event_name: 'iris test'\n"))
    assert any("aws: missing required section" in p for p in problems)
    assert any("ramp.event_name: may only hold" in p for p in problems)


def test_yaml_syntax_error_names_the_line(tmp_path, key_file):
    text = seed_config(key_file).replace("instance_type : t2.micro", "instance_type : [t2.micro")
    path = write(tmp_path, text)
    opened = next(number for number, line in enumerate(text.splitlines(), 1) if "[t2.micro" in line)
    assert problems_of(path) == [
        f"{path}: line {opened + 1}: YAML syntax error: did not find expected ',' or ']' "
        f"(while parsing a flow sequence on line {opened})"
    ]


def test_check_config_command(tmp_path, key_file, capsys):
    good = write(tmp_path, seed_config(key_file), "good.yml")
    good.chmod(0o600)  # it holds the database password
    bad = write(tmp_path, seed_config(key_file, instance_type=None, key_path="~/nope"), "bad.yml")
    assert main(["check-config", str(good)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"{good}: OK: event iris: ami-0bc19972, t2.micro, successful_training"]
    fallbacks = write(tmp_path, seed_config(key_file, instance_type="[t3.large, m5.large]"), "fallbacks.yml")
    assert main(["check-config", str(fallbacks)]) == 0
    assert "ami-0bc19972, t3.large then m5.large, successful_training" in capsys.readouterr().out

    assert main(["check-config", str(good), str(bad)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith(f"{bad}: aws.") for line in err)
    assert "Traceback" not in captured.err


def test_check_config_warns_when_others_can_read_its_secrets(tmp_path, key_file, capsys):
    path = write(tmp_path, seed_config(key_file), "readable.yml")
    path.chmod(0o644)
    assert main(["check-config", str(path)]) == 0  # a warning, not an error
    err = capsys.readouterr().err
    assert f"{path}: warning: it holds a password or a secret key and other users can read it (mode 0644)" in err
    path.write_text(seed_config(key_file).replace("    password: secret\n", ""))
    assert main(["check-config", str(path)]) == 0 and capsys.readouterr().err == ""


def test_a_secret_is_never_quoted_in_an_error(tmp_path, key_file):
    text = seed_config(key_file, secret_access_key="[hunter2]", access_key_id="AKIA").replace(
        "password: secret", "password: [hunter3]"
    )
    problems = problems_of(write(tmp_path, text))
    assert any("aws.secret_access_key: must be a non-empty string, not a list" in p for p in problems)
    assert any("sqlalchemy.password: must be a non-empty string, not a list" in p for p in problems)
    assert not any("hunter" in p for p in problems)


def test_check_config_missing_file(tmp_path, capsys):
    assert main(["check-config", str(tmp_path / "none.yml")]) == 2
    assert "cannot read the file: No such file or directory" in capsys.readouterr().err


def test_section_table_is_derived_from_the_dataclasses():
    # The validator's table holds the very Setting objects declared on the dataclass fields, in field
    # order: a second, hand-written table (even an equal one) fails this.
    def settings(cls):
        return {item.name: item.metadata.get(SETTING_METADATA_KEY) for item in dataclasses.fields(cls)}

    def identities(table):
        return [(key, id(spec)) for key, spec in table.items()]

    event = settings(EventConfig)
    assert list(SECTIONS) == ["sqlalchemy", "ramp", "aws"]
    assert identities(SECTIONS["sqlalchemy"]) == identities(settings(DatabaseSettings))
    assert identities(SECTIONS["ramp"]) == identities(
        {"event_name": event["event_name"], "platform_python": event["platform_python"]}
    )
    assert identities(SECTIONS["aws"]) == identities({**settings(AwsSettings), "hooks": event["event_commands"]})
    # The metadata carries each field's kind, default and constraints.
    assert SECTIONS["aws"]["ssh_port"] == Setting("int", 22, positive=True)
    assert SECTIONS["aws"]["hooks"].kind == "event_commands" and SECTIONS["aws"]["hooks"].default is None
    assert SECTIONS["sqlalchemy"]["password"].secret and SECTIONS["ramp"]["event_name"].kind == "str"


def test_a_field_added_to_the_dataclass_alone_is_validated(tmp_path, key_file, monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class ExtendedAws(AwsSettings):
        gpu_count: int = setting("int", 1, positive=True)

    monkeypatch.setattr(validation, "SECTIONS", derive_sections(aws=ExtendedAws))
    monkeypatch.setattr(validation, "AwsSettings", ExtendedAws)
    assert load_config(write(tmp_path, seed_config(key_file))).aws.gpu_count == 1
    assert load_config(write(tmp_path, seed_config(key_file, gpu_count="4"))).aws.gpu_count == 4
    path = write(tmp_path, seed_config(key_file, gpu_count="0"))
    assert problems_of(path) == [f"{path}: aws.gpu_count: must be greater than 0, not 0"]
