"""The coordinated rotation of one cluster: steps, proof and rollback (fake hosts, no SSH)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from slurmrestd_access.cluster import ClusterPlan
from slurmrestd_access.fleet import rotation_plan as rp
from slurmrestd_access.fleet.rotation import Rotation, StepFailed, rotate_cluster
from slurmrestd_access.settings import Settings

KEY = b"k" * 32  # what `key export` on the controller answers: the new key
NEW_SHA = hashlib.sha256(KEY).hexdigest()
OLD_SHA = hashlib.sha256(b"o" * 32).hexdigest()


@dataclass
class Output:
    stdout_lines: list[str] = field(default_factory=list)
    stderr_lines: list[str] = field(default_factory=list)


class FakeHost:
    def __init__(self, name: str, world: World) -> None:
        self.name, self.world, self.connected = name, world, True
        # What pyinfra's argument lookup reads: host data, deploy kwargs, connector data.
        self.data = SimpleNamespace(**world.host_data.get(name, {}))
        self.current_deploy_kwargs = None
        self.connector_data: dict = {}

    def run_shell_command(self, command, print_output=False, _timeout=None, _stdin=None,
                          **privilege):
        text = command.get_raw_value()
        self.world.log.append((self.name, text))
        self.world.privileges.append((self.name, text, privilege))
        assert "kkkk" not in text and base64.b64encode(KEY).decode() not in text
        if " key install " in text and self.world.on_install:
            self.world.on_install(self.name)
        if self.name in self.world.dead:
            raise SSHException("SSH session not active")
        if any(re.search(pattern, text) for pattern in self.world.silent.get(self.name, ())):
            return False, Output()  # what pyinfra gives for a command cut off: no output
        return self.world.answer(self.name, text, _stdin)


class SSHException(Exception):
    """Stands in for paramiko's, raised once a host's connection is gone."""


class World:
    """Answers every remote command; `check_exit` scripts the check's exit codes."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []
        self.old_key_exit = 30
        self.new_key_exits: list[int] = []
        self.rotate_fails = False
        self.dead: set[str] = set()  # hosts whose connection is gone
        self.silent: dict[str, tuple[str, ...]] = {}  # host -> commands that end with no output
        self.on_install = None  # called at each `key install` (e.g. to kill a host)
        self.host_data: dict[str, dict] = {}  # host -> pyinfra host data (e.g. _sudo)
        self.privileges: list[tuple[str, str, dict]] = []  # privilege arguments of each command
        self.stdins: list[tuple[str, str, str | None]] = []  # (host, command, stdin)
        self.exported = KEY  # what the controller's key is when `key export` reads it

    def answer(self, host: str, text: str, stdin):
        mark = "__slurmrestd_access_exit="
        self.stdins.append((host, text, stdin))
        if " key export " in text:
            # The real tool refuses a key other than the one on stdin (tests/unit/test_key_cli).
            if stdin and hashlib.sha256(self.exported).hexdigest() != stdin.strip():
                body = {"error": "change_refused", "detail": "sha256_mismatch",
                        "message": "the key at /k has SHA-256 ..., not the expected", "hint": "h"}
                return False, Output([json.dumps(body)])
            return True, Output([base64.b64encode(self.exported).decode()])
        if " key rotate " in text:
            if self.rotate_fails:
                body = {"error": "key_unreadable", "message": "cannot write /var/spool/slurm"}
                return True, Output([json.dumps(body), f"{mark}12"])
            body = {"sha256": NEW_SHA, "previous_sha256": OLD_SHA}
            return True, Output([json.dumps(body), f"{mark}0"])
        if " check " in text:
            code = self.old_key_exit if "--key" in text else (
                self.new_key_exits.pop(0) if self.new_key_exits else 0)
            body = {"reason": "rejected_by_slurmctld" if code == 30 else "x", "message": "m"}
            return True, Output([json.dumps(body), f"{mark}{code}"])
        if " agent restart " in text:
            units = re.findall(r"--unit (\S+)", text)
            body = {"units": units, "restarted": units}
            return True, Output([json.dumps(body), f"{mark}0"])
        if " key fingerprint " in text:
            return True, Output([json.dumps({"sha256": OLD_SHA}), f"{mark}0"])
        if " key " in text:
            return True, Output(['{"changed": true}', f"{mark}0"])
        return True, Output()

    def commands(self, host: str | None = None, pattern: str = "") -> list[str]:
        return [t for h, t in self.log if (host is None or h == host) and re.search(pattern, t)]


