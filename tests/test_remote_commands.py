"""The remote command builders, as strings, and the parsers of what those commands print."""

from __future__ import annotations

import hashlib
import shlex

import pytest

from ramp_airflow.utils import ssh_commands, training_job, training_reports
from ramp_airflow.utils.layout import RemoteSubmissionPaths

KIT = "~/ramp-kits/iris"
SUB = "ramp-kits/iris/submissions/submission_000000042"
PATHS = RemoteSubmissionPaths(KIT, 42)


def script_of(command: str) -> str:
    argv = shlex.split(command)
    assert argv[:2] == ["bash", "-c"] and len(argv) == 3
    return argv[2]


def test_paths_are_relative_to_the_home_and_derive_from_the_id():
    assert training_job.prepare_upload_command(PATHS) == f"mkdir -p -- {SUB}"
    assert (
        training_job.prepare_upload_command(RemoteSubmissionPaths("/srv/kit", 42))
        == "mkdir -p -- /srv/kit/submissions/submission_000000042"
    )
    with pytest.raises(ValueError):
        training_job.prepare_upload_command(RemoteSubmissionPaths(KIT, "42; touch PWNED"))


def test_training_argv_appends_the_submission_and_wraps_mprof():
    assert training_job.training_argv(42) == ["ramp-test", "--submission", "submission_000000042", "--save-output"]
    assert training_job.training_argv(42, ("python", "-m", "rampwf"), memory_profiling=True) == [
        "mprof",
        "run",
        "--include-children",
        "--output=submissions/submission_000000042/mprof.dat",
        "python",
        "-m",
        "rampwf",
        "--submission",
        "submission_000000042",
        "--save-output",
    ]


def test_start_command_locks_clears_and_detaches_in_a_login_shell():
    script = script_of(training_job.start_command(PATHS, ["ramp-test", "--submission", "submission_000000042"]))
    assert f"exec 9>> {SUB}/.training.lock\nif ! flock -n 9; then" in script
    lock, clear, spawn = (script.index(s) for s in ("flock -n 9", "rm -rf --", "setsid nohup bash -lc"))
    assert lock < clear < spawn
    assert f"rm -rf -- {SUB}/training_output {SUB}/log {SUB}/mprof.dat {SUB}/training_job && mkdir" in script
    job = shlex.split(script[spawn:])[4]
    assert (
        f"(cd ramp-kits/iris && export PYTHONUNBUFFERED=1 && exec ramp-test --submission submission_000000042) < /dev/null >> {SUB}/log 2>&1"
        in job
    )
    assert f"mv -f {SUB}/training_job/exit_code.tmp {SUB}/training_job/exit_code" in job
    assert f'printf %s "$$" > {SUB}/training_job/pid.tmp' in job


def test_a_run_key_reaches_the_instance_as_a_digest_checked_before_the_clearing():
    key = "ramp_train_x/manual__$(touch PWNED)'/upload_and_train"
    script = script_of(training_job.start_command(PATHS, ["ramp-test"], run_key=key))
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert "PWNED" not in script
    ended, clear, record, spawn = (
        script.index(s)
        for s in (
            f"= {digest} ]; then\n  echo ended",
            "rm -rf --",
            f"printf %s {digest} > {SUB}/training_job/run_key",
            "setsid",
        )
    )
    assert ended < clear < record < spawn
    assert "run_key" not in script_of(training_job.start_command(PATHS, ["ramp-test"]))


def test_argv_with_shell_metacharacters_stays_one_word():
    script = script_of(training_job.start_command(PATHS, ["ramp-test", "$(touch PWNED)", "a'b"]))
    job = shlex.split(script[script.index("setsid") :])[4]
    assert shlex.join(["ramp-test", "$(touch PWNED)", "a'b"]) in job


def test_poll_and_kill_commands():
    poll = script_of(training_job.poll_command(PATHS, 1234))
    assert f"tail -c +1235 {SUB}/log 2>/dev/null | head -c {training_job.LOG_CHUNK_MAX_BYTES}" in poll
    assert f'kill -0 -- "-$(cat {SUB}/training_job/pid)"' in poll
    kill = script_of(training_job.kill_command(PATHS, grace_secs=2))
    assert 'kill -TERM -- "-$p"' in kill and 'kill -KILL -- "-$p"' in kill and "seq 10" in kill
    assert '""|*[!0-9]*|0|1) echo gone' in kill


