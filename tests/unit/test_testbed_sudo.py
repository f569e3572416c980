"""The testbed's unprivileged accounts: sudo rules, admin's password file, the -sudo inventories,
and switching a host's rule (the hosts themselves are faked: no machine changes)."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.testbed import __main__ as cli
from tests.testbed import accounts, basecache, hostconfig
from tests.testbed import testbed as testbed_mod
from tests.testbed.errors import TestbedError
from tests.testbed.inventory import password_hosts, render_inventory, render_sudo_inventory
from tests.testbed.topology import load_catalog
from tests.unit.testbed_support import fake_testbed

KEY = Path("/abs/.testbed/id_ed25519")


def _exec(text: str) -> dict:
    names: dict = {}
    exec(compile(text, "<inventory>", "exec"), names)
    return names


# --- sudo rules ---------------------------------------------------------------------------


def test_each_rule_is_admin_only_never_caches_and_needs_no_tty():
    nopasswd = accounts.sudoers("nopasswd").splitlines()
    password = accounts.sudoers("password").splitlines()
    assert "admin ALL=(ALL) NOPASSWD: ALL" in nopasswd
    assert "admin ALL=(ALL) ALL" in password
    assert not any("NOPASSWD" in line for line in password)
    for lines in (nopasswd, password):
        assert "Defaults:admin timestamp_timeout=0" in lines
        assert "Defaults:admin !requiretty" in lines
        rules = [line for line in lines if line and not line.startswith(("#", "Defaults"))]
        assert len(rules) == 1 and rules[0].startswith("admin ")  # nothing for nosudo
        assert not [line for line in lines if line.startswith("Defaults") and ":admin" not in line]


def test_the_rule_names_its_mode_and_a_bad_mode_is_refused():
    for mode in accounts.SUDO_MODES:
        assert accounts.mode_of(accounts.sudoers(mode)) == mode
    assert accounts.mode_of("root ALL=(ALL) ALL\n") is None
    assert accounts.mode_of("") is None
    with pytest.raises(TestbedError, match="sudo mode must be one of nopasswd, password"):
        accounts.sudoers("NOPASSWD")


def test_the_rule_is_checked_by_visudo_before_it_replaces_the_old_one():
    script = accounts.apply_script("password", set_password=False)
    check = script.index("visudo -cqf /etc/sudoers.d/.testbed-admin.tmp")
    move = script.index("mv -f /etc/sudoers.d/.testbed-admin.tmp /etc/sudoers.d/testbed-admin")
    assert check < move
    assert "chmod 0440" in script
    # sudo ignores files in sudoers.d whose name has a dot: the temporary file never counts.
    assert "." in Path("/etc/sudoers.d/.testbed-admin.tmp").name
    assert "." not in Path(accounts.SUDOERS_PATH).name
    assert "chpasswd" not in script


def test_the_password_goes_through_chpasswd_on_stdin():
    script = accounts.apply_script("nopasswd", set_password=True)
    assert script.rstrip().splitlines()[-1] == "chpasswd"
    assert accounts.chpasswd_input("s3cret-_x") == b"admin:s3cret-_x\n"


# --- admin's password file ----------------------------------------------------------------


def test_password_file_is_created_root_only_and_kept(tmp_path):
    path = tmp_path / "state" / accounts.PASSWORD_FILE_NAME
    password, created = accounts.ensure_password_file(path)
    assert created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == password + "\n"
    assert len(password) >= 20 and ":" not in password
    again, created_again = accounts.ensure_password_file(path)
    assert (again, created_again) == (password, False)
    assert accounts.read_password(path) == password
    other, _ = accounts.ensure_password_file(tmp_path / "elsewhere")
    assert other != password  # random, not a constant


def test_a_password_file_others_can_read_is_refused(tmp_path):
    path = tmp_path / accounts.PASSWORD_FILE_NAME
    accounts.ensure_password_file(path)
    path.chmod(0o640)
    with pytest.raises(TestbedError, match=r"readable by others \(mode 0640\).*remove it"):
        accounts.ensure_password_file(path)


def test_an_unusable_password_file_is_refused(tmp_path):
    path = tmp_path / accounts.PASSWORD_FILE_NAME
    path.write_text("a:b\n")
    path.chmod(0o600)
    with pytest.raises(TestbedError, match="does not hold a usable password"):
        accounts.read_password(path)


# --- topologies ---------------------------------------------------------------------------


def test_split_and_beta_mix_both_rules_and_the_rest_default_to_nopasswd():
    cat = load_catalog()
    modes = {h.name: h.sudo for h in cat.all_hosts}
    assert {modes[h] for h in ("split-ctl", "split-db", "split-rest")} == {"password", "nopasswd"}
    assert {modes[h] for h in ("beta-ctl", "beta-db", "beta-rest")} == {"password", "nopasswd"}
    assert modes["split-ctl"] == "password" and modes["split-db"] == "nopasswd"
    assert modes["beta-db"] == "password"
    assert modes["hpc1"] == modes["alpha1"] == modes["bullseye1"] == "nopasswd"


# --- the base and the host files ----------------------------------------------------------


def test_every_host_lets_admin_and_nosudo_in_with_the_testbed_key():
    cat = load_catalog()
    host = cat.topology("split").host("split-db")
    files = {f.path: f for f in hostconfig.host_files(cat, host, b"k", "ssh-ed25519 AAA x\n",
                                                       "0" * 32)}
    for user in ("admin", "nosudo"):
        f = files[f"/home/{user}/.ssh/authorized_keys"]
        assert (f.content, f.mode, f.owner, f.group) == ("ssh-ed25519 AAA x\n", 0o600, user, user)
    assert files["/root/.ssh/authorized_keys"].content == "ssh-ed25519 AAA x\n"


def test_the_base_creates_both_accounts_with_a_private_ssh_dir(monkeypatch):
    ran = []
    monkeypatch.setattr(basecache, "run", lambda cmd, **kw: ran.append(cmd))
    basecache._create_accounts(Path("/b"))
    for user in ("admin", "nosudo"):
        assert ["chroot", "/b", "useradd", "--create-home", "--user-group", "--shell",
                "/bin/bash", user] in ran
        assert ["chroot", "/b", "install", "-d", "-m", "700", "-o", user, "-g", user,
                f"/home/{user}/.ssh"] in ran
    assert basecache.RECIPE >= 2  # bases built before the accounts are rebuilt


# --- the -sudo inventories ----------------------------------------------------------------


def _password_file(tmp_path: Path, password: str = "pw-from-the-file") -> Path:
    path = tmp_path / accounts.PASSWORD_FILE_NAME
    path.write_text(password + "\n")
    path.chmod(0o600)
    return path


def test_sudo_inventory_is_the_root_one_as_admin_with_sudo(tmp_path):
    split = [load_catalog().topology("split")]
    pw_file = _password_file(tmp_path)
    text = render_sudo_inventory(split, KEY, pw_file, password_hosts(split, {}))
    root = _exec(render_inventory(split, KEY))
    sudo = _exec(text)
    for group in ("split", "slurmctld", "slurmdbd", "slurmrestd", "compute"):
        assert [_name(e) for e in sudo[group]] == [_name(e) for e in root[group]]
    for (name, data), (_, root_data) in zip(sudo["split"], root["split"], strict=True):
        expected = {**root_data, "ssh_user": "admin", "_sudo": True}
        if name in ("split-ctl", "split-rest"):  # their rule asks for a password
            expected["_sudo_password"] = "pw-from-the-file"
        assert data == expected, name
    assert "pw-from-the-file" not in text
    assert str(pw_file) in text


def _name(entry):
    return entry[0] if isinstance(entry, tuple) else entry


def test_sudo_inventory_without_password_hosts_reads_no_file(tmp_path):
    single = [load_catalog().topology("single")]
    text = render_sudo_inventory(single, KEY, tmp_path / "absent", password_hosts(single, {}))
    (_, data), = _exec(text)["hpc"]
    assert data["_sudo"] is True and "_sudo_password" not in data
    assert "absent" not in text


def test_password_hosts_follow_switched_rules():
    split = [load_catalog().topology("split")]
    assert password_hosts(split, {}) == ["split-ctl", "split-rest"]
    assert password_hosts(split, {"split-db": "password", "split-ctl": "nopasswd"}) == [
        "split-db", "split-rest"]


def test_sudo_inventory_says_what_to_do_when_the_password_file_is_unreadable(tmp_path):
    split = [load_catalog().topology("split")]
    text = render_sudo_inventory(split, KEY, tmp_path / "gone", ["split-ctl"])
    with pytest.raises(SystemExit, match=r"cannot read the sudo password from .*gone.*as root"):
        _exec(text)


# Loaded by pyinfra itself, in a child process (see test_testbed_inventory.py for why).
_LOAD_WITH_PYINFRA = """
import json, sys
from pyinfra.api import State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory_from_files
with ctx_state.use(State()):
    inventory = make_inventory_from_files(sys.argv[1])