class FakeInventory:
    def __init__(self, world: World) -> None:
        self.world, self.hosts = world, {}

    def get_host(self, name):
        return self.hosts.setdefault(name, FakeHost(name, self.world))


class FakeState:
    def __init__(self, world: World) -> None:
        from pyinfra.api import Config

        self.inventory = FakeInventory(world)
        self.config = Config()


def beta() -> tuple[Rotation, World]:
    plan = ClusterPlan("beta", controllers=["ctl"], dbd_hosts=["db"], rest_hosts=["rest"])
    world = World()
    rotation = Rotation(FakeState(world), rp.rotation_hosts(plan),
                        lambda name: Settings(cluster="beta", agent_unit="a.service"))
    return rotation, world


def test_hosts_of_a_split_and_a_single_host_cluster():
    split = rp.rotation_hosts(ClusterPlan("b", ["ctl"], ["db"], ["rest"], ["ctl"]))
    assert split.controller == "ctl" and split.other_key_hosts == ("db",)
    assert not split.agent_holds_key("rest")
    single = rp.rotation_hosts(ClusterPlan("a", ["h"], ["h"], ["h"], ["h"]))
    assert single.other_key_hosts == () and single.agent_holds_key("h")


def test_judging_the_proof():
    assert rp.judge_old_key(30, "rejected_by_slurmctld") is None
    assert "still accepted" in rp.judge_old_key(0, None)
    assert "still accepted by slurmctld" in rp.judge_old_key(31, "rejected_by_slurmdbd")
    assert "could not be shown" in rp.judge_old_key(32, "controller_unreachable")
    assert rp.judge_new_key(0, None, None, "now") is None
    assert "rejected_by_slurmdbd" in rp.judge_new_key(31, "rejected_by_slurmdbd", "m", "now")
    msg = rp.failure_message("beta", "why", [])
    assert msg.startswith("rotation of cluster beta failed: why; rolled back to the previous key")
    assert "BUT" in rp.failure_message("beta", "why", ["p"])


def test_a_successful_rotation_in_order():
    rotation, world = beta()
    rotation.rotate()
    # The new key travels by hash: the controller sends only the key `key rotate` reported,
    # and each install is checked against that SHA-256, given on stdin (never in argv).
    exports = [stdin for h, t, stdin in world.stdins if " key export " in t]
    assert exports == [NEW_SHA, NEW_SHA]
    for host in ("db", "rest"):
        (install,) = [stdin for h, t, stdin in world.stdins if h == host and " key install " in t]
        assert install.splitlines() == [base64.b64encode(KEY).decode(), NEW_SHA]
        assert NEW_SHA not in " ".join(world.commands(host, "key install"))
    steps = [h + ":" + t for h, t in world.log]
    first = next(i for i, s in enumerate(steps) if "key rotate" in s)
    keep_db = next(i for i, s in enumerate(steps) if s.startswith("db:") and "key sync" in s)
    install_db = next(i for i, s in enumerate(steps) if s.startswith("db:") and "key install" in s)
    dbd = next(i for i, s in enumerate(steps) if "restart slurmdbd" in s)
    ctld = next(i for i, s in enumerate(steps) if "restart slurmctld" in s)
    copy = next(i for i, s in enumerate(steps) if s.startswith("rest:") and "key install" in s)
    old_check = next(i for i, s in enumerate(steps) if "--key" in s)
    agent = next(i for i, s in enumerate(steps)
                 if "agent restart --timeout 60 --unit a.service" in s)
    assert first < keep_db < install_db < dbd < ctld < copy < old_check < agent, steps
    # The old-key proof signs with the agent's previous copy, kept on the agent host in root's
    # own directory (never beside the copy, in slurm-web's), and every kept key is root's.
    kept = "/var/lib/slurmrestd-access/previous/%2Fvar%2Flib%2Fslurm-web%2Fslurmrestd.key"
    assert f"--key {kept} " in world.commands("rest", "--key")[0]
    for host in ("ctl", "db", "rest"):
        (keep,) = world.commands(host, r"key (rotate|sync --source \S+ --dest /var/lib/slurmr)")
        assert "--private-dir" in keep and "/var/lib/slurmrestd-access/previous/" in keep
        assert ".previous" not in keep
    for host in ("db", "rest"):
        assert "--owner root --group root --mode 0600" in world.commands(host, "--private-dir")[0]
    # Proven: no host keeps the previous key (nor a .previous of an older version).
    for host, path in (("ctl", "/var/spool/slurm/jwt_hs256.key"),
                       ("db", "/var/spool/slurm/jwt_hs256.key"),
                       ("rest", "/var/lib/slurm-web/slurmrestd.key")):
        (forget,) = world.commands(host, "rm -f")
        assert rp.previous_path(path) in forget and f"{path}.previous" in forget
        assert steps.index(f"{host}:{forget}") > agent
    assert world.commands("rest", "runuser -u slurm-web -- .* check")  # as the agent


