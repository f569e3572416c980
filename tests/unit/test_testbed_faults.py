"""Bad input and faults give a message that says what to do (no machine changes needed)."""

from __future__ import annotations

import os
from collections import namedtuple
from pathlib import Path

import pytest

from tests.testbed import machine
from tests.testbed import testbed as testbed_mod
from tests.testbed.errors import TestbedError
from tests.testbed.topology import load_catalog


def test_not_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(TestbedError, match=r"must run as root.*sudo"):
        machine.check_root()


@pytest.mark.parametrize(("absent", "package"), [
    ("systemd-nspawn", "systemd-container"),
    ("debootstrap", "debootstrap"),
])
def test_missing_tool_names_its_package_and_the_setup_script(monkeypatch, absent, package):
    real = machine.shutil.which
    monkeypatch.setattr(machine.shutil, "which", lambda t: None if t == absent else real(t) or t)
    with pytest.raises(TestbedError, match=f"{absent} \\(Debian package {package}\\).*setup-host"):
        machine.check_tools(building=True)


def test_debootstrap_only_needed_to_build(monkeypatch):
    monkeypatch.setattr(machine.shutil, "which",
                        lambda t: None if t == "debootstrap" else f"/usr/bin/{t}")
    machine.check_tools(building=False)


def test_no_disk_space_says_where_and_how_much(monkeypatch, tmp_path):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(machine.shutil, "disk_usage", lambda p: usage(10, 9, 100 * 1024**2))
    with pytest.raises(TestbedError, match=r"only 0\.1 GiB free.*needs 4 GiB.*SRA_TESTBED_CACHE"):
        machine.check_disk(tmp_path / "not" / "yet", building=True)


def test_silent_host_names_itself_and_its_console_log(monkeypatch, tmp_path):
    # split-db stays silent through its second boot too; the others answer.
    monkeypatch.setattr(testbed_mod, "wait_ssh",
                        lambda key, address, deadline: address != "10.213.47.22")
    tb = testbed_mod.Testbed(load_catalog(), cache=tmp_path, state_dir=tmp_path / "state")
    rebooted = []
    monkeypatch.setattr(tb, "_destroy", lambda hosts: None)
    monkeypatch.setattr(tb, "_start_hosts",
                        lambda base, key, hosts: rebooted.extend(h.name for h in hosts))
    log = tmp_path / "hosts/split-db/console.log"
    log.parent.mkdir(parents=True)
    log.write_text("boot messages")
    hosts = tb.catalog.topology("split").hosts
    with pytest.raises(TestbedError) as err:
        tb._wait_ssh_or_reboot(Path("/base"), Path("/k"), hosts)
    assert rebooted == ["split-db"]  # booted once more, alone, before giving up
    assert (tmp_path / "silent-split-db-console.log").read_text() == "boot messages"
    message = str(err.value)
    assert "never answered SSH" in message
    assert "split-db (10.213.47.22)" in message
    assert str(tmp_path / "hosts/split-db/console.log") in message
    assert "python -m tests.testbed down" in message


def test_cache_dir_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SRA_TESTBED_CACHE", str(tmp_path))
    assert testbed_mod.cache_dir() == tmp_path
    monkeypatch.delenv("SRA_TESTBED_CACHE")
    assert testbed_mod.cache_dir() == Path("/var/cache/slurmrestd-access-testbed")


def test_ssh_to_an_unknown_host_lists_the_known_ones(tmp_path):
    tb = testbed_mod.Testbed(load_catalog(), cache=tmp_path, state_dir=tmp_path)
    with pytest.raises(TestbedError, match=r"unknown host 'nope'.*hpc1"):
        tb.ssh("nope", "true")


class _Failed(Exception):
    pass


def _fail(message):
    raise _Failed(message)


class _BrokenTestbed:
    downs = 0

    def up(self, names, fresh=False):
        raise TestbedError("the testbed must run as root")

    def down(self, names=None):
        self.downs += 1
        self.down_names = names


def test_fixture_fails_never_skips_when_the_testbed_cannot_come_up(monkeypatch):
    from tests.testbed.pytest_support import TestbedFactory

    monkeypatch.setenv("CI", "true")
    broken = _BrokenTestbed()
    factory = TestbedFactory(broken, _fail)
    with pytest.raises(_Failed, match=r"'single' could not come up \(CI=true.*must run as root"):
        factory.up("single")
    with pytest.raises(_Failed):  # remembered: no second slow attempt
        factory.up("single")
    factory.close()
    assert broken.downs == 1  # whatever half exists is cleaned up
    assert broken.down_names == ["single"]
