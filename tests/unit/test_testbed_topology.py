"""Topologies as data: the built-in ones keep the contract, bad ones are refused clearly."""

from __future__ import annotations

import copy
import tomllib

import pytest

from tests.testbed.errors import TestbedError
from tests.testbed.topology import DEFAULT_TOPOLOGIES_FILE, load_catalog, parse_catalog

ALL = ["slurmctld", "slurmdbd", "slurmrestd", "compute"]


@pytest.fixture
def raw() -> dict:
    return tomllib.loads(DEFAULT_TOPOLOGIES_FILE.read_text())


def _shape(topology):
    return {
        c.name: (c.agent_unit, [(h.name, list(h.roles)) for h in c.hosts])
        for c in topology.clusters.values()
    }


def test_builtin_topologies_match_the_contract():
    cat = load_catalog()
    assert _shape(cat.topology("single")) == {"hpc": ("slurm-web-agent.service", [("hpc1", ALL)])}
    assert _shape(cat.topology("split")) == {
        "split": ("slurm-web-agent.service", [
            ("split-ctl", ["slurmctld", "compute"]),
            ("split-db", ["slurmdbd"]),
            ("split-rest", ["slurmrestd"]),
        ])
    }
    fleet = _shape(cat.topology("fleet"))
    assert fleet["alpha"] == ("slurm-web-agent.service", [("alpha1", ALL)])
    assert fleet["beta"][0] == "slurm-web-agent.service"
    assert [n for n, _ in fleet["beta"][1]] == ["beta-ctl", "beta-db", "beta-rest"]
    assert fleet["gamma"] == ("slurm-web-agent-uwsgi.service", [("gamma1", ALL)])


def test_builtin_addresses_are_unique_and_inside_the_testbed_subnet():
    cat = load_catalog()
    addresses = [h.address for h in cat.all_hosts]
    assert len(addresses) == len(set(addresses))
    assert str(cat.network.subnet) == "10.213.47.0/24"
    assert cat.network.bridge == "srabr0"
    assert str(cat.network.gateway) == "10.213.47.1"


def test_cluster_roles_resolve_to_their_hosts():
    split = load_catalog().topology("split").clusters["split"]
    assert split.ctl_host.name == "split-ctl"
    assert split.db_host.name == "split-db"
    assert split.rest_host.name == "split-rest"
    assert [h.name for h in split.compute_hosts] == ["split-ctl"]
    assert split.rest_host.is_agent_host and not split.db_host.is_agent_host


def test_unknown_topology_names_the_known_ones():
    with pytest.raises(TestbedError,
                       match="known: bookworm, bullseye, configless, fleet, forky, ha, single, "
                             "split"):
        load_catalog().topology("nope")


def test_release_topologies_are_named_and_shaped_as_issue_9_says():
    cat = load_catalog()
    shapes = {
        name: (topo.release, {c: {h.name: h.roles for h in cl.hosts}
                              for c, cl in topo.clusters.items()})
        for name, topo in cat.topologies.items()
    }
    every = ("slurmctld", "slurmdbd", "slurmrestd", "compute")
    assert shapes["bullseye"] == ("bullseye", {"bullseye": {"bullseye1": every}})
    assert shapes["bookworm"] == ("bookworm", {"bookworm": {"bookworm1": every}})
    assert shapes["forky"] == ("forky", {"forky": {
        "forky-ctl": ("slurmctld", "slurmdbd"), "forky-rest": ("slurmrestd",),
        "forky-cn": ("compute",)}})
    for name in ("single", "split", "fleet"):
        assert shapes[name][0] == "trixie"
        assert all(h.release == "trixie" for h in cat.topology(name).hosts)
    assert all(h.release == "forky" for h in cat.topology("forky").hosts)


