"""End-to-end: each agent host runs the Slurm-web release topologies.toml names (fleet: alpha1
5.2, beta-rest and gamma1 6.0), installed as a `slurm-web-agent` package that the host tool reads
as on a real host, and a test can switch it on a running host.

The tests run in file order on one fresh fleet; only alpha is deployed.
"""

from __future__ import annotations

import json
import subprocess
import time
import warnings

import pytest
from rfl.settings import RuntimeSettings

from tests.e2e import hostcheck
from tests.e2e.pyinfra_run import ROOT, report_cmd, run_deploy
from tests.testbed import slurmweb_pkg

pytestmark = pytest.mark.e2e

COMMANDS = {"5.2": "/usr/libexec/slurm-web/slurm-web-connect-check",
            "6.0": "/usr/bin/slurm-web connect-check"}
SUCCESS = {"5.2": "✅ connection successful (slurm: 24.11.5, cluster: {cluster})",
           "6.0": "✅ connection successful! (cluster: {cluster}, slurm: 24.11.5, api: 0.0.42)"}


@pytest.fixture(scope="module")
def fleet(testbed):
    return testbed.up("fleet", fresh=True)


def agent_hosts(topo):
    return [h for h in topo.hosts if h.is_agent_host]


def connect_check(topo, host: str, release: str):
    """The release's own connect check, run as the agent's user."""
    return topo.ssh(host, f"runuser -u slurm-web -- {COMMANDS[release]}", check=False)