print(json.dumps({
    h.name: [h.data.ssh_user, h.data.get("_sudo"), h.data.get("_sudo_password")]
    for h in inventory
} | {"groups": sorted(g for g in inventory.groups)}))
"""


def test_pyinfra_reads_the_password_at_load_time(tmp_path):
    split = [load_catalog().topology("split")]
    path = tmp_path / "split-sudo.py"
    path.write_text(render_sudo_inventory(split, KEY, _password_file(tmp_path, "pw-1"),
                                          ["split-rest"]))
    done = subprocess.run([sys.executable, "-c", _LOAD_WITH_PYINFRA, str(path)],
                          capture_output=True, text=True, check=True)
    loaded = json.loads(done.stdout)
    assert loaded["split-rest"] == ["admin", True, "pw-1"]
    assert loaded["split-ctl"] == ["admin", True, None]
    assert loaded["split-db"] == ["admin", True, None]
    # The password function is not taken for a group (pyinfra adds one named after the file).
    assert loaded["groups"] == ["compute", "slurmctld", "slurmdbd", "slurmrestd", "split",
                                "split-sudo"]


# --- Testbed: up sets password and rules, switching follows into the inventory ----------------


class _FakeHosts:
    """Stands in for SSH to running hosts: records what each host was sent."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bytes | None]] = []

    def ssh(self, key, address, command, *, input=None, timeout=None, capture=True, user="root"):
        assert user == "root"
        self.calls.append((address, command, input))
        out = b""
        if command.startswith("cat "):
            out = accounts.sudoers("password").encode()
        return subprocess.CompletedProcess(["ssh"], 0, out, b"")


