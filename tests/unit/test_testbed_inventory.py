"""The generated pyinfra inventory: cluster groups carry host data, role groups carry names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


# Loaded by pyinfra itself, in a child process: importing pyinfra_cli monkey-patches gevent
# into the whole interpreter, which would turn every later test's threads into greenlets.
_LOAD_WITH_PYINFRA = """
import json, sys
from pyinfra.api import State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory_from_files
with ctx_state.use(State()):
    inventory = make_inventory_from_files(sys.argv[1])
rest = inventory.get_host("split-rest")
print(json.dumps({
    "ssh_hostname": rest.data.ssh_hostname,
    "cluster": rest.data.cluster,
    "slurmrestd": sorted(h.name for h in inventory.get_group("slurmrestd")),
    "split": sorted(h.name for h in inventory.get_group("split")),
    "dbd_key": inventory.get_group("slurmdbd")[0].data.ssh_key,
}))
"""


def test_pyinfra_merges_cluster_data_with_role_groups(tmp_path):
    path = tmp_path / "split.py"
    path.write_text(render_inventory([load_catalog().topology("split")], KEY))
    done = subprocess.run([sys.executable, "-c", _LOAD_WITH_PYINFRA, str(path)],
                          capture_output=True, text=True, check=True)
    loaded = json.loads(done.stdout)
    assert loaded["ssh_hostname"] == "10.213.47.23"
    assert loaded["cluster"] == "split"
    assert loaded["slurmrestd"] == ["split-rest"]
    assert loaded["split"] == ["split-ctl", "split-db", "split-rest"]
    assert loaded["dbd_key"] == str(KEY)