def test_ssh_and_rsync_argv_pin_the_host_key():
    assert (
        ssh_commands.known_hosts_line("127.0.0.1", 2222, "ssh-ed25519 AAAA comment")
        == "[127.0.0.1]:2222 ssh-ed25519 AAAA"
    )
    assert ssh_commands.known_hosts_line("10.0.0.1", 22, "ssh-rsa BBBB") == "10.0.0.1 ssh-rsa BBBB"
    ssh = ssh_commands.ssh_argv("/k", 2222, "/tmp/kh")
    assert "StrictHostKeyChecking=yes" in ssh and "UserKnownHostsFile=/tmp/kh" in ssh and "BatchMode=yes" in ssh
    argv = ssh_commands.rsync_argv(
        ssh, ["/src/"], ssh_commands.remote_spec("ubuntu", "10.0.0.1", "a/b/"), download=False
    )
    assert "--archive" in argv
    assert argv[0] == "rsync" and argv[-3:] == ["--", "/src/", "ubuntu@10.0.0.1:a/b/"]
    down = ssh_commands.rsync_argv(
        ssh,
        [ssh_commands.remote_spec("u", "h", "s/log"), ssh_commands.remote_spec("u", "h", "s/x")],
        "/dst/",
        download=True,
    )
    assert down[-4:] == ["--", "u@h:s/log", "u@h:s/x", "/dst/"]
    # What comes back from a participant's instance: no links, devices or FIFOs, none of its modes.
    assert "--archive" not in down and {"--no-links", "--no-devices", "--no-specials"} <= set(down)
    assert shlex.split(argv[argv.index("-e") + 1]) == ssh
    assert ssh_commands.remote_spec("u", "::1", "p") == "u@[::1]:p"
    for bad in ("-oProxyCommand=x", "a b", "h;id", "", "u@h"):
        with pytest.raises(ValueError):
            ssh_commands.check_address(bad)


@pytest.mark.parametrize(
    ("line", "status"),
    [
        ("finished 0", training_reports.JobStatus("finished", exit_code=0)),
        ("finished 137", training_reports.JobStatus("finished", exit_code=137)),
        ("died", training_reports.JobStatus("died")),
        ("running 77", training_reports.JobStatus("running", pid=77)),
    ],
)
def test_parse_status_line(line, status):
    assert training_reports.parse_status_line(line) == status


@pytest.mark.parametrize("line", ["", "finished", "finished x", "running 1 2", "sleeping 1"])
def test_parse_status_line_rejects_garbage(line):
    with pytest.raises(ValueError, match="unexpected training status"):
        training_reports.parse_status_line(line)


def test_outcomes():
    assert training_reports.JobStatus("finished", exit_code=1).outcome() == {"outcome": "finished", "exit_code": 1}
    assert training_reports.JobStatus("died").outcome() == {"outcome": "died"}
    assert training_reports.JobStatus("running", pid=7).outcome() is None


def test_parse_start_output():
    assert training_reports.parse_start_output("started 12 1700000000.25\n") == ("started", 12, 1700000000.25)
    assert training_reports.parse_start_output("running 12 1700000000.25\n") == ("running", 12, 1700000000.25)
    assert training_reports.parse_start_output("ended 12 1700000000.25\n") == ("ended", 12, 1700000000.25)
    with pytest.raises(ValueError, match="did not record itself"):
        training_reports.parse_start_output("started\n")


def test_watch_shows_whole_lines_and_advances_the_offset():
    watch = training_reports.TrainingWatch(PATHS)
    assert watch.take(b"running 7\nline 1\nline") == (["line 1"], None)
    assert watch.log_offset == len(b"line 1\n")
    assert "tail -c +8 " in watch.poll_command()
    assert watch.take(b"finished 0\nline 2\ntail") == (["line 2", "tail"], {"outcome": "finished", "exit_code": 0})
    assert watch.log_offset == len(b"line 1\nline 2\ntail")
    assert training_reports.TrainingWatch(PATHS).take(b"running 7\n\xff\xfe bad bytes\n")[0] == [
        "\ufffd\ufffd bad bytes"
    ]


def test_the_live_log_is_cleaned_and_capped():
    watch = training_reports.TrainingWatch(PATHS, live_log_max_bytes=40)
    lines, _ = watch.take(b"running 7\n\x1b[31mred\x1b[0m \x00nul \xff\nsecond line\n")
    assert lines == ["red nul \ufffd", "second line"]
    assert "head -c 8" in watch.poll_command()  # what is left of the cap (32 bytes shown), no more
    lines, _ = watch.take(b"running 7\n" + b"x" * 100 + b"\n")
    assert lines == ["x" * 8, "[the rest of the training log is not copied here: over 40 bytes]"]
    assert "head -c 0" in watch.poll_command()
    assert watch.take(b"finished 0\n")[0] == []