def test_every_command_of_the_rotation_runs_with_each_hosts_own_sudo_settings():
    """The rotation runs its commands itself (not as pyinfra operations), so pyinfra's sudo is
    not added for it: each host's own `_sudo` data must reach every command, the key's
    transfers through stdin included, and a host without `_sudo` gets none."""
    rotation, world = beta()
    world.host_data = {"ctl": {"_sudo": True}, "db": {"_sudo": True, "_sudo_password": "pw"},
                       "rest": {}}
    rotation.rotate()
    assert {h for h, _t, _p in world.privileges} == {"ctl", "db", "rest"}
    for name, text, privilege in world.privileges:
        assert privilege.get("_sudo") is (name != "rest"), (name, text)
        assert (privilege.get("_sudo_password") == "pw") is (name == "db"), (name, text)
    assert any("key install" in t and p.get("_sudo") for h, t, p in world.privileges
               if h == "db")
    assert any(" key export " in t and p.get("_sudo") for h, t, p in world.privileges
               if h == "ctl")


def test_the_rotation_takes_sudo_from_the_command_line_too():
    rotation, world = beta()
    rotation.state.config.SUDO = True  # what pyinfra's --sudo sets
    rotation.rotate()
    assert world.privileges and all(p.get("_sudo") for _h, _t, p in world.privileges)


def test_an_old_key_still_accepted_rolls_everything_back():
    rotation, world = beta()
    world.old_key_exit = 0
    with pytest.raises(StepFailed, match="still accepted"):
        rotation.rotate()
    start = len(world.log)
    problems = rotation.rollback()
    assert problems == []
    after = [h + ":" + t for h, t in world.log[start:]]
    restores = [s for s in after if "key sync --source /var/lib/slurmrestd-access/previous/" in s]
    assert {s.split(":")[0] for s in restores} == {"ctl", "db", "rest"}
    assert any("restart slurmdbd" in s for s in after)
    assert any("restart slurmctld" in s for s in after)
    assert any("agent restart --timeout 60 --unit a.service" in s for s in after)


class LoggingHost:
    """The controller's pyinfra host as rotate_cluster uses it: a name and a log."""

    name = "ctl"

    def __init__(self) -> None:
        self.lines: list[str] = []

    def log_styled(self, text, **kwargs) -> None:
        self.lines.append(text)


def test_a_failed_generation_restores_nothing():
    rotation, world = beta()
    world.rotate_fails = True
    host = LoggingHost()
    assert rotate_cluster(rotation.state, host, rotation.hosts, rotation.settings_of) is False
    assert world.commands("ctl", "key rotate")  # generation was tried, and failed
    # Nothing was kept by this run, so nothing is restored: an older *.previous never comes
    # back, no daemon is restarted.
    assert world.commands(None, r"previous/\S+ --dest") == []
    assert world.commands(None, "restart") == []
    assert "generating the new key on ctl: cannot write /var/spool/slurm; nothing was " \
           "changed" in host.lines[-1]