@pytest.fixture
def tb(tmp_path, monkeypatch):
    return fake_testbed(tmp_path, monkeypatch, _FakeHosts(), "split")


def test_up_sets_the_password_by_stdin_only_and_each_host_default_rule(tb):
    split = tb.catalog.topology("split").hosts
    tb._set_up_accounts(tb.key_path, split)
    password = tb.sudo_password()
    assert stat.S_IMODE(tb.sudo_password_path.stat().st_mode) == 0o600
    by_address = {a: (c, i) for a, c, i in tb.fake.calls}
    for host in split:
        command, stdin = by_address[host.address]
        assert password not in command
        assert stdin == f"admin:{password}\n".encode()
        assert shlex.quote(accounts.sudoers(host.sudo)) in command
    assert len(tb.fake.calls) == 3


def test_switching_a_rule_rewrites_the_sudo_inventory_and_up_resets_it(tb):
    tb._set_up_accounts(tb.key_path, tb.catalog.topology("split").hosts)
    tb._write_inventories(tb.key_path)
    inventory = tb.sudo_inventory_path("split")

    def password_hosts_now():
        return sorted(n for n, d in _exec(inventory.read_text())["split"]
                      if "_sudo_password" in d)

    assert password_hosts_now() == ["split-ctl", "split-rest"]
    tb.fake.calls.clear()
    assert tb.set_sudo_mode("split-db", "password") == {"split-db": "password"}
    (address, command, stdin), = tb.fake.calls
    assert address == "10.213.47.22" and stdin is None and "chpasswd" not in command
    assert password_hosts_now() == ["split-ctl", "split-db", "split-rest"]
    assert tb.set_sudo_mode("split", "nopasswd") == dict.fromkeys(
        ("split-ctl", "split-db", "split-rest"), "nopasswd")
    assert password_hosts_now() == []
    # Also after another topology's `up` or `down` rewrites the inventories.
    tb._write_inventories(tb.key_path)
    assert password_hosts_now() == []
    assert tb.set_sudo_mode("split", "default") == {
        "split-ctl": "password", "split-db": "nopasswd", "split-rest": "password"}
    assert password_hosts_now() == ["split-ctl", "split-rest"]
    assert not tb._sudo_modes_path.exists()  # nothing switched any more
    tb.set_sudo_mode("split-rest", "nopasswd")
    assert json.loads(tb._sudo_modes_path.read_text()) == {"split-rest": "nopasswd"}
    tb._set_up_accounts(tb.key_path, tb.catalog.topology("split").hosts)
    tb._write_inventories(tb.key_path)
    assert password_hosts_now() == ["split-ctl", "split-rest"]


