import pytest

from slurmrestd_access.cluster import HostEntry, InventoryError, plan_clusters, roles_of


def entry(name, cluster, *roles):
    return HostEntry(name, cluster, frozenset(roles))


def test_roles_ignore_cluster_and_other_groups():
    assert roles_of(["hpc", "slurmctld", "compute", "web"]) == {"slurmctld", "compute"}


def test_split_cluster_plan():
    plans = plan_clusters([
        entry("ctl", "split", "slurmctld", "compute"),
        entry("db", "split", "slurmdbd"),
        entry("rest", "split", "slurmrestd"),
        entry("one", "hpc", "slurmctld", "slurmdbd", "slurmrestd", "compute"),
    ])
    split = plans["split"]
    assert split.key_origin == "ctl"
    assert split.hosts_needing_key() == ["ctl", "db"]
    assert split.uses_slurmdbd
    assert split.all_hosts() == ["ctl", "db", "rest"]
    assert plans["hpc"].hosts_needing_key() == ["one"]


def test_cluster_without_accounting():
    plans = plan_clusters([entry("a", "c", "slurmctld", "slurmrestd")])
    assert not plans["c"].uses_slurmdbd


@pytest.mark.parametrize(
    ("entries", "needle"),
    [
        ([entry("r", "c", "slurmrestd")], "no host in group 'slurmctld'"),
        ([entry("a", "c", "slurmctld")], "no host in group 'slurmrestd'"),
    ],
)
def test_incomplete_cluster_is_refused(entries, needle):
    with pytest.raises(InventoryError, match=needle):
        plan_clusters(entries)


def test_the_watchdog_goes_only_to_agent_hosts_that_hold_the_key():
    plans = plan_clusters([
        entry("ctl", "split", "slurmctld", "compute"),
        entry("db", "split", "slurmdbd"),
        entry("rest", "split", "slurmrestd"),
        entry("one", "hpc", "slurmctld", "slurmdbd", "slurmrestd", "compute"),
        # an agent beside slurmdbd holds the key; a second agent host apart does not
        entry("c2", "mixed", "slurmctld"),
        entry("dbrest", "mixed", "slurmdbd", "slurmrestd"),
        entry("rest2", "mixed", "slurmrestd"),
    ])
    assert plans["split"].watchdog_hosts() == []
    assert plans["hpc"].watchdog_hosts() == ["one"]
    assert plans["mixed"].watchdog_hosts() == ["dbrest"]