def test_a_lost_connection_during_the_install_names_the_host_and_the_step():
    rotation, world = beta()
    world.silent["db"] = ("key install",)
    with pytest.raises(StepFailed) as err:
        rotation.rotate()
    why = str(err.value)
    assert why.startswith("installing the new key on db: installing the key at "
                          "/var/spool/slurm/jwt_hs256.key on db failed: no answer from db")
    assert "failed: ;" not in why and not why.endswith(": ")


def test_a_tool_that_gives_no_answer_is_said_so():
    rotation, world = beta()
    world.silent["rest"] = ("key sync",)
    with pytest.raises(StepFailed, match=r"keeping the agent's previous copy on rest: no answer "
                                         r"from rest \(the connection was lost"):
        rotation.rotate()


def test_a_host_that_dies_mid_rotation_gets_a_rollback_report_saying_what_to_do():
    rotation, world = beta()
    # db goes down during its install: that command and every later one on db raise.
    world.on_install = lambda host: world.dead.add(host) if host == "db" else None
    host = LoggingHost()
    assert rotate_cluster(rotation.state, host, rotation.hosts, rotation.settings_of) is False
    message = host.lines[-1]
    assert message.startswith("rotation of cluster beta failed: installing the new key on db: "
                              "SSHException: SSH session not active; rolled back to the "
                              "previous key, BUT the rollback had problems: ")
    # Each problem names its step and host; never an empty reason.
    assert "restoring the previous key on db: SSHException: SSH session not active" in message
    assert "restart slurmdbd.service on db: SSHException: SSH session not active" in message
    assert ": ;" not in message and ": ," not in message
    # Which host holds which key, and what to run once db is back.
    assert f"ctl:/var/spool/slurm/jwt_hs256.key {OLD_SHA[:12]} (the previous key)" in message
    assert "db:/var/spool/slurm/jwt_hs256.key unknown (no answer, or missing)" in message
    assert f"rest:/var/lib/slurm-web/slurmrestd.key {OLD_SHA[:12]} (the previous key)" in message
    assert "once every host of beta answers again, run the deploy for it (pyinfra -y " \
           "INVENTORY slurmrestd_access.deploys.slurmrestd_access --limit beta)" in message


def test_a_generation_without_answer_rolls_nothing_back_and_says_what_to_do():
    rotation, world = beta()
    world.silent["ctl"] = ("key rotate",)  # the connection broke: done or not, unknown
    host = LoggingHost()
    assert rotate_cluster(rotation.state, host, rotation.hosts, rotation.settings_of) is False
    assert world.commands(None, r"previous/\S+ --dest") == []  # an older .previous stays put
    assert "generating the new key on ctl: no answer from ctl" in host.lines[-1]
    assert "may or may not have been replaced" in host.lines[-1]
    assert "--limit beta" in host.lines[-1]


def test_a_key_swapped_on_the_controller_after_generation_never_leaves_it():
    """`slurm` replaces the new key (say by a link to root's SSH key) right after `key rotate`:
    `key export` on the controller refuses what is not the key `key rotate` reported, so no
    host is sent another file; the rotation fails with that reason and rolls back."""
    rotation, world = beta()
    world.exported = b"SENTINEL-root-ssh-key-" + b"r" * 40
    with pytest.raises(StepFailed) as info:
        rotation.rotate()
    assert "installing the new key on db" in str(info.value)
    assert "sha256_mismatch" in str(info.value) and "/k" in str(info.value)
    assert world.commands(None, " key install ") == []
    shown = " ".join(t for _h, t in world.log) + " ".join(str(i) for _h, _t, i in world.stdins)
    assert "SENTINEL-root" not in shown
    assert base64.b64encode(world.exported).decode() not in shown
