"""End-to-end: the deploy over SSH with the real pyinfra CLI on real Slurm hosts (testbed)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess

import pytest

from slurmrestd_access.hostwheel import source_digest
from slurmrestd_access.settings import Settings
from slurmrestd_access.watchconf import render_watch_toml
from tests.e2e import hostcheck
from tests.e2e.pyinfra_run import ROOT, report_cmd, run_deploy

pytestmark = pytest.mark.e2e

KEY = "/var/spool/slurm/jwt_hs256.key"
COPY = "/var/lib/slurm-web/slurmrestd.key"
DROPIN = "/etc/systemd/system/slurmrestd.service.d/slurm-web.conf"
SEED_DROPIN = """[Service]
# Unset vendor unit ExecStart and Environment to avoid cumulative definition
ExecStart=
Environment=
Environment="SLURM_JWT=daemon"
ExecStart=/usr/sbin/slurmrestd $SLURMRESTD_OPTIONS -a rest_auth/jwt \
unix:/run/slurmrestd/slurmrestd.socket
RuntimeDirectory=slurmrestd
RuntimeDirectoryMode=0755
User=slurmrestd
Group=slurmrestd
DynamicUser=yes
"""  # the backslash-newline joins ExecStart into one line, as in the documentation


def hosts_with(topo, role):
    return [h.name for h in topo.hosts if role in h.roles]


def assert_deployed(tb) -> None:
    """Every host of every cluster in the topology is as the documentation page describes."""
    for cluster in {h.cluster for h in tb.hosts}:
        members = [h for h in tb.hosts if h.cluster == cluster]
        key_hosts = [h.name for h in members if {"slurmctld", "slurmdbd"} & set(h.roles)]
        hashes = set()
        for name in key_hosts:
            key = hostcheck.stat(tb, name, KEY)
            assert key is not None, f"{name}: no key"
            assert (key["owner"], key["group"], key["mode"]) == ("slurm", "slurm", 0o600), key
            hashes.add(key["sha256"])
        assert len(hashes) == 1, f"{cluster}: key differs between {key_hosts}"
        for h in members:
            if "slurmrestd" in h.roles:
                copy = hostcheck.stat(tb, h.name, COPY)
                assert copy is not None
                assert (copy["owner"], copy["group"], copy["mode"]) == (
                    "slurm-web", "slurm-web", 0o400)
                assert copy["sha256"] in hashes
                dropin = tb.ssh(h.name, f"cat {DROPIN}").stdout
                dropin = dropin.decode() if isinstance(dropin, bytes) else dropin
                assert dropin == SEED_DROPIN
                status = hostcheck.agent_view(tb, h.name)
                assert status["accepted"] is True, status
                assert status["cluster"] == cluster
                # The rotation watchdog runs where the agent host holds Slurm's key, and only
                # there: elsewhere it would have no key to follow (status key_missing, forever).
                wanted = (hostcheck.WATCHDOG_HEALTHY if h.name in key_hosts
                          else hostcheck.WATCHDOG_ABSENT)
                assert hostcheck.watchdog(tb, h.name) == wanted, h.name
            if {"slurmctld", "slurmrestd", "compute"} & set(h.roles):
                assert hostcheck.grep_lines(tb, h.name, "/etc/slurm/slurm.conf",
                                            "^authalttypes") == ["AuthAltTypes=auth/jwt"]
                params = hostcheck.grep_lines(tb, h.name, "/etc/slurm/slurm.conf",
                                              "^authaltparameters")
                assert params == [f"AuthAltParameters=jwt_key={KEY}"]
            if "slurmdbd" in h.roles:
                assert hostcheck.grep_lines(tb, h.name, "/etc/slurm/slurmdbd.conf",
                                            "^authalttypes") == ["AuthAltTypes=auth/jwt"]
                dbd = hostcheck.stat(tb, h.name, "/etc/slurm/slurmdbd.conf")
                assert (dbd["owner"], dbd["mode"]) == ("slurm", 0o600)


# How each topology's agent was before its first deploy, by topology name.
AGENT_BEFORE: dict[str, dict] = {}


@pytest.fixture(scope="module", params=["single", "split"])
def deployed(request, testbed):
    topo = testbed.up(request.param, fresh=True)
    for cluster in topo.clusters.values():
        rest, unit = cluster.rest_host.name, cluster.agent_unit
        AGENT_BEFORE[f"{topo.name}/{cluster.name}"] = {
            "state": hostcheck.unit_state(topo, rest, unit),
            "journal": hostcheck.journal(topo, rest, unit)}
    reloads = hostcheck.reload_counts(topo)
    first = run_deploy(topo.inventory_path)
    assert first.returncode == 0, first.output[-6000:]
    # Right after the run, before any test does something of its own on the hosts.
    settled = hostcheck.systemd_problems(topo, reloads, most=1)
    return topo, first, settled


def test_fresh_deploy_ends_with_the_agent_accepted(deployed):
    topo, first, _ = deployed
    assert first.totals()["changed"] > 0
    assert_deployed(topo)


def test_fresh_deploy_leaves_no_daemon_reload_pending_and_reloads_once(deployed):
    _, _, settled = deployed
    assert settled == []


def test_second_run_changes_nothing_and_restarts_nothing(deployed):
    topo, _, _ = deployed
    before = {h.name: hostcheck.unit_starts(topo, h.name) for h in topo.hosts}
    reloads = hostcheck.reload_counts(topo)
    again = run_deploy(topo.inventory_path)
    assert again.returncode == 0, again.output[-6000:]
    assert again.totals()["changed"] == 0, again.output[-4000:]
    after = {h.name: hostcheck.unit_starts(topo, h.name) for h in topo.hosts}
    assert after == before
    hostcheck.assert_systemd_settled(topo, reloads, most=0)


def test_a_rerun_from_another_workstation_changes_nothing(deployed, tmp_path):
    """Another workstation (or a wiped .cache/): its own wheelhouse, the tool's wheel built
    again (another SOURCE_DATE_EPOCH: the same bytes all the same, it is reproducible). The tool
    is not reinstalled and the watchdog not restarted."""
    topo, _, _ = deployed
    cache = ROOT / ".cache" / "wheelhouse"
    other = tmp_path / "wheelhouse"
    other.mkdir()
    for deps in cache.glob("deps-*"):  # the same files the package index would give
        shutil.copytree(deps, other / deps.name)

    def state():
        # unit_starts covers the watchdog too (start time and PID), where it runs.
        return {h.name: (hostcheck.unit_starts(topo, h.name),
                         hostcheck.stat(topo, h.name, "/opt/slurmrestd-access/INSTALLED"))
                for h in topo.hosts}

    before = state()
    run = run_deploy(topo.inventory_path, env={"SRA_WHEELHOUSE": str(other),
                                               "SOURCE_DATE_EPOCH": "315532800"})
    assert run.returncode == 0, run.output[-6000:]
    built = f"project-{source_digest()}"
    (ours,), (theirs,) = ((c / built).glob("*.whl") for c in (cache, other))
    assert ours.read_bytes() == theirs.read_bytes()  # two builds, the same bytes
    assert run.totals()["changed"] == 0, run.output[-4000:]
    assert state() == before


def test_dry_run_of_a_deployed_cluster_shows_no_change(deployed):
    topo, _, _ = deployed
    before, reloads = hostcheck.snapshot(topo), hostcheck.reload_counts(topo)
    dry = run_deploy(topo.inventory_path, "deploys/slurmrestd_access.py", "--dry")
    assert dry.returncode == 0, dry.output[-4000:]
    assert dry.planned_changes() == []
    # Nothing on the hosts changed: files, units, systemd.
    assert hostcheck.snapshot(topo) == before
    hostcheck.assert_systemd_settled(topo, reloads, most=0)


def test_dry_run_of_a_cluster_needing_work_changes_nothing(deployed):
    topo, _, _ = deployed
    rest = hosts_with(topo, "slurmrestd")[0]
    ini = "/etc/slurm-web/agent.ini"
    topo.ssh(rest, f"cp -p {ini} /root/agent.ini.good && sed -i '/^jwt_mode/d' {ini}")
    try:
        before = hostcheck.snapshot(topo)
        dry = run_deploy(topo.inventory_path, "deploys/slurmrestd_access.py", "--dry")
        assert dry.returncode == 0, dry.output[-4000:]
        assert any("agent.ini" in op for op in dry.planned_changes()), dry.output[-4000:]
        assert hostcheck.snapshot(topo) == before
    finally:
        topo.ssh(rest, f"mv -f /root/agent.ini.good {ini}")


def test_a_key_whose_owner_and_mode_are_repaired_restarts_no_daemon(deployed):
    topo, _, _ = deployed
    key_hosts = [h.name for h in topo.hosts if {"slurmctld", "slurmdbd"} & set(h.roles)]
    before = {name: hostcheck.stat(topo, name, KEY) for name in key_hosts}
    for name in key_hosts:
        topo.ssh(name, f"chown root:slurm {KEY} && chmod 0640 {KEY}")
    starts = {h.name: hostcheck.unit_starts(topo, h.name) for h in topo.hosts}
    run = run_deploy(topo.inventory_path)
    assert run.returncode == 0, run.output[-6000:]
    assert {name: hostcheck.stat(topo, name, KEY) for name in key_hosts} == before  # repaired
    # slurmctld and slurmdbd read the content only, which did not change: no restart.
    assert {h.name: hostcheck.unit_starts(topo, h.name) for h in topo.hosts} == starts


def test_wrong_key_copy_is_rejected_by_slurmctld_then_repaired(deployed):
    topo, _, _ = deployed
    rest = hosts_with(topo, "slurmrestd")[0]
    topo.ssh(rest, f"head -c 32 /dev/urandom > {COPY}.new && chown slurm-web:slurm-web {COPY}.new"
                   f" && chmod 0400 {COPY}.new && mv -f {COPY}.new {COPY}")
    check = topo.ssh(rest, "runuser -u slurm-web -- slurmrestd-access check", check=False)
    out = check.stdout.decode() if isinstance(check.stdout, bytes) else check.stdout
    assert check.returncode == 30, (check.returncode, out, check.stderr)
    assert "❌ connection failure" in out
    # The deploy puts the right copy back, restarts the agent, and proves it.
    reloads = hostcheck.reload_counts(topo)
    repair = run_deploy(topo.inventory_path)
    assert repair.returncode == 0, repair.output[-6000:]
    hostcheck.assert_systemd_settled(topo, reloads, most=0)  # no unit file changed
    assert hostcheck.agent_view(topo, rest)["accepted"] is True
    ok = topo.ssh(rest, "runuser -u slurm-web -- slurmrestd-access check")
    assert "✅ connection successful" in (ok.stdout.decode() if isinstance(ok.stdout, bytes)
                                          else ok.stdout)


def test_broken_slurm_conf_stops_the_deploy_and_is_left_as_it_was(deployed):
    topo, _, _ = deployed
    ctl = hosts_with(topo, "slurmctld")[0]
    conf = "/etc/slurm/slurm.conf"
    topo.ssh(ctl, f"cp -p {conf} /root/slurm.conf.good && "
                  f"sed -i 's|^AuthAltParameters=.*|AuthAltParameters=jwt_key=\"{KEY}|' {conf}")
    broken = hostcheck.stat(topo, ctl, conf)
    try:
        run = run_deploy(topo.inventory_path)
        assert run.returncode != 0
        assert ctl in run.output and "slurm.conf" in run.output
        assert hostcheck.stat(topo, ctl, conf) == broken
    finally:
        topo.ssh(ctl, f"mv -f /root/slurm.conf.good {conf}")


def test_an_agent_ini_the_agent_would_refuse_stops_the_deploy_before_any_change(deployed):
    # A [DEFAULT] key spills into every section: the real agent refuses to start with it.
    topo, _, _ = deployed
    rest = hosts_with(topo, "slurmrestd")[0]
    ini = "/etc/slurm-web/agent.ini"
    topo.ssh(rest, f"cp -p {ini} /root/agent.ini.good && "
                   f"printf '[DEFAULT]\\ndebug = yes\\n' >> {ini}")
    before = hostcheck.snapshot(topo)
    broken = hostcheck.stat(topo, rest, ini)
    try:
        run = run_deploy(topo.inventory_path)
        assert run.returncode != 0
        assert rest in run.output and "would refuse to start" in run.output
        assert "[DEFAULT] key `debug`" in run.output
        assert hostcheck.stat(topo, rest, ini) == broken
        assert hostcheck.snapshot(topo) == before
    finally:
        topo.ssh(rest, f"mv -f /root/agent.ini.good {ini}")


def test_an_agent_that_failed_for_want_of_its_key_ends_active_and_serving(deployed):
    # As the real agent on a fresh host: no key copy yet, so it exited at start.
    topo, _, _ = deployed
    for cluster in topo.clusters.values():
        before = AGENT_BEFORE[f"{topo.name}/{cluster.name}"]
        assert before["state"] == "failed", before
        assert "Unable to load JWT key for slurmrestd authentication" in before["journal"]
        rest = cluster.rest_host.name
        assert hostcheck.unit_state(topo, rest, cluster.agent_unit) == "active"
        status, jobs = hostcheck.agent_get(topo, rest, "/v6.0.0/jobs")
        assert status == 200 and isinstance(jobs, list), (status, jobs)


def test_agent_ini_reads_back_as_the_agent_reads_it(deployed, tmp_path):
    from tests.testbed.standin import slurm_web_agent_standin as standin

    topo, _, _ = deployed
    for cluster in topo.clusters.values():
        rest = cluster.rest_host.name
        ini = tmp_path / f"{rest}.ini"
        ini.write_text(hostcheck._text(topo.ssh(rest, "cat /etc/slurm-web/agent.ini")))
        settings = standin.load_settings(str(ini))
        assert settings["service"]["cluster"] == cluster.name
        wanted = {"uri": "unix:///run/slurmrestd/slurmrestd.socket", "auth": "jwt",
                  "jwt_mode": "auto", "jwt_key": COPY}
        assert {k: settings["slurmrestd"][k] for k in wanted} == wanted
        # ...and the running agent loaded exactly those.
        status = hostcheck.agent_view(topo, rest)
        assert (status["uri"], status["auth"], status["jwt_mode"], status["key_path"]) == (
            wanted["uri"], "jwt", "auto", COPY)


def test_the_agent_unit_is_found_with_or_without_agent_unit_in_the_inventory(deployed):
    # split leaves agent_unit out of its inventory, so the deploy's own detection ran for real.
    topo, _, _ = deployed
    inventory = topo.inventory_path.read_text().splitlines()
    for cluster in topo.clusters.values():
        rest = cluster.rest_host
        line = next(ln for ln in inventory if f"({rest.name!r}," in ln)
        assert ("'agent_unit'" in line) is rest.agent_unit_in_inventory
        assert rest.agent_unit_in_inventory is (topo.name != "split")
        assert hostcheck.unit_state(topo, rest.name, cluster.agent_unit) == "active"


def test_split_a_watchdog_left_on_the_agent_host_without_the_key_is_removed_once(testbed):
    """split-rest holds only the agent's copy (Slurm's key is on split-ctl and split-db): the
    deploy runs no watchdog there, and takes away one an older deploy installed, once."""
    topo = testbed.up("split")
    run = run_deploy(topo.inventory_path)  # deployed (or a no-change re-run)
    assert run.returncode == 0, run.output[-6000:]
    rest, watch = "split-rest", hostcheck.WATCH_UNIT
    assert hostcheck.watchdog(topo, rest) == hostcheck.WATCHDOG_ABSENT

    def report() -> tuple[int, dict]:
        done = subprocess.run([*report_cmd(), str(topo.inventory_path),
                               "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                              check=False)
        return done.returncode, json.loads(done.stdout)

    code, data = report()
    assert code == 0 and data["ok"] is True, data
    (row,) = [r for c in data["clusters"] for r in c["hosts"] if r["host"] == rest]
    assert row["watchdog"] == "not needed (no key here)"

    # What the deploy used to install on every agent host, by hand: its unit and watch.toml,
    # enabled and started. It has no key to follow: its status says key_missing (11).
    toml = render_watch_toml(Settings(cluster="split"))
    topo.ssh(rest, f"mkdir -p /etc/slurmrestd-access && printf %s {shlex.quote(toml)} > "
                   f"{hostcheck.WATCH_FILES[1]} && slurmrestd-access watch --print-unit > "
                   f"{hostcheck.WATCH_FILES[0]} && systemctl daemon-reload && "
                   f"systemctl enable --now {watch}")
    leftover = hostcheck.watchdog(topo, rest)
    assert (leftover["active"], leftover["status_exit"], leftover["status_reason"]) == (
        "active", 11, "key_missing"), leftover
    code, data = report()
    assert code == 1 and any(f"{rest}: {watch} is installed on an agent host that does not "
                             "hold Slurm's key" in p for p in data["clusters"][0]["problems"]), data

    # --dry names the removal and changes nothing.
    before = hostcheck.snapshot(topo)
    dry = run_deploy(topo.inventory_path, "deploys/slurmrestd_access.py", "--dry")
    assert dry.returncode == 0, dry.output[-4000:]
    changes = dry.planned_changes()
    assert len(changes) == 1 and changes[0].endswith(f"No {watch} on a host without Slurm's "
                                                     "key"), dry.output[-4000:]
    assert hostcheck.snapshot(topo) == before

    # The deploy removes it (stopped, disabled, files and state gone, one daemon-reload, no
    # other unit restarted); a second run changes nothing; the report is clean again.
    reloads = hostcheck.reload_counts(topo)
    starts = {h.name: hostcheck.unit_starts(topo, h.name) for h in topo.hosts}
    removed = run_deploy(topo.inventory_path)
    assert removed.returncode == 0, removed.output[-6000:]
    assert removed.totals()["changed"] >= 1
    assert hostcheck.watchdog(topo, rest) == hostcheck.WATCHDOG_ABSENT
    hostcheck.assert_systemd_settled(topo, reloads, most=1)
    after = {h.name: hostcheck.unit_starts(topo, h.name) for h in topo.hosts}
    for units in (starts[rest], after[rest]):
        units.pop(watch)
    assert after == starts
    again = run_deploy(topo.inventory_path)
    assert again.returncode == 0 and again.totals()["changed"] == 0, again.output[-4000:]
    code, data = report()
    assert code == 0 and data["ok"] is True, data


def test_the_installed_tool_surveys_each_host_as_the_shell_does(deployed):
    """The re-run's survey comes from the installed tool (`slurmrestd-access survey`): on every
    real host its lines are the shell survey's, line for line, so the deploy decides alike."""
    from slurmrestd_access.cluster import roles_of
    from slurmrestd_access.survey import native_survey_argv, survey_script_for

    topo, _, _ = deployed
    for h in topo.hosts:
        settings = Settings(cluster=h.cluster, agent_unit=h.agent_unit)
        shell = topo.ssh(h.name, survey_script_for(settings)).stdout.splitlines()
        argv = native_survey_argv(settings, roles_of(h.roles), check=False)
        native = topo.ssh(h.name, shlex.join(argv)).stdout.splitlines()
        assert native[:native.index("__slurmrestd_access_plan_begin")] == shell, h.name
        assert any(line.startswith("keyjson|") for line in shell), h.name  # the tool answered


def test_a_rerun_is_one_command_per_host_and_takes_the_surveys_check(deployed):
    topo, _, _ = deployed
    again = run_deploy(topo.inventory_path, "deploys/slurmrestd_access.py", "-v", "--debug")
    assert again.returncode == 0, again.output[-6000:]
    assert again.totals()["changed"] == 0, again.output[-4000:]
    commands = re.findall(r"Running command on (\S+?):", again.output)
    assert sorted(commands) == sorted(h.name for h in topo.hosts), commands
    for h in topo.hosts:
        if "slurmrestd" in h.roles:
            assert re.search(rf"\[{h.name}\] noop: connect check before the agent restart "
                             r"\(made with the survey; nothing changed since\): ✅",
                             again.output), again.output[-4000:]