def test_an_unknown_release_is_refused():
    raw = {"network": {"subnet": "10.9.0.0/24", "bridge": "br", "gateway": "10.9.0.1"},
           "topologies": {"t": {"release": "buster", "clusters": {"c": {"hosts": [
               {"name": "h1", "address": "10.9.0.2",
                "roles": ["slurmctld", "slurmdbd", "slurmrestd", "compute"]}]}}}}}
    with pytest.raises(TestbedError, match="release must be one of"):
        parse_catalog(raw)


def _mutated(raw, change):
    data = copy.deepcopy(raw)
    change(data)
    return data


def _single_host(data):
    return data["topologies"]["single"]["clusters"]["hpc"]["hosts"][0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: _single_host(d).update(name="alpha1"), "host alpha1 is in topologies"),
        (lambda d: _single_host(d).update(address="10.213.47.31"), "share 10.213.47.31"),
        (lambda d: _single_host(d).update(address="10.9.9.9"), "not a free host address"),
        (lambda d: _single_host(d).update(address="10.213.47.1"), "not a free host address"),
        (lambda d: _single_host(d).update(roles=["slurmctld", "compute"]), "exactly one slurmdbd"),
        (lambda d: _single_host(d).update(roles=[*ALL, "gpu"]), "bad roles"),
        (lambda d: _single_host(d).update(name="Bad_Name"), "bad host name"),
        (lambda d: d["topologies"]["single"]["clusters"]["hpc"].update(agent_unit="x.service"),
         "agent_unit must be one of"),
        (lambda d: d["topologies"]["fleet"]["clusters"].update(
            hpc=copy.deepcopy(d["topologies"]["single"]["clusters"]["hpc"])),
         "cluster hpc is in topologies"),
        (lambda d: d["network"].update(subnet="8.8.8.0/24", gateway="8.8.8.1"), "not private"),
        (lambda d: d["network"].update(bridge="a-very-long-bridge-name"), "bad bridge name"),
        (lambda d: d.pop("network"), r"\[network\] table is missing"),
        (lambda d: _single_host(d).update(sudo="nopassword"),
         "host hpc1: sudo must be one of nopasswd, password, not 'nopassword'"),
        (lambda d: _single_host(d).update(sudo_mode="password"),
         "host hpc1: unknown setting.s. sudo_mode"),
        (lambda d: _single_host(d).update(slurmweb="4.2"),
         r"host hpc1: slurmweb must be one of 5.2, 6.0 \(a string, quoted\), not '4.2'"),
        (lambda d: _single_host(d).update(slurmweb=5.2),
         r"host hpc1: slurmweb must be one of 5.2, 6.0 \(a string, quoted\), not 5.2"),
        (lambda d: d["topologies"]["split"]["clusters"]["split"]["hosts"][1].update(
            slurmweb="5.2"), "host split-db: slurmweb names the agent's release; only the "
                             "slurmrestd host has the agent"),
        # Only trixie's base has uWSGI (basecache.UWSGI_PACKAGES).
        (lambda d: d["topologies"]["bookworm"]["clusters"]["bookworm"].update(
            agent_unit="slurm-web-agent-uwsgi.service"),
         "needs uWSGI, which the base of trixie has, not bookworm's"),
    ],
)
def test_bad_topologies_are_refused(raw, change, message):
    with pytest.raises(TestbedError, match=message):
        parse_catalog(_mutated(raw, change))


def test_cluster_named_like_a_role_is_refused(raw):
    def rename(d):
        clusters = d["topologies"]["single"]["clusters"]
        clusters["compute"] = clusters.pop("hpc")

    with pytest.raises(TestbedError, match="bad cluster name"):
        parse_catalog(_mutated(raw, rename))


def test_slurmweb_release_is_per_agent_host_and_defaults_to_6_0():
    cat = load_catalog()
    releases = {h.name: h.slurmweb for h in cat.all_hosts if h.is_agent_host}
    # fleet's alpha1 runs the release the seed page was written for; every other agent 6.0.
    assert releases.pop("alpha1") == "5.2"
    assert set(releases.values()) == {"6.0"}
    assert {h.slurmweb for h in cat.all_hosts if not h.is_agent_host} == {"6.0"}
