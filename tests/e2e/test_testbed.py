"""End-to-end: the testbed's hosts start in the state an administrator has after installing the
Slurm and Slurm-web packages (munge-only Slurm working, slurmrestd not set up, agent installed)."""

from __future__ import annotations

import shlex

import pytest

from tests.e2e import hostcheck
from tests.testbed.pytest_support import RunningTopology

pytestmark = pytest.mark.e2e



@pytest.fixture(scope="module", params=["single", "split"])
def topo(request, testbed) -> RunningTopology:
    # fresh: other end-to-end tests change these hosts; this module checks the start state.
    return testbed.up(request.param, fresh=True)


def test_inventory_file_lists_every_host(topo):
    text = topo.inventory_path.read_text()
    names: dict[str, object] = {}
    exec(compile(text, str(topo.inventory_path), "exec"), names)
    for cluster in topo.clusters.values():
        entries = dict(names[cluster.name])
        assert set(entries) == {h.name for h in cluster.hosts}
        for host in cluster.hosts:
            assert entries[host.name]["ssh_hostname"] == host.address
            if host.agent_unit_in_inventory:
                assert entries[host.name]["agent_unit"] == cluster.agent_unit
            else:  # left out on purpose: the deploy finds the unit in use itself
                assert "agent_unit" not in entries[host.name]
    assert names["slurmctld"] == [c.ctl_host.name for c in topo.clusters.values()]


def test_slurm_controller_is_up_and_accounting_reachable(topo):
    for cluster in topo.clusters.values():
        ctl = cluster.ctl_host.name
        assert "is UP" in topo.ssh(ctl, "scontrol ping").stdout
        clusters = topo.ssh(ctl, "sacctmgr -n -P show cluster format=cluster").stdout.split()
        assert cluster.name in clusters
        for node in cluster.compute_hosts:
            state = topo.ssh(ctl, f"sinfo -h -n {node.name} -o %t").stdout.strip()
            assert state.startswith("idle"), f"{node.name} is {state}"


def test_configs_have_no_jwt_and_slurmdbd_conf_is_private(topo):
    for host in topo.hosts:
        found = topo.ssh(
            host.name, "grep -il -E '^[^#]*(AuthAlt|jwt)' /etc/slurm/*.conf || true"
        ).stdout
        assert found.strip() == "", f"{host.name}: JWT settings in {found}"
    for cluster in topo.clusters.values():
        db = cluster.db_host.name
        perms = topo.ssh(db, "stat -c '%U %G %a' /etc/slurm/slurmdbd.conf").stdout.split()
        assert perms == ["slurm", "slurm", "600"]
        conf = topo.ssh(cluster.ctl_host.name, "cat /etc/slurm/slurm.conf").stdout
        assert f"AccountingStorageHost={db}" in conf.splitlines()
        assert f"ClusterName={cluster.name}" in conf.splitlines()


def test_slurmrestd_installed_but_not_set_up(topo):
    for cluster in topo.clusters.values():
        rest = cluster.rest_host.name
        assert topo.ssh(rest, "test -x /usr/sbin/slurmrestd", check=False).returncode == 0
        enabled = topo.ssh(rest, "systemctl is-enabled slurmrestd.service", check=False)
        assert enabled.stdout.strip() == "disabled"
        active = topo.ssh(rest, "systemctl is-active slurmrestd.service", check=False)
        assert active.stdout.strip() == "inactive"
        dropins = topo.ssh(rest, "ls /etc/systemd/system/slurmrestd.service.d 2>/dev/null || true")
        assert dropins.stdout.strip() == ""


