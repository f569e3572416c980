"""Switching an agent host's Slurm-web release: what the testbed sends to the host (the package
of that release on stdin, the install script), `up` putting the default back, and the CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.testbed import __main__ as cli
from tests.testbed import slurmweb_pkg
from tests.testbed import testbed as testbed_mod
from tests.testbed.errors import TestbedError
from tests.testbed.pytest_support import RunningTopology
from tests.unit.testbed_support import fake_testbed

SOURCE = testbed_mod.STANDIN_SOURCE.read_text()


class _FakeHosts:
    """SSH to running hosts: records each call, answers as the install script would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bytes | None]] = []
        self.installed: dict[str, str] = {}  # address -> digest
        self.fail = False

    def ssh(self, key, address, command, *, input=None, timeout=None, capture=True, user="root"):
        self.calls.append((address, command, input))
        if self.fail:
            return subprocess.CompletedProcess(["ssh"], 1, b"", b"dpkg: error")
        if command.startswith("dpkg-query"):
            out = b"5.2.0-1standin" if address in self.installed else b""
            return subprocess.CompletedProcess(["ssh"], 0 if out else 1, out, b"")
        if "dpkg -i" not in command:
            return subprocess.CompletedProcess(["ssh"], 0, b"", b"")
        want = command.split("want=", 1)[1].split("\n", 1)[0]
        state = "unchanged" if self.installed.get(address) == want else "installed"
        self.installed[address] = want
        release = next(r for r in ("5.2", "6.0")
                       if slurmweb_pkg.package_digest(r, SOURCE) == want)
        out = f"{slurmweb_pkg.package_version(release)}\n{state}\n".encode()
        return subprocess.CompletedProcess(["ssh"], 0, out, b"")


@pytest.fixture
def tb(tmp_path, monkeypatch):
    return fake_testbed(tmp_path, monkeypatch, _FakeHosts(), "fleet")


def test_switching_sends_the_releases_package_and_its_install_script(tb):
    assert tb.set_slurmweb("beta-rest", "5.2") == "5.2.0-1standin"
    address, command, deb = tb.fake.calls[-1]
    assert address == "10.213.47.43"
    assert command == slurmweb_pkg.install_script("5.2", SOURCE)
    assert deb == slurmweb_pkg.build_deb("5.2", SOURCE)
    assert tb.set_slurmweb("beta-rest", "default") == "6.0.0-1standin"  # topologies.toml's
    assert tb.fake.calls[-1][2] == slurmweb_pkg.build_deb("6.0", SOURCE)
    assert tb.set_slurmweb("alpha1", "default") == "5.2.0-1standin"


def test_switching_needs_a_running_agent_host_and_says_when_dpkg_fails(tb):
    with pytest.raises(TestbedError, match="beta-db has no Slurm-web agent"):
        tb.set_slurmweb("beta-db", "5.2")
    with pytest.raises(TestbedError, match="host hpc1 is not up"):
        tb.set_slurmweb("hpc1", "5.2")
    with pytest.raises(TestbedError, match=r"unknown Slurm-web release '4\.2'"):
        tb.set_slurmweb("beta-rest", "4.2")
    tb.fake.fail = True
    with pytest.raises(TestbedError, match=r"beta-rest: installing the Slurm-web 5.2 stand-in "
                                           r"package failed \(exit 1\):\ndpkg: error"):
        tb.set_slurmweb("beta-rest", "5.2")


def _up_without_machine(tb, monkeypatch, booted: list[str]) -> None:
    """`up fleet` with everything but the agent hosts' packages stubbed out."""
    noop = lambda *a, **kw: None  # noqa: E731
    for obj, names in [
        (testbed_mod.machine, ("check_root", "check_tools", "check_disk", "ensure_bridge")),
        (testbed_mod.basecache, ("ensure_base", "spec_for")),
        (testbed_mod.provision, ("settle_host", "cluster_ready")),
        (tb, ("_refuse_foreign_hosts", "_wait_ssh_or_reboot", "_set_up_accounts",
              "_wait_logins", "_write_inventories")),
    ]:
        for name in names:
            monkeypatch.setattr(obj, name, noop)
    monkeypatch.setattr(testbed_mod.basecache, "is_complete", lambda path: True)
    monkeypatch.setattr(testbed_mod.basecache, "base_dir", lambda cache, spec: Path("/base"))
    monkeypatch.setattr(testbed_mod, "ensure_keypair", lambda state: tb.key_path)
    monkeypatch.setattr(tb, "_start_hosts",
                        lambda bases, key, hosts: [h for h in hosts if h.name in booted])
    tb.up(["fleet"])


