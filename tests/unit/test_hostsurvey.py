"""`slurmrestd-access survey` against the shell survey it stands in for: on the same files, the
same lines, so the deploy decides the same way whichever answered. Real files, real processes
(the tool runs as a command, the shell script under sh)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slurmrestd_access.hoststate import parse_survey, survey_script
from slurmrestd_access.survey import split_between
from watchdog_daemon.system import hostsurvey
from watchdog_daemon.system.surveycli import (
    CHECK_BEGIN,
    CHECK_END,
    DECLINED,
    EXIT_MARK,
    PLAN_BEGIN,
    PLAN_END,
)

ROOT = Path(__file__).resolve().parents[2]
USERS, GROUPS = ["root", "nobody", "no-such-user-xyz"], ["root", "no-such-group-xyz"]
UNITS = ["no-such-unit-xyz.service"]


@pytest.fixture
def tree(tmp_path: Path) -> dict:
    etc = tmp_path / "etc"
    etc.mkdir()
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "auth_jwt.so").write_bytes(b"")
    (etc / "slurm.conf").write_text(f"ClusterName=hpc\nPluginDir=/nowhere:{plugins}\n")
    (etc / "empty").write_bytes(b"")
    (etc / "link").symlink_to("slurm.conf")
    os.mkfifo(etc / "fifo")
    (etc / "hard").write_text("x\n")
    os.link(etc / "hard", etc / "hard2")
    (etc / "key").write_bytes(os.urandom(64))
    (etc / "key").chmod(0o600)
    (etc / "sticky").write_text("y\n")
    (etc / "sticky").chmod(0o1640)
    dist = tmp_path / "prefix/current/lib/python3.11/site-packages"
    (dist / "slurmrestd_access-9.8.7.dist-info").mkdir(parents=True)
    (tmp_path / "prefix/INSTALLED").write_text("0123456789abcdef\n")
    tool = tmp_path / "tool"
    tool.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} "
                    "-m watchdog_daemon.cli \"$@\"\n")
    tool.chmod(0o755)
    names = ("slurm.conf", "empty", "link", "fifo", "hard", "key", "sticky", "missing")
    return {
        "files": [str(etc / n) for n in names] + [str(etc), str(plugins / "missing-dir/x")],
        "keys": (str(etc / "key"), str(etc / "link"), str(etc / "missing")),
        "prefix": str(tmp_path / "prefix"), "conf": str(etc / "slurm.conf"), "tool": str(tool),
        "tmp": tmp_path,
    }


def shell_survey(t: dict, env: dict | None = None) -> list[str]:
    script = survey_script(t["files"], UNITS, USERS, GROUPS, t["prefix"], t["conf"],
                           keys=t["keys"], tool=t["tool"])
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True,
                          env=env).stdout.splitlines()


def tool_survey(t: dict, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    argv = [t["tool"], "survey", "--protocol", "1", "--tool-prefix", t["prefix"],
            "--slurm-conf", t["conf"]]
    for flag, values in (("--file", t["files"]), ("--key", t["keys"]), ("--unit", UNITS),
                         ("--user", USERS), ("--group", GROUPS)):
        for value in values:
            argv += [flag, value]
    return subprocess.run([*argv, *extra], capture_output=True, text=True, env=env)


def test_the_tool_says_what_the_shell_says(tree):
    done = tool_survey(tree)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == shell_survey(tree)
    state = parse_survey(done.stdout.splitlines())
    # What the comparison is worth: every kind of file the deploy meets is in it.
    etc = tree["tmp"] / "etc"
    assert state.files[str(etc / "slurm.conf")].sha256
    assert state.files[str(etc / "empty")].kind == "regular empty file"
    assert state.files[str(etc / "link")].kind == "symbolic link"
    assert state.files[str(etc / "fifo")].kind == "fifo"
    assert state.files[str(etc / "hard")].sha256 is None  # two names: never hashed
    assert state.files[str(etc / "key")].mode == 0o600 and state.files[str(etc / "key")].sha256
    assert state.files[str(etc / "sticky")].mode == 0o1640
    assert not state.files[str(etc / "missing")].exists
    assert state.files[str(etc)].kind == "directory"
    assert state.jwt_plugin == str(tree["tmp"] / "plugins/auth_jwt.so")
    assert (state.tool_digest, state.tool_version) == ("0123456789abcdef", "9.8.7")
    assert state.users == {"root": True, "nobody": True, "no-such-user-xyz": False}
    assert state.python  # the host's python3, as `python3 -c` prints it


def test_a_symlinked_file_is_described_not_followed(tree):
    lines = tool_survey(tree).stdout.splitlines()
    [link] = [line for line in lines if line.startswith(f"keyjson|{tree['tmp']}/etc/link|")]
    data = json.loads(link.split("|", 2)[2])
    assert data["is_symlink"] and data["sha256"] is None


def test_an_old_python3_is_left_to_the_shell(tree, tmp_path):
    # python3 too old: the shell survey lists the other interpreters; the tool declines and
    # prints nothing (the workstation's command then runs the shell survey).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text("#!/bin/sh\necho 3.6\n")
    (bin_dir / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = tool_survey(tree, env=env)
    assert (done.returncode, done.stdout) == (DECLINED, "")


def test_an_unknown_protocol_prints_nothing(tree):
    done = subprocess.run([tree["tool"], "survey", "--protocol", "99", "--tool-prefix", "/x"],
                          capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (2, "")


def test_plan_and_check_come_between_their_markers(tree):
    missing_ini = str(tree["tmp"] / "no-agent.ini")
    done = tool_survey(tree, "--plan", f"--conf {tree['conf']} --jwt-key /etc/no-key",
                       "--check", f"--agent-ini {missing_ini} --timeout 2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    rest, check = split_between(lines, CHECK_BEGIN, CHECK_END)
    survey_lines, plan = split_between(rest, PLAN_BEGIN, PLAN_END)
    assert survey_lines == shell_survey(tree)
    assert plan[-1] == f"{EXIT_MARK}0" and json.loads(plan[0])["conf"][0]["file"] == tree["conf"]
    # The check's own verdict on a missing agent.ini, with its exit code: data, not a failure.
    report = json.loads(check[0])
    assert not report["ok"] and check[-1] == f"{EXIT_MARK}{report['exit_code']}" != f"{EXIT_MARK}0"


def test_file_kinds_are_stats_words():
    import stat

    assert hostsurvey.file_kind(stat.S_IFREG | 0o644, 0) == "regular empty file"
    assert hostsurvey.file_kind(stat.S_IFREG | 0o644, 3) == "regular file"
    assert hostsurvey.file_kind(stat.S_IFSOCK, 0) == "socket"


def test_os_release_words():
    text = 'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\n'
    assert hostsurvey.os_ids(text) == ["rocky", "rhel", "centos", "fedora"]
    assert hostsurvey.os_ids("ID=debian\n") == ["debian"]


def _agent_files(tmp_path: Path, sock: Path) -> str:
    from tests.unit.test_check_cli import KEY

    key = tmp_path / "agent.key"
    key.write_bytes(KEY)
    key.chmod(0o400)
    ini = tmp_path / "agent.ini"
    ini.write_text(f"[service]\ncluster = hpc\n[slurmrestd]\nuri = unix://{sock}\n"
                   f"jwt_key = {key}\n")
    conf = tmp_path / "check-slurm.conf"
    conf.write_text("AccountingStorageType=accounting_storage/slurmdbd\n")
    return (f"--agent-ini {ini} --slurm-conf {conf} --timeout 5 --slurmweb-release 5.2")


def test_the_check_passes_through_the_survey(tree):
    from tests.fakes.fake_slurmrestd import FakeSlurmrestd
    from tests.unit.test_check_cli import KEY

    sock = tree["tmp"] / "s.sock"
    with FakeSlurmrestd(sock, slurmctld_key=KEY):
        done = tool_survey(tree, "--check", _agent_files(tree["tmp"], sock))
    _, check = split_between(done.stdout.splitlines(), CHECK_BEGIN, CHECK_END)
    assert json.loads(check[0])["ok"] is True and check[-1] == f"{EXIT_MARK}0"


def test_a_check_that_hangs_is_stopped_and_left_out(tree):
    import socket
    import time

    sock = tree["tmp"] / "hang.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock))
    listener.listen(8)  # accepts connections, never answers
    try:
        started = time.monotonic()
        done = tool_survey(tree, "--check", _agent_files(tree["tmp"], sock),
                           "--check-wait", "0.5")
        took = time.monotonic() - started
    finally:
        listener.close()
    assert done.returncode == 0, done.stderr
    assert CHECK_BEGIN not in done.stdout  # the deploy then checks live
    assert done.stdout.splitlines() == shell_survey(tree)
    assert took < 4  # not the check's 5 s timeout


def test_a_declined_survey_stops_its_check_at_once(tree, tmp_path):
    import socket
    import time

    bin_dir = tmp_path / "oldbin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text("#!/bin/sh\necho 3.6\n")
    (bin_dir / "python3").chmod(0o755)
    sock = tree["tmp"] / "hang2.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock))
    listener.listen(8)
    try:
        started = time.monotonic()
        # stdout through a pipe the caller reads to its end, as ssh does: a check left running
        # would hold it open.
        done = tool_survey(tree, "--check", _agent_files(tree["tmp"], sock),
                           env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
        took = time.monotonic() - started
    finally:
        listener.close()
    assert (done.returncode, done.stdout) == (DECLINED, "")
    assert took < 4  # not the check's 5 s timeout
