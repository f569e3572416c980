"""The generated pyinfra inventory: cluster groups carry host data, role groups carry names."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.testbed.inventory import render_inventory
from tests.testbed.topology import load_catalog

KEY = Path("/abs/.testbed/id_ed25519")


def _exec(text: str) -> dict:
    names: dict = {}
    exec(compile(text, "<inventory>", "exec"), names)
    return names


def test_single_inventory_has_the_contract_shape():
    names = _exec(render_inventory([load_catalog().topology("single")], KEY))
    assert names["hpc"] == [("hpc1", {
        "ssh_hostname": "10.213.47.11",
        "ssh_user": "root",
        "ssh_key": str(KEY),
        "ssh_known_hosts_file": "/dev/null",
        "ssh_strict_host_key_checking": "no",
        "cluster": "hpc",
        "agent_unit": "slurm-web-agent.service",
    })]
    for role in ("slurmctld", "slurmdbd", "slurmrestd", "compute"):
        assert names[role] == ["hpc1"]


def test_several_topologies_share_role_groups():
    cat = load_catalog()
    names = _exec(render_inventory([cat.topology("single"), cat.topology("fleet")], KEY))
    assert {"hpc", "alpha", "beta", "gamma"} <= set(names)
    assert names["slurmrestd"] == ["hpc1", "alpha1", "beta-rest", "gamma1"]
    assert names["compute"] == ["hpc1", "alpha1", "beta-ctl", "gamma1"]
    gamma = dict(names["gamma"])
    assert gamma["gamma1"]["agent_unit"] == "slurm-web-agent-uwsgi.service"


def test_pyinfra_merges_cluster_data_with_role_groups(tmp_path):
    inventory_mod = pytest.importorskip("pyinfra_cli.inventory")
    from pyinfra.api import State
    from pyinfra.context import ctx_state

    path = tmp_path / "split.py"
    path.write_text(render_inventory([load_catalog().topology("split")], KEY))
    # pyinfra's CLI loads inventory files inside a State context.
    with ctx_state.use(State()):
        inventory = inventory_mod.make_inventory_from_files(str(path))
    rest = inventory.get_host("split-rest")
    assert rest.data.ssh_hostname == "10.213.47.23"
    assert rest.data.cluster == "split"
    assert {h.name for h in inventory.get_group("slurmrestd")} == {"split-rest"}
    assert {h.name for h in inventory.get_group("split")} == {"split-ctl", "split-db", "split-rest"}
    assert inventory.get_group("slurmdbd")[0].data.ssh_key == str(KEY)