def test_a_new_password_reaches_every_running_host_not_only_those_brought_up(tb, monkeypatch):
    split = tb.catalog.topology("split")
    monkeypatch.setattr(tb, "running_topologies", lambda: [split])
    tb._set_up_accounts(tb.key_path, [split.host("split-db")])
    assert sorted(a for a, _, _ in tb.fake.calls) == ["10.213.47.21", "10.213.47.22",
                                                      "10.213.47.23"]
    tb.fake.calls.clear()
    tb._set_up_accounts(tb.key_path, [split.host("split-db")])  # password kept: only split-db
    assert [a for a, _, _ in tb.fake.calls] == ["10.213.47.22"]


def test_switching_needs_running_hosts_and_a_known_target(tb):
    with pytest.raises(TestbedError, match=r"host hpc1 is not up: `python -m tests.testbed up "
                                           r"single`"):
        tb.set_sudo_mode("single", "password")
    with pytest.raises(TestbedError, match="'nope' is neither a topology"):
        tb.set_sudo_mode("nope", "password")
    with pytest.raises(TestbedError, match="sudo mode must be one of"):
        tb.set_sudo_mode("split", "sometimes")
    assert tb.fake.calls == []


def test_a_test_variant_inventory_for_nosudo_or_without_passwords(tb, tmp_path):
    path = tb.write_sudo_inventory("split", tmp_path / "v.py", user="nosudo", password_hosts=[])
    hosts = dict(_exec(path.read_text())["split"])
    assert {d["ssh_user"] for d in hosts.values()} == {"nosudo"}
    assert not [d for d in hosts.values() if "_sudo_password" in d]


def test_sudo_mode_command_line(tb, monkeypatch, capsys):
    monkeypatch.setattr(cli, "Testbed", lambda: tb)
    assert cli.main(["sudo-mode", "split", "password"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["split-ctl password", "split-db password", "split-rest password"]
    assert cli.main(["sudo-mode", "split-db"]) == 0  # shows the rule as the host has it
    assert capsys.readouterr().out == "split-db password\n"
    assert cli.main(["sudo-mode", "single", "default"]) == 1
    assert "hpc1 is not up" in capsys.readouterr().err


def test_ssh_command_line_logs_in_as_the_user_asked(tb, monkeypatch):
    seen = []
    monkeypatch.setattr(cli, "Testbed", lambda: tb)
    monkeypatch.setattr(testbed_mod, "ssh", lambda key, address, command, **kw: seen.append(
        (address, command, kw["user"])) or subprocess.CompletedProcess([], 3))
    assert cli.main(["ssh", "--user", "admin", "split-db", "--", "sudo", "-n", "true"]) == 3
    assert cli.main(["ssh", "split-db", "--", "id"]) == 3
    assert seen == [("10.213.47.22", "sudo -n true", "admin"), ("10.213.47.22", "id", "root")]


def test_down_forgets_switched_rules_and_removes_the_sudo_inventories(tb, monkeypatch):
    tb._set_up_accounts(tb.key_path, tb.catalog.topology("split").hosts)
    tb._write_inventories(tb.key_path)
    tb.set_sudo_mode("split-db", "password")
    monkeypatch.setattr(testbed_mod.machine, "nspawn_pids_below", lambda *a: {})
    monkeypatch.setattr(testbed_mod.machine, "remove_bridge", lambda net: None)
    monkeypatch.setattr(testbed_mod.machine, "destroy_host", lambda dirs: None)
    monkeypatch.setattr(testbed_mod, "mounts_below", lambda d: [])
    tb._down_all()
    assert not tb.sudo_inventory_path("split").exists()
    assert not tb._sudo_modes_path.exists()
    assert tb.sudo_password_path.exists()  # kept, like the SSH key
    assert os.stat(tb.sudo_password_path).st_mode & 0o077 == 0
