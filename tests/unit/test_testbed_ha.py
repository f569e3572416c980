"""The testbed's `ha` topology: two controllers in slurm.conf's order, one StateSaveLocation
bound from the machine into both (never mounted on the machine), owned by the hosts' slurm."""

from __future__ import annotations

import copy
import os
import tomllib
from pathlib import Path

import pytest

from tests.testbed import hostconfig, machine
from tests.testbed.errors import TestbedError
from tests.testbed.testbed import Testbed
from tests.testbed.topology import DEFAULT_TOPOLOGIES_FILE, load_catalog, parse_catalog


def _ha():
    return load_catalog().topology("ha").clusters["ha"]


def test_ha_is_shaped_as_issue_22_says():
    cluster = _ha()
    assert [(h.name, h.address, list(h.roles)) for h in cluster.hosts] == [
        ("ha-ctl1", "10.213.47.101", ["slurmctld", "compute"]),
        ("ha-ctl2", "10.213.47.102", ["slurmctld", "compute"]),
        ("ha-db", "10.213.47.103", ["slurmdbd"]),
        ("ha-rest", "10.213.47.104", ["slurmrestd"]),
    ]
    assert all(h.release == "trixie" for h in cluster.hosts)
    assert cluster.ctl_host.name == "ha-ctl1"  # the primary
    assert [h.name for h in cluster.ctl_hosts] == ["ha-ctl1", "ha-ctl2"]
    assert cluster.shares_state
    assert not load_catalog().topology("split").clusters["split"].shares_state


def test_slurm_conf_names_the_primary_then_the_backup():
    lines = hostconfig.slurm_conf(_ha()).splitlines()
    assert [line for line in lines if line.startswith("SlurmctldHost=")] == [
        "SlurmctldHost=ha-ctl1", "SlurmctldHost=ha-ctl2"]
    assert f"StateSaveLocation={hostconfig.STATE_SAVE_LOCATION}" in lines


def test_three_controllers_are_refused():
    raw = tomllib.loads(DEFAULT_TOPOLOGIES_FILE.read_text())
    data = copy.deepcopy(raw)
    data["topologies"]["ha"]["clusters"]["ha"]["hosts"][2]["roles"] = ["slurmctld", "slurmdbd"]
    with pytest.raises(TestbedError, match="needs one or two slurmctld host, has 3"):
        parse_catalog(data)


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    uid, gid = os.getuid(), os.getgid()  # a chown to oneself works without privileges
    (root / "etc/passwd").write_text(f"root:x:0:0::/root:/bin/sh\nslurm:x:{uid}:{gid}::/:/x\n")
    (root / "etc/group").write_text(f"root:x:0:\nslurm:x:{gid}:\n")
    return root


def test_both_controllers_bind_the_one_state_directory_and_nothing_else_does(tmp_path):
    tb = Testbed(cache=tmp_path / "cache", state_dir=tmp_path / "state")
    dirs = machine.HostDirs(tmp_path / "host")
    dirs.top.mkdir()
    _root(tmp_path).rename(dirs.root)
    binds = {h.name: tb._binds(h, dirs) for h in _ha().hosts}
    shared = tmp_path / "cache/clusters/ha/statesave"
    assert binds == {"ha-ctl1": ((shared, "/var/lib/slurm/slurmctld"),),
                     "ha-ctl2": ((shared, "/var/lib/slurm/slurmctld"),),
                     "ha-db": (), "ha-rest": ()}
    assert shared.is_dir() and (shared.stat().st_mode & 0o777) == 0o755
    assert shared.stat().st_uid == os.getuid()  # the hosts' slurm
    # Beside the munge key, in the cluster's root-only directory, which `down` removes.
    assert (shared.parent.stat().st_mode & 0o777) == 0o700
    assert (shared.parent / "munge.key").is_file()
    split = load_catalog().topology("split").clusters["split"]
    assert tb._binds(split.ctl_host, dirs) == ()


def test_boot_hands_the_binds_to_nspawn(tmp_path, monkeypatch):
    seen = {}

    class Popen:
        pid = 4242

        def __init__(self, args, **kwargs):
            seen["args"] = args

    monkeypatch.setattr(machine.subprocess, "Popen", Popen)
    monkeypatch.setattr(machine, "_BOOTED", [])
    dirs = machine.HostDirs(tmp_path)
    machine.boot(dirs, "ha-ctl1", "srabr0",
                 binds=((Path("/cache/clusters/ha/statesave"), "/var/lib/slurm/slurmctld"),))
    assert "--bind=/cache/clusters/ha/statesave:/var/lib/slurm/slurmctld" in seen["args"]
    machine.boot(dirs, "split-ctl", "srabr0")
    assert not [a for a in seen["args"] if a.startswith("--bind")]


def test_only_the_ha_controllers_get_the_testbeds_short_stop_timeout():
    catalog = load_catalog()

    def paths(topology: str, index: int) -> list[str]:
        host = catalog.topology(topology).hosts[index]
        return [f.path for f in hostconfig.host_files(catalog, host, b"k", "ssh-ed25519 x",
                                                      "0" * 32)]

    assert hostconfig.SLURMCTLD_STOP_DROPIN in paths("ha", 0)
    assert hostconfig.SLURMCTLD_STOP_DROPIN in paths("ha", 1)
    assert hostconfig.SLURMCTLD_STOP_DROPIN not in paths("ha", 2)  # ha-db
    assert hostconfig.SLURMCTLD_STOP_DROPIN not in paths("single", 0)