def test_each_agent_host_has_its_release_as_a_package(fleet, tmp_path):
    assert {h.name: h.slurmweb for h in agent_hosts(fleet)} == {
        "alpha1": "5.2", "beta-rest": "6.0", "gamma1": "6.0"}
    for host in agent_hosts(fleet):
        release = host.slurmweb
        version = fleet.ssh(host.name, "dpkg-query -W -f='${Version}' slurm-web-agent").stdout
        assert version == slurmweb_pkg.package_version(release)
        fleet.ssh(host.name, "dpkg --verify slurm-web-agent")
        yml = fleet.ssh(host.name, f"cat {slurmweb_pkg.AGENT_YML}").stdout
        assert yml == slurmweb_pkg.agent_yml(release)
        # Slurm-web's own loader reads the installed definitions.
        defs = tmp_path / f"{host.name}.yml"
        defs.write_text(yml)
        ini = tmp_path / f"{host.name}.ini"
        ini.write_text(fleet.ssh(host.name, "cat /etc/slurm-web/agent.ini").stdout)
        settings = RuntimeSettings.yaml_definition(defs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            settings.override_ini(ini)
        assert settings.service.cluster == host.cluster
        assert hasattr(settings.slurmrestd, "versions") == (release == "6.0")
        # The release's commands and no other's; its units run it as that release.
        for other, command in COMMANDS.items():
            present = fleet.ssh(host.name, f"test -x {command.split()[0]}", check=False)
            assert (present.returncode == 0) == (other == release), (host.name, command)
        env = fleet.ssh(host.name, f"systemctl show -p Environment {host.agent_unit}").stdout
        assert f"STANDIN_RELEASE={release}" in env.split()


def test_before_the_deploy_each_connect_check_stops_for_want_of_the_key_copy(fleet):
    for host in agent_hosts(fleet):
        res = connect_check(fleet, host.name, host.slurmweb)
        assert (res.returncode, res.stdout) == (1, "")
        assert ("[CRITICAL] Configuration error: Unable to load JWT key for slurmrestd "
                "authentication") in res.stderr


def test_a_deployed_5_2_agent_serves_its_own_paths_and_connect_check(fleet):
    done = run_deploy(fleet.inventory_path, "deploys/slurmrestd_access.py", "--limit", "alpha")
    assert done.returncode == 0, done.output[-6000:]
    view = hostcheck.agent_view(fleet, "alpha1")
    assert (view["slurmweb"], view["api"], view["slurm"]) == ("5.2", "0.0.41", "24.11.5")
    assert view["accepted"] is True, view["reason"]
    assert hostcheck.agent_get(fleet, "alpha1", "/v5.2.0/ping")[0] == 404  # no such route in 5.x
    res = connect_check(fleet, "alpha1", "5.2")
    assert (res.returncode, res.stdout.strip()) == (0, SUCCESS["5.2"].format(cluster="alpha"))


def test_switching_a_running_agent_to_6_0_and_back(fleet):
    before = hostcheck.agent_view(fleet, "alpha1")
    with fleet.slurmweb_release("alpha1", "6.0") as version:
        assert version == "6.0.0-1standin"
        view = hostcheck.agent_view(fleet, "alpha1")
        # Active before, so restarted: a new process, as the new release.
        assert view["started_at"] > before["started_at"]
        assert (view["slurmweb"], view["api"]) == ("6.0", "0.0.42")  # discovered on 24.11
        assert view["accepted"] is True, view["reason"]
        status, ping = hostcheck.agent_get(fleet, "alpha1", "/v6.0.0/ping")
        assert (status, ping) == (200, {"versions": {"api": "0.0.42", "slurm": "24.11.5"}})
        res = connect_check(fleet, "alpha1", "6.0")
        assert (res.returncode, res.stdout.strip()) == (0, SUCCESS["6.0"].format(cluster="alpha"))
        assert fleet.ssh("alpha1", f"test -e {COMMANDS['5.2']}", check=False).returncode == 1
    view = hostcheck.agent_view(fleet, "alpha1")
    assert (view["slurmweb"], view["accepted"]) == ("5.2", True)
    assert fleet.ssh("alpha1", "dpkg-query -W -f='${Version}' slurm-web-agent").stdout == (
        "5.2.0-1standin")
    assert view["unit"] == "slurm-web-agent.service"
    # No unit left waiting for a daemon-reload by the switches.
    assert hostcheck.units_needing_reload(fleet, "alpha1") == []


# ---- the project speaks for the 5.2 agent (issue 19) -------------------------------------------

KEY = "/var/spool/slurm/jwt_hs256.key"
COPY = "/var/lib/slurm-web/slurmrestd.key"
SIX_ONLY = ("[slurmrestd] versions", "[cache] associations", "[filters] associations")


def tool_check(topo, host: str, *extra: str):
    return topo.ssh(host, " ".join(["slurmrestd-access check --as-user slurm-web", *extra]),
                    check=False)


def test_the_deploy_and_the_check_speak_for_5_2_on_alpha1(fleet, tmp_path):
    """The deploy above ran the check for 5.2 (one version, 0.0.41, its own success line),
    and left an agent.ini that Slurm-web 5.2's own loader takes (no key 6.0 added)."""
    done = run_deploy(fleet.inventory_path, "deploys/slurmrestd_access.py", "--limit", "alpha",
                      "-v")
    assert done.returncode == 0, done.output[-6000:]
    # A re-run changes nothing, and its check (the one the host tool made with the survey:
    # nothing changed since) says 5.x's line, the release named.
    assert ("connect check before the agent restart (made with the survey; nothing changed "
            "since): "
            f"{SUCCESS['5.2'].format(cluster='alpha')} [Slurm-web 5.2.0]") in done.output, \
        done.output[-4000:]
    res = tool_check(fleet, "alpha1")
    assert (res.returncode, res.stdout.strip()) == (0, SUCCESS["5.2"].format(cluster="alpha"))
    as_json = json.loads(tool_check(fleet, "alpha1", "--json").stdout)
    assert (as_json["api_version"], as_json["slurmweb"]) == ("0.0.41", "Slurm-web 5.2.0")
    # The same line as the release's own connect-check: the two agree.
    assert connect_check(fleet, "alpha1", "5.2").stdout.strip() == res.stdout.strip()
    ini = fleet.ssh("alpha1", "cat /etc/slurm-web/agent.ini").stdout
    assert "[slurmrestd]" in ini and "versions" not in ini
    defs, path = tmp_path / "agent.yml", tmp_path / "agent.ini"
    defs.write_text(slurmweb_pkg.agent_yml("5.2"))
    path.write_text(ini)
    settings = RuntimeSettings.yaml_definition(defs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        settings.override_ini(path)  # raises on a key 5.2 does not define
    assert settings.slurmrestd.jwt_key.as_posix() == COPY


def test_a_hand_rotation_on_alpha1_is_followed_by_the_watchdog_for_5_2(fleet):
    topo, host = fleet, "alpha1"
    topo.ssh(host, f"umask 077; head -c 32 /dev/urandom > {KEY}.rot && chown slurm:slurm "
                   f"{KEY}.rot && mv -f {KEY}.rot {KEY}")
    new_key = hostcheck.stat(topo, host, KEY)["sha256"]
    topo.ssh(host, "systemctl restart slurmdbd && for i in $(seq 60); do ss -Hltn "
                   "'sport = :6819' | grep -q . && break; sleep 0.5; done; scontrol reconfigure")
    deadline = time.monotonic() + 60
    while True:
        res = topo.ssh(host, "slurmrestd-access status", check=False)
        state = json.loads(res.stdout or "{}")
        copy = hostcheck.stat(topo, host, COPY) or {}
        if res.returncode == 0 and state.get("state") == "in_sync" and \
                copy.get("sha256") == new_key:
            break
        assert time.monotonic() < deadline, (res.returncode, state)
        time.sleep(0.5)
    view = hostcheck.agent_view(topo, host)
    assert (view["slurmweb"], view["key_sha256"], view["accepted"]) == ("5.2", new_key, True), \
        view
    assert tool_check(topo, host).returncode == 0


def test_rotate_key_and_the_report_on_alpha(fleet):
    done = run_deploy(fleet.inventory_path, "deploys/rotate_key.py", "--limit", "alpha")
    assert done.returncode == 0, done.output[-6000:]
    assert hostcheck.agent_view(fleet, "alpha1")["accepted"] is True
    report = subprocess.run([*report_cmd(), str(fleet.inventory_path), "--limit", "alpha",
                             "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            check=False)
    data = json.loads(report.stdout)
    assert report.returncode == 0, data
    (row,) = [h for c in data["clusters"] for h in c["hosts"] if h["host"] == "alpha1"]
    assert (row["slurmweb"], row["check"]) == ("5.2.0", "ok"), row