def test_agent_standin_refuses_to_start_without_its_key_copy_as_the_agent_does(topo):
    for cluster in topo.clusters.values():
        rest = cluster.rest_host.name
        other = next(u for u in ("slurm-web-agent.service", "slurm-web-agent-uwsgi.service")
                     if u != cluster.agent_unit)
        # Enabled, and failed: Slurm-web's agent exits 1 at start without its key copy.
        assert topo.ssh(rest, f"systemctl is-enabled {cluster.agent_unit}").stdout.strip() == (
            "enabled")
        failed = topo.ssh(rest, f"systemctl is-active {cluster.agent_unit}", check=False).stdout
        assert failed.strip() == "failed"
        journal = topo.ssh(rest, f"journalctl -b -u {cluster.agent_unit} --no-pager -o cat").stdout
        assert ("[CRITICAL] Configuration error: Unable to load JWT key for slurmrestd "
                "authentication: Token private key file /var/lib/slurm-web/slurmrestd.key not "
                "found") in journal
        # Nothing listens where the agent would (HTTP on 5012, or uWSGI's socket).
        asked = topo.ssh(rest, hostcheck.agent_command(cluster.agent_unit, ["/standin/status"]),
                         input=hostcheck.CLIENT_SOURCE, check=False)
        assert asked.returncode != 0, asked.stdout
        assert ("ConnectionRefusedError" in asked.stderr  # nothing on 5012
                or "FileNotFoundError" in asked.stderr), asked.stderr  # no socket
        inactive = topo.ssh(rest, f"systemctl is-active {other}", check=False).stdout
        assert inactive.strip() == "inactive"
        assert topo.ssh(rest, f"systemctl is-enabled {other}", check=False).stdout.strip() == (
            "disabled"
        )
        user = topo.ssh(rest, f"systemctl show -p User --value {cluster.agent_unit}").stdout
        assert user.strip() == "slurm-web"
        description = topo.ssh(rest, f"systemctl show -p Description --value {other}").stdout
        assert "STAND-IN" in description
        # The agent's own front-end key, as Slurm-web's set-up leaves it.
        gateway = topo.ssh(rest, "stat -c '%U %G %a %s' /var/lib/slurm-web/jwt.key").stdout
        assert gateway.split() == ["slurm-web", "slurm-web", "400", "32"]
        ini = topo.ssh(rest, "cat /etc/slurm-web/agent.ini").stdout
        assert ini == f"[service]\ncluster={cluster.name}\n"
        home = topo.ssh(rest, "getent passwd slurm-web | cut -d: -f6; "
                        "stat -c %U /var/lib/slurm-web")
        assert home.stdout.split() == ["/var/lib/slurm-web", "slurm-web"]


def test_hosts_resolve_each_other_and_share_the_cluster_munge_key(topo):
    for host in topo.hosts:
        for other in topo.hosts:
            res = topo.ssh(host.name, f"getent hosts {other.name}")
            assert res.stdout.split()[0] == other.address
    for cluster in topo.clusters.values():
        ctl = cluster.ctl_host.name
        credential = topo.ssh(ctl, "munge -n", text=False).stdout
        for host in cluster.hosts:
            decoded = topo.ssh(host.name, "unmunge", input=credential)
            assert "STATUS:          Success" in decoded.stdout


def test_no_host_reaches_beyond_the_bridge(topo):
    # No default route: an address outside the testbed /24 is unreachable (no packet leaves).
    probe = (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('192.0.2.1', 80), timeout=3)\n"
        "    print('reached')\n"
        "except OSError as exc:\n"
        "    print('unreachable', exc.errno)\n"
    )
    for host in topo.hosts:
        route = topo.ssh(host.name, "ip route get 192.0.2.1", check=False)
        assert route.returncode != 0, f"{host.name} has a route out: {route.stdout}"
        res = topo.ssh(host.name, f"python3 -c {shlex.quote(probe)}")
        assert res.stdout.startswith("unreachable"), f"{host.name}: {res.stdout}"


def test_fleet_clusters_are_separate_and_gamma_runs_the_uwsgi_unit(testbed):
    fleet = testbed.up("fleet")
    for cluster in fleet.clusters.values():
        ctl = cluster.ctl_host.name
        names = fleet.ssh(ctl, "sacctmgr -n -P show cluster format=cluster").stdout.split()
        assert names == [cluster.name]
    keys = {
        name: fleet.ssh(c.ctl_host.name, "sha256sum < /etc/munge/munge.key").stdout.split()[0]
        for name, c in fleet.clusters.items()
    }
    assert len(set(keys.values())) == 3, "each cluster has its own munge key"
    # The uWSGI unit is gamma's agent (failed before a deploy, active after one: either way
    # it is the enabled one), and, as Slurm-web's own, it has no Restart=.
    uwsgi = fleet.ssh("gamma1", "systemctl is-enabled slurm-web-agent-uwsgi.service").stdout
    assert uwsgi.strip() == "enabled"
    restart = fleet.ssh("gamma1", "systemctl show -p Restart --value "
                        "slurm-web-agent-uwsgi.service slurm-web-agent.service").stdout
    assert restart.split() == ["no", "on-failure"]
    enabled = fleet.ssh("gamma1", "systemctl is-enabled slurm-web-agent.service", check=False)
    assert enabled.stdout.strip() == "disabled"
    # Slurm-web's uWSGI unit and ini, run by Debian's uWSGI (in trixie's base).
    exec_start = fleet.ssh("gamma1", "systemctl show -p ExecStart --value "
                                     "slurm-web-agent-uwsgi.service").stdout
    assert "argv[]=/usr/bin/uwsgi --ini /usr/share/slurm-web/wsgi/agent/slurm-web-agent.ini " \
        in exec_start, exec_start
    installed = fleet.ssh("gamma1", "dpkg-query -W -f '${Package} ${Status}\\n' uwsgi-core "
                                    "uwsgi-plugin-python3").stdout.splitlines()
    assert installed == ["uwsgi-core install ok installed",
                         "uwsgi-plugin-python3 install ok installed"], installed
