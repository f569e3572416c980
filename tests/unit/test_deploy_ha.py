"""High availability: which controller is the primary, the order the controllers are restarted
in (backups one at a time, then the primary), and the wait that lets the next one go only once
`scontrol ping` says every controller is UP; in the deploy (fake hosts running the real deploy)
and in the rotation."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from slurmrestd_access.cluster import HostEntry, plan_clusters
from slurmrestd_access.fleet import rotation_plan as rp
from slurmrestd_access.fleet.rotation import Rotation
from slurmrestd_access.settings import settings_from_host_data
from slurmrestd_access.toolplan import controller_up
from tests.unit.fakedeploy import deploy, deployed_host


def _plan(*controllers: str, other: tuple[HostEntry, ...] = ()):
    entries = [HostEntry(c, "hpc", frozenset({"slurmctld"})) for c in controllers]
    entries += [HostEntry("rest", "hpc", frozenset({"slurmrestd"})), *other]
    return plan_clusters(entries)["hpc"]


def test_the_primary_is_the_first_controller_of_the_inventory():
    assert _plan("ctl1", "ctl2").primary_controller == "ctl1"
    assert _plan("b", "a").primary_controller == "b"  # the inventory's order, not the names'


@pytest.mark.parametrize(("controllers", "order"), [
    (("ctl",), ["ctl"]),
    (("ctl1", "ctl2"), ["ctl2", "ctl1"]),
    (("ctl1", "ctl2", "ctl3"), ["ctl2", "ctl3", "ctl1"]),
])
def test_backups_restart_first_and_the_primary_last(controllers, order):
    assert _plan(*controllers).controller_restart_order() == order


def test_the_rotation_restarts_the_controllers_in_the_same_order():
    db = HostEntry("db", "hpc", frozenset({"slurmdbd"}))
    hosts = rp.rotation_hosts(_plan("ctl1", "ctl2", other=(db,)))
    assert hosts.controller == "ctl1"
    assert hosts.other_key_hosts == ("ctl2", "db")  # the backup gets the new key by hash
    assert hosts.ctld_restart_order == ("ctl2", "ctl1")


def _rotation_restarts(hosts: rp.RotationHosts) -> list[str]:
    rotation = Rotation(None, hosts, lambda name: None)
    done: list[str] = []
    rotation.restart_dbd = lambda name: done.append(f"slurmdbd {name}")
    rotation.restart_ctld = lambda name: done.append(f"slurmctld {name}")
    rotation.restart_daemons()
    return done


def test_a_rotation_restarts_slurmdbd_then_each_backup_then_the_primary():
    db = HostEntry("db", "hpc", frozenset({"slurmdbd"}))
    hosts = rp.rotation_hosts(_plan("ctl1", "ctl2", "ctl3", other=(db,)))
    assert _rotation_restarts(hosts) == ["slurmdbd db", "slurmctld ctl2", "slurmctld ctl3",
                                         "slurmctld ctl1"]


# --------------------------------------------------------------- every controller UP


def _ping(tmp_path: Path, output: str, status: int = 0) -> int:
    """Run the deploy's wait condition against a `scontrol` that prints `output`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "scontrol"
    fake.write_text(f"#!/bin/sh\nprintf '%s' '{output}'\nexit {status}\n")
    fake.chmod(0o755)
    test = controller_up(settings_from_host_data("h", {"cluster": "hpc"}))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(["sh", "-c", test], env=env, check=False).returncode


@pytest.mark.parametrize(("output", "up"), [
    ("Slurmctld(primary) at ctl is UP\n", True),
    ("Slurmctld(primary) at ctl1 is UP\nSlurmctld(backup) at ctl2 is UP\n", True),
    # The backup not back yet: restarting the primary now would leave no controller.
    ("Slurmctld(primary) at ctl1 is UP\nSlurmctld(backup) at ctl2 is DOWN\n", False),
    ("Slurmctld(primary) at ctl1 is DOWN\nSlurmctld(backup) at ctl2 is UP\n", False),
    ("Slurmctld(primary) at ctl is DOWN\n", False),
    ("", False),
])
def test_a_restart_waits_until_every_controller_is_up(tmp_path, output, up):
    assert (_ping(tmp_path, output) == 0) is up


# --------------------------------------------------------------- the deploy, on fake hosts


def _ha_hosts(controllers: int = 2) -> dict:
    # The conf merge changes slurm.conf on every controller: each must be restarted. A delay
    # per command lets pyinfra interleave hosts, as it would with real ones.
    ctls = {f"ctl{i}": deployed_host(roles=("slurmctld", "compute"), plan_changed=True,
                                     data={"fake_delay": 0.01})
            for i in range(1, controllers + 1)}
    return {**ctls, "db": deployed_host(roles=("slurmdbd",)),
            "rest": deployed_host(roles=("slurmrestd",))}


