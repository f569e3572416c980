"""End-to-end over sudo: the testbed's unprivileged `admin` logs in and becomes root with sudo,
with and without a password, on `split` and on the fleet's cluster `beta`.

Each site goes through a first deploy, a no-change re-run, a key rotation, the fleet report
and a staged rollout, while samplers on every host (argv, /tmp, /var/tmp) and on the
workstation (argv) keep what they see; afterwards every form of every key of the run is
looked for there, in the journals and in pyinfra's output at `-vvv --debug`. A user without
sudo rights is stopped on the first step with nothing changed.
"""

from __future__ import annotations

import base64
import os
import pty
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e import hostcheck
from tests.e2e.pyinfra_run import ROOT, DeployRun, run_deploy
from tests.e2e.secrethunt import Hunt, key_forms

pytestmark = pytest.mark.e2e

DEPLOY = "deploys/slurmrestd_access.py"
ROTATE = "deploys/rotate_key.py"
KEY = "/var/spool/slurm/jwt_hs256.key"
COPY = "/var/lib/slurm-web/slurmrestd.key"
FULL_VERBOSITY = ("-vvv", "--debug")


@dataclass
class Site:
    topo: object
    cluster: str
    hosts: list[str]
    limit: list[str]
    hunt: Hunt
    outputs: list[str] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)

    @property
    def ctl(self) -> str:
        return next(h.name for h in self.topo.hosts
                    if h.cluster == self.cluster and "slurmctld" in h.roles)

    @property
    def rest(self) -> str:
        return next(h.name for h in self.topo.hosts
                    if h.cluster == self.cluster and "slurmrestd" in h.roles)

    def remember_key(self) -> bytes:
        """The cluster's key as it is now, read by the test itself (root SSH), for the hunt."""
        out = self.topo.ssh(self.ctl, f"base64 -w0 < {KEY}").stdout
        key = base64.b64decode(out.strip())
        assert len(key) >= 32
        if key not in self.keys:
            self.keys.append(key)
        return key

    def run(self, *args: str, inventory: Path | None = None, deploy: str = DEPLOY,
            **kwargs) -> DeployRun:
        done = run_deploy(inventory or self.topo.sudo_inventory_path, deploy, *self.limit,
                          *args, **kwargs)
        self.outputs.append(done.output)
        return done

    def module(self, module: str, *args: str, inventory: Path | None = None,
               stdin: bytes | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", module, str(inventory or self.topo.sudo_inventory_path),
             *args], cwd=ROOT, capture_output=True, input=stdin, timeout=900, check=False,
            start_new_session=True)  # no terminal: a password prompt would read stdin
        out = (done.stdout + done.stderr).decode(errors="replace")
        self.outputs.append(out)
        return subprocess.CompletedProcess(done.args, done.returncode, out, "")


def summary(run: DeployRun) -> dict[str, str]:
    part = run.output.split("--> Per-cluster summary:")[1]
    return dict(re.findall(r"^    (\S+): (\w+)", part, re.M))


@pytest.fixture(scope="module", params=["split", "fleet"])
def site(request, testbed):
    topo = testbed.up(request.param, fresh=True)
    cluster = "split" if request.param == "split" else "beta"
    hosts = [h.name for h in topo.hosts if h.cluster == cluster]
    limit = [] if request.param == "split" else ["--limit", cluster]
    s = Site(topo, cluster, hosts, limit, Hunt(topo, [h.name for h in topo.hosts]))
    modes = {h.name: h.sudo for h in topo.hosts if h.cluster == cluster}
    # Both flavours in every run: at least one host asks for a password, one does not.
    assert set(modes.values()) == {"nopasswd", "password"}, modes
    s.hunt.start()
    return s


def test_every_account_logs_in_on_every_host_right_after_up(site):
    """`up` returned: root, admin and nosudo each log in on every host of the topology (issue
    18: beta-rest refused admin and nosudo right after the fleet was booted)."""
    for host in site.topo.hosts:
        for user in ("root", "admin", "nosudo"):
            res = site.topo.ssh(host.name, "id -un; test ! -e /run/nologin", user=user,
                                check=False)
            assert (res.returncode, res.stdout.strip()) == (0, user), \
                f"{user}@{host.name}: exit {res.returncode}: {res.stderr.strip()}"


