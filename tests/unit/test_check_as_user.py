"""`slurmrestd-access check --as-user USER`: root loads the libraries, then the check runs with
exactly USER's credentials (the deploy's connect check as the agent's user, without runuser).

These run as root, as the whole suite does (CI runs it as root), each in a child process: the
switch of user is for good.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.fake_slurmrestd import FakeSlurmrestd
from watchdog_daemon.exitcodes import ExitCode

ROOT = Path(__file__).resolve().parents[2]
KEY = b"SENTINEL-as-user-key-" + b"u" * 24
NOBODY = pwd.getpwnam("nobody")


@pytest.fixture
def site() -> Iterator[tuple[Path, Path, Path]]:
    # Not under pytest's tmp_path: its parents are root-only, and the point is what nobody sees.
    base = Path(tempfile.mkdtemp(prefix="sra-as-user-", dir="/tmp"))
    try:
        base.chmod(0o755)
        key = base / "agent.key"
        key.write_bytes(KEY)
        key.chmod(0o400)
        os.chown(key, NOBODY.pw_uid, NOBODY.pw_gid)
        sock = base / "s.sock"
        ini = base / "agent.ini"
        ini.write_text(f"[service]\ncluster = hpc\n[slurmrestd]\nuri = unix://{sock}\n"
                       f"jwt_key = {key}\n")
        ini.chmod(0o644)
        yield base, key, ini
    finally:
        shutil.rmtree(base, ignore_errors=True)


def check(ini: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "watchdog_daemon.cli", "check", "--agent-ini", str(ini),
         "--accounting", "no", "--timeout", "3", "--slurmweb-release", "6.0", *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def test_root_checks_as_the_agent_user_and_passes(site):
    base, _, ini = site
    with FakeSlurmrestd(base / "s.sock", slurmctld_key=KEY):
        (base / "s.sock").chmod(0o666)
        done = check(ini, "--as-user", "nobody")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "✅ connection successful" in done.stdout


def test_a_key_only_root_can_read_fails_as_the_agent_user(site):
    base, key, ini = site
    os.chown(key, 0, 0)
    with FakeSlurmrestd(base / "s.sock", slurmctld_key=KEY):
        (base / "s.sock").chmod(0o666)
        as_root = check(ini)
        as_agent = check(ini, "--as-user", "nobody")
    assert as_root.returncode == 0, as_root.stdout + as_root.stderr
    assert as_agent.returncode == ExitCode.KEY_UNREADABLE, as_agent.stdout + as_agent.stderr


def test_a_socket_the_agent_may_not_use_is_permission_denied(site):
    base, _, ini = site
    with FakeSlurmrestd(base / "s.sock", slurmctld_key=KEY):
        (base / "s.sock").chmod(0o600)
        done = check(ini, "--as-user", "nobody")
    assert done.returncode == ExitCode.PERMISSION_DENIED, done.stdout + done.stderr


def test_an_unknown_user_is_user_missing(site):
    _, _, ini = site
    done = check(ini, "--as-user", "no-such-user-sra", "--json")
    assert done.returncode == ExitCode.USER_MISSING
    assert '"reason": "user_missing"' in done.stdout


def test_only_root_may_switch(site):
    _, _, ini = site
    # (The interpreter and its library may be out of nobody's reach here: load what the
    # check needs, then become nobody inside the child.)
    code = ("import sys; "
            "from watchdog_daemon.check import cli as check_cli; "
            "from watchdog_daemon.check import run as check; "
            "from watchdog_daemon.system import privdrop; "
            "from watchdog_daemon.cli import main; check.import_dependencies(); "
            "privdrop.become('nobody'); "
            f"sys.exit(main(['check', '--agent-ini', {str(ini)!r}, '--as-user', 'root']))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == ExitCode.PERMISSION_DENIED, done.stdout + done.stderr
    assert "only root can run the check as 'root'" in done.stderr


def test_become_leaves_no_way_back() -> None:
    code = ("import os; from watchdog_daemon.system.privdrop import become; become('nobody'); "
            "print(os.getresuid(), os.getresgid(), sorted(os.getgroups()))\n"
            "try:\n    os.setuid(0)\nexcept PermissionError:\n    print('no way back')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    uid, gid = NOBODY.pw_uid, NOBODY.pw_gid
    groups = sorted(os.getgrouplist("nobody", gid))
    assert done.stdout.splitlines() == [f"({uid}, {uid}, {uid}) ({gid}, {gid}, {gid}) {groups}",
                                        "no way back"]