def _ctld_steps(run) -> list[tuple[str, str]]:
    """(host, restart|wait) of the slurmctld restarts, in the order they ran on all hosts."""
    steps = []
    for host, command in run.sequence:
        if "restart slurmctld" in command:
            steps.append((host.removeprefix("@fake/"), "restart"))
        elif "scontrol ping" in command:
            steps.append((host.removeprefix("@fake/"), "wait"))
    return steps


def test_the_deploy_restarts_one_controller_at_a_time_backups_first(tmp_path):
    run = deploy(tmp_path, _ha_hosts(3))
    assert run.returncode == 0, run.output[-3000:]
    # Each restart is followed by its wait before the next controller's restart begins; the
    # backups in the order pyinfra takes its hosts (a set), the primary last.
    steps = _ctld_steps(run)
    first, second = sorted(("ctl2", "ctl3"), key=lambda h: steps.index((h, "restart")))
    assert steps == [(first, "restart"), (first, "wait"), (second, "restart"),
                     (second, "wait"), ("ctl1", "restart"), ("ctl1", "wait")]


def test_dry_shows_the_backup_restart_before_the_primary_restart(tmp_path):
    run = deploy(tmp_path, _ha_hosts(), "--dry")
    assert run.returncode == 0, run.output[-3000:]
    backup = run.output.index("Restart slurmctld.service (backup controller, one at a time)")
    primary = run.output.index("Restart slurmctld.service (primary controller, after the "
                               "backups)")
    assert backup < primary


def test_a_single_controller_keeps_its_plain_restart(tmp_path):
    run = deploy(tmp_path, {"hpc1": deployed_host(plan_changed=True)}, "--dry")
    assert run.returncode == 0, run.output[-3000:]
    assert "Restart slurmctld.service" in run.output
    assert "backup controller" not in run.output and "primary controller" not in run.output


def test_nothing_changed_restarts_no_controller(tmp_path):
    hosts = _ha_hosts()
    for name in ("ctl1", "ctl2"):
        hosts[name].plan_changed = False
    run = deploy(tmp_path, hosts)
    assert run.returncode == 0, run.output[-3000:]
    assert _ctld_steps(run) == []


def test_a_rollback_restarts_the_controllers_in_the_same_order():
    db = HostEntry("db", "hpc", frozenset({"slurmdbd"}))
    hosts = rp.rotation_hosts(_plan("ctl1", "ctl2", other=(db,)))
    rotation = Rotation(None, hosts, lambda name: None)
    done: list[str] = []
    rotation.restart_dbd = lambda name: done.append(f"slurmdbd {name}")
    rotation.restart_ctld = lambda name: done.append(f"slurmctld {name}")
    rotation.restart_agent = lambda name: done.append(f"agent {name}")
    rotation.prove = lambda name, when: None
    assert rotation.rollback() == []
    assert done == ["slurmdbd db", "slurmctld ctl2", "slurmctld ctl1", "agent rest"]


def test_an_inventory_whose_first_controller_is_not_slurm_confs_primary_is_warned_about():
    from slurmrestd_access.cluster import primary_mismatch

    assert primary_mismatch(["ctl1", "ctl2"], ["ctl1", "ctl2"]) is None
    # Short names: the inventory may use FQDNs, slurm.conf short names.
    assert primary_mismatch(["ctl1.hpc.example", "ctl2"], ["CTL1", "ctl2"]) is None
    assert primary_mismatch(["ctl1"], ["ctl9"]) is None  # no backup: nothing to order
    assert primary_mismatch(["ctl1", "ctl2"], []) is None  # slurm.conf not read
    warning = primary_mismatch(["ctl2", "ctl1"], ["ctl1", "ctl2"])
    assert warning is not None and warning.startswith(
        "warning: slurm.conf names ctl1 first (the primary controller), the inventory's "
        "slurmctld group ctl2")


def test_the_tool_reads_the_controllers_in_slurm_confs_order_includes_followed(tmp_path, capsys):
    import json

    from watchdog_daemon import cli

    conf = tmp_path / "slurm.conf"
    more = tmp_path / "ha.conf"
    conf.write_text(f"ClusterName=hpc\nSlurmctldHost=ctl1(10.0.0.1)\nInclude {more}\n")
    more.write_text("SlurmctldHost=ctl2\n")
    assert cli.main(["plan", "--conf", str(conf), "--jwt-key", "/k"]) == 0
    (part,) = json.loads(capsys.readouterr().out)["conf"]
    assert part["slurmctld_hosts"] == ["ctl1", "ctl2"]