def test_a_user_without_sudo_rights_is_stopped_on_the_first_step(site, tmp_path):
    inventory = tmp_path / "nosudo.py"
    site.topo.write_sudo_inventory(inventory, user="nosudo", password_hosts=[])
    before = hostcheck.snapshot(site.topo, site.hosts)
    done = site.run(inventory=inventory)
    assert done.returncode != 0, done.output[-4000:]
    for host in site.hosts:
        assert f"sudo on {host} asks nosudo for a password and none was given" in done.output, \
            done.output[-4000:]
    assert f"{site.cluster}: failed" in done.output.split("--> Per-cluster summary:")[1]
    assert "Traceback" not in done.output
    assert hostcheck.snapshot(site.topo, site.hosts) == before


def test_the_first_deploy_over_sudo(site):
    reloads = hostcheck.reload_counts(site.topo)
    done = site.run(*FULL_VERBOSITY)
    assert done.returncode == 0, done.output[-6000:]
    assert summary(done)[site.cluster] == "changed"
    site.remember_key()
    hostcheck.assert_systemd_settled(site.topo, reloads, most=1)
    assert hostcheck.agent_get(site.topo, site.rest, "/v6.0.0/jobs")[0] == 200
    check = site.topo.ssh(site.rest, "slurmrestd-access check --as-user slurm-web")
    assert "✅ connection successful" in check.stdout
    # The copy is the key, with the agent's owner and mode.
    copy = hostcheck.stat(site.topo, site.rest, COPY)
    assert (copy["owner"], copy["mode"]) == ("slurm-web", 0o400)
    assert copy["sha256"] == hostcheck.stat(site.topo, site.ctl, KEY)["sha256"]


def test_a_re_run_over_sudo_changes_nothing(site):
    before = hostcheck.snapshot(site.topo, site.hosts)
    dry = site.run("--dry", "-vvv")
    assert dry.returncode == 0, dry.output[-6000:]
    assert dry.planned_changes() == []
    # pyinfra's --debug-operations prints every operation it generated, then exits: its output
    # is hunted with the others.
    listed = site.run("--debug-operations")
    assert listed.returncode == 0 and "Install the slurmrestd-access host tool" in listed.output
    done = site.run()
    assert done.returncode == 0, done.output[-6000:]
    assert done.totals()["changed"] == 0
    assert hostcheck.snapshot(site.topo, site.hosts) == before


def test_a_rotation_over_sudo(site):
    old = site.remember_key()
    done = site.run(*FULL_VERBOSITY, deploy=ROTATE)
    assert done.returncode == 0, done.output[-6000:]
    new = site.remember_key()
    assert new != old
    new_sha = hostcheck.stat(site.topo, site.ctl, KEY)["sha256"]
    for h in site.topo.hosts:
        if h.cluster == site.cluster and "slurmdbd" in h.roles:
            assert hostcheck.stat(site.topo, h.name, KEY)["sha256"] == new_sha
    assert hostcheck.stat(site.topo, site.rest, COPY)["sha256"] == new_sha
    assert hostcheck.agent_view(site.topo, site.rest)["accepted"] is True


def test_the_report_over_sudo(site):
    done = site.module("slurmrestd_access.report", *site.limit)
    assert done.returncode == 0, done.stdout[-4000:]
    assert "no root" not in done.stdout


def test_a_staged_rollout_over_sudo(site):
    done = site.module("slurmrestd_access.rollout", "--canary", site.cluster)
    assert done.returncode == 0, done.stdout[-4000:]
    part = done.stdout.split("--> Rollout summary:")[1]
    assert f"{site.cluster}: unchanged" in part
    # On the fleet, the other clusters got their first deploy over sudo in the second stage.
    for other in {h.cluster for h in site.topo.hosts} - {site.cluster}:
        assert f"{other}: changed" in part