def test_up_gives_reused_agent_hosts_their_topologys_release_back(tb, monkeypatch):
    tb.set_slurmweb("alpha1", "6.0")  # a test switched it
    tb.fake.calls.clear()
    _up_without_machine(tb, monkeypatch, booted=["gamma1"])
    sent = {address: deb for address, command, deb in tb.fake.calls if "dpkg -i" in command}
    # alpha1 and beta-rest were reused; gamma1 got its package before it booted.
    assert sent == {"10.213.47.31": slurmweb_pkg.build_deb("5.2", SOURCE),
                    "10.213.47.43": slurmweb_pkg.build_deb("6.0", SOURCE)}
    assert tb.fake.installed["10.213.47.31"] == slurmweb_pkg.package_digest("5.2", SOURCE)
    # Run again: the same packages are there, nothing is reinstalled nor restarted.
    agents = [h for h in tb.catalog.topology("fleet").hosts if h.is_agent_host]
    again = {h.name: tb._install_slurmweb(tb.key_path, h, h.slurmweb)[1] for h in agents}
    assert again == {"alpha1": False, "beta-rest": False, "gamma1": True}


def test_a_new_host_gets_its_package_before_its_units_are_enabled(tb, monkeypatch):
    order: list[str] = []
    machine = testbed_mod.machine
    monkeypatch.setattr(machine, "mount_overlay", lambda base, dirs: None)
    monkeypatch.setattr(machine, "write_files", lambda root, files: order.append("files"))
    monkeypatch.setattr(machine, "enable_units", lambda root, units: order.append("enable"))
    monkeypatch.setattr(machine, "boot", lambda *a, **kw: order.append("boot"))
    monkeypatch.setattr(testbed_mod.slurmweb_pkg, "install_offline",
                        lambda root, release, source: order.append(f"package {release}"))
    key = tb.key_path
    key.with_suffix(".pub").write_text("ssh-ed25519 AAA x")
    for name in ("alpha1", "beta-db"):
        host = tb.catalog.host(name)
        tb._create_host(Path("/base"), key, host, tb.dirs(host))
    assert order == ["files", "package 5.2", "enable", "boot", "files", "enable", "boot"]


def test_install_offline_runs_the_hosts_own_dpkg_in_a_chroot(tmp_path, monkeypatch):
    ran = []

    def run(cmd, **kw):
        deb = tmp_path / cmd[-1].lstrip("/")
        ran.append((cmd, deb.read_bytes()))

    monkeypatch.setattr(slurmweb_pkg, "run", run)
    (tmp_path / "tmp").mkdir()
    slurmweb_pkg.install_offline(tmp_path, "5.2", SOURCE)
    (cmd, deb), = ran
    assert cmd == ["chroot", str(tmp_path), "dpkg", "-i", "/tmp/slurm-web-agent-standin.deb"]
    assert deb == slurmweb_pkg.build_deb("5.2", SOURCE)
    assert list((tmp_path / "tmp").iterdir()) == []  # the .deb does not stay in the host


def test_slurmweb_command_line(tb, monkeypatch, capsys):
    monkeypatch.setattr(cli, "Testbed", lambda: tb)
    assert cli.main(["slurmweb", "beta-rest"]) == 0
    assert capsys.readouterr().out == "beta-rest not installed\n"
    assert cli.main(["slurmweb", "beta-rest", "5.2"]) == 0
    assert capsys.readouterr().out == "beta-rest 5.2.0-1standin\n"
    assert cli.main(["slurmweb", "beta-rest"]) == 0  # what dpkg-query answers there
    assert capsys.readouterr().out == "beta-rest 5.2.0-1standin\n"
    assert cli.main(["slurmweb", "beta-db", "5.2"]) == 1
    assert "beta-db has no Slurm-web agent" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["slurmweb", "beta-rest", "4.2"])


def test_a_test_switches_a_release_for_a_block_only(tb):
    topo = RunningTopology(tb.catalog.topology("fleet"), tb.inventory_path("fleet"), tb)
    with topo.slurmweb_release("beta-rest", "5.2") as version:
        assert version == "5.2.0-1standin"
    assert tb.fake.calls[-1][2] == slurmweb_pkg.build_deb("6.0", SOURCE)
    with pytest.raises(RuntimeError), topo.slurmweb_release("gamma1", "5.2"):
        raise RuntimeError
    assert tb.fake.calls[-1][2] == slurmweb_pkg.build_deb("6.0", SOURCE)
    with pytest.raises(TestbedError):
        topo.set_slurmweb("hpc1", "5.2")  # not a host of this topology