def test_sudo_on_the_command_line_with_one_password_for_all(site, tmp_path):
    """`--sudo --same-sudo-password`: an inventory without sudo data, every host asking."""
    inventory = tmp_path / "plain.py"
    site.topo.write_sudo_inventory(inventory, password_hosts=[])
    text = inventory.read_text()
    inventory.write_text(text.replace("'_sudo': True", "'_plain': True").replace(
        "'_plain': True, ", "").replace(", '_plain': True", ""))
    assert "_sudo" not in inventory.read_text()
    with site.topo.sudo_mode("password"):
        before = hostcheck.snapshot(site.topo, site.hosts)
        done = subprocess.run(
            [sys.executable, "-m", "pyinfra", "-y", str(inventory), DEPLOY, *site.limit,
             "--sudo", "--same-sudo-password"], cwd=ROOT, capture_output=True, timeout=900,
            input=(site.topo.sudo_password() + "\n").encode(), check=False,
            start_new_session=True)
        out = (done.stdout + done.stderr).decode(errors="replace")
        site.outputs.append(out)
        assert done.returncode == 0, out[-4000:]
        assert hostcheck.snapshot(site.topo, site.hosts) == before


def test_the_password_typed_at_pyinfras_prompt(site, tmp_path):
    """No password anywhere: pyinfra asks on its terminal, once per host, on the first step."""
    inventory = tmp_path / "prompt.py"
    site.topo.write_sudo_inventory(inventory, password_hosts=[])
    with site.topo.sudo_mode("password"):
        out = run_with_terminal(
            [sys.executable, "-m", "pyinfra", "-y", str(inventory), DEPLOY, *site.limit],
            site.topo.sudo_password(), answers=len(site.hosts))
        site.outputs.append(out.text)
        assert out.returncode == 0, out.text[-4000:]
        assert out.text.count("sudo password:") == len(site.hosts), out.text[-4000:]


def test_the_key_was_nowhere_to_be_seen(site):
    samples = site.hunt.collect()
    assert len(site.keys) >= 2  # the first deploy's key and the rotation's
    # The samplers saw the deploys (they could have found something).
    host_argv = b"\n".join(a for name, s in samples.items() if name != "workstation"
                           for a in s.argv)
    assert b"slurmrestd-access key install" in host_argv
    assert b"sudo -H" in host_argv
    assert any(b"pyinfra" in a for a in samples["workstation"].argv)
    for name, s in samples.items():
        assert s.hits(site.keys) == [], f"{name}: {s.hits(site.keys)}"
    debug_log = ROOT / "pyinfra-debug.log"  # written by pyinfra on an internal error
    if debug_log.exists():
        site.outputs.append(debug_log.read_text(errors="replace"))
    for output in site.outputs:
        for form in (f for k in site.keys for f in key_forms(k)):
            assert form.decode(errors="replace") not in output
    for h in site.topo.hosts:
        journal = site.topo.ssh(h.name, "journalctl --no-pager -o export -q", text=False).stdout
        assert journal
        for form in (f for k in site.keys for f in key_forms(k)):
            assert form not in journal, f"{h.name}: key in the journal"
        leftover = site.topo.ssh(h.name, "find /tmp /var/tmp -type f -size -1M -print0 | "
                                 "xargs -0r cat", text=False).stdout
        for form in (f for k in site.keys for f in key_forms(k)):
            assert form not in leftover, f"{h.name}: key in /tmp or /var/tmp"


@dataclass
class TerminalRun:
    returncode: int
    text: str


def run_with_terminal(argv: list[str], password: str, answers: int,
                      timeout: float = 900) -> TerminalRun:
    """Run a command on a new pseudo-terminal and answer each "sudo password:" prompt."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal is its controlling tty, stdin and stdout
        os.chdir(ROOT)
        os.environ.update(NO_COLOR="1", PYTHONUNBUFFERED="1")
        os.execv(argv[0], argv)
    text, answered, deadline = b"", 0, time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal: it has ended
            break
        if not chunk:
            break
        text += chunk
        while answered < answers and text.count(b"sudo password:") > answered:
            os.write(fd, password.encode() + b"\n")
            answered += 1
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return TerminalRun(os.waitstatus_to_exitcode(status),
                       re.sub(r"\x1b\[[0-9;]*m", "", text.decode(errors="replace")))
