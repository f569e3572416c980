"""Configless Slurm (issue 22), on the `configless` topology (trixie, Slurm 24.11):

- cl-ctl: slurmctld and slurmdbd, `SlurmctldParameters=enable_configless`, the only slurm.conf;
- cl-rest: slurmrestd and the agent, `sackd --conf-server cl-ctl`, no /etc/slurm/slurm.conf;
- cl-cn: slurmd with `--conf-server cl-ctl`, no /etc/slurm/slurm.conf.

The deploy merges the AuthAlt lines into cl-ctl's file only, brings the copies to the other
hosts (`scontrol reconfigure`), never creates a slurm.conf on them, and starts slurmrestd on
cl-rest despite the vendor unit's ConditionPathExists=/etc/slurm/slurm.conf.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.e2e import hostcheck
from tests.e2e.pyinfra_run import ROOT, report_cmd, run_deploy

pytestmark = pytest.mark.e2e

ROTATE = "deploys/rotate_key.py"
KEY = "/var/spool/slurm/jwt_hs256.key"
COPY = "/var/lib/slurm-web/slurmrestd.key"
CONF = "/etc/slurm/slurm.conf"
CACHE = "/run/slurm/conf/slurm.conf"
CLIENTS = ("cl-rest", "cl-cn")
LINE = "✅ connection successful! (cluster: configless, slurm: 24.11.5, api: 0.0.42)"


def assert_no_slurm_conf_on_clients(topo) -> None:
    for name in CLIENTS:
        res = topo.ssh(name, f"ls {CONF}", check=False)
        assert res.returncode != 0, f"{name}: {CONF} appeared"


def copies_follow_the_controller(topo, wait: float = 10) -> str:
    """The controller's slurm.conf hash, once both clients' copies have it (sackd and slurmd
    rewrite them within a second of `scontrol reconfigure`, measured)."""
    want = hostcheck.stat(topo, "cl-ctl", CONF)["sha256"]
    deadline = time.monotonic() + wait
    while True:
        copies = {n: (hostcheck.stat(topo, n, CACHE) or {}).get("sha256") for n in CLIENTS}
        if all(sha == want for sha in copies.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert copies == {n: want for n in CLIENTS}, (want, copies)
    return want


def job_runs_on_the_compute_node(topo) -> None:
    out = topo.ssh("cl-ctl", "timeout 90 sbatch --wait -w cl-cn -o /dev/null --wrap hostname "
                   "| awk '{print $4}'", timeout=120).stdout.strip()
    state = topo.ssh("cl-ctl", f"scontrol show job {out} | grep -o 'JobState=[A-Z]*'",
                     check=False).stdout.strip()
    assert state == "JobState=COMPLETED", (out, state)


@pytest.fixture(scope="module")
def configless_deployed(testbed):
    topo = testbed.up("configless", fresh=True)
    assert_no_slurm_conf_on_clients(topo)
    for name in CLIENTS:
        assert hostcheck.stat(topo, name, CACHE) is not None, name
    dry = run_deploy(topo.inventory_path, "deploys/slurmrestd_access.py", "--dry")
    assert dry.returncode == 0, dry.output[-6000:]
    run = run_deploy(topo.inventory_path, "deploys/slurmrestd_access.py", "-v")
    assert run.returncode == 0, run.output[-6000:]
    return topo, run, dry


def test_a_dry_first_deploy_shows_the_merge_on_the_controller_and_the_reconfigure(
        configless_deployed):
    _, _, dry = configless_deployed
    rows = {line.split("|", 1)[1].split("  ")[0].strip(): line
            for line in dry.output.splitlines() if line.strip().startswith("slurmrestd access |")}
    assert "1 (cl-ctl)" in rows["JWT settings in /etc/slurm/slurm.conf"], dry.output[-4000:]
    assert "1 (cl-ctl)" in rows["Configless hosts' copies of slurm.conf"], dry.output[-4000:]
    assert "1 (cl-rest)" in rows["slurmrestd drop-in"]


def test_first_deploy_merges_on_the_controller_only_and_the_copies_follow(configless_deployed):
    topo, run, _ = configless_deployed
    assert ("configless: Slurm reads /run/slurm/conf/slurm.conf, kept by sackd.service"
            in run.output), run.output[-6000:]
    assert_no_slurm_conf_on_clients(topo)
    assert hostcheck.grep_lines(topo, "cl-ctl", CONF, "^AuthAlt") == [
        "AuthAltTypes=auth/jwt", f"AuthAltParameters=jwt_key={KEY}"]
    copies_follow_the_controller(topo)
    assert "configless hosts to bring slurm.conf to: cl-rest, cl-cn" in run.output
    for name in CLIENTS:
        assert hostcheck.grep_lines(topo, name, CACHE, "^AuthAltTypes=") == [
            "AuthAltTypes=auth/jwt"], name
        # Only slurmctld and slurmdbd load the key (measured): none was put here.
        assert hostcheck.stat(topo, name, KEY) is None, name


def test_slurmrestd_runs_on_the_configless_host_and_restarts(configless_deployed):
    topo, run, _ = configless_deployed
    assert LINE in run.output, run.output[-4000:]
    # Debian's unit would skip a (re)start for want of /etc/slurm/slurm.conf: the drop-in
    # clears that condition, so a restart by hand starts it again.
    topo.ssh("cl-rest", "systemctl restart slurmrestd")
    assert hostcheck.unit_state(topo, "cl-rest", "slurmrestd.service") == "active"
    check = topo.ssh("cl-rest", "slurmrestd-access check --as-user slurm-web")
    assert check.stdout.strip() == LINE, check.stdout
    view = hostcheck.agent_view(topo, "cl-rest")
    # accounting: read, as Slurm reads it here, from the copy of the controller's file.
    assert view["accepted"] is True and view["accounting"] is True, view


def test_jobs_run_after_the_deploy(configless_deployed):
    topo, _, _ = configless_deployed
    job_runs_on_the_compute_node(topo)


def test_dry_rerun_plans_nothing_and_reruns_change_nothing(configless_deployed):
    topo, _, _ = configless_deployed
    dry = run_deploy(topo.inventory_path, "deploys/slurmrestd_access.py", "--dry")
    assert dry.returncode == 0 and dry.planned_changes() == [], dry.output[-4000:]
    again = run_deploy(topo.inventory_path)
    assert again.returncode == 0 and again.totals()["changed"] == 0, again.output[-4000:]
    # The same through sudo, as the unprivileged admin.
    sudo = run_deploy(topo.sudo_inventory_path)
    assert sudo.returncode == 0 and sudo.totals()["changed"] == 0, sudo.output[-4000:]
    assert_no_slurm_conf_on_clients(topo)


def test_rotation_then_report_and_jobs(configless_deployed):
    topo, _, _ = configless_deployed
    old = hostcheck.stat(topo, "cl-ctl", KEY)["sha256"]
    run = run_deploy(topo.inventory_path, ROTATE)
    assert run.returncode == 0, run.output[-6000:]
    new = hostcheck.stat(topo, "cl-ctl", KEY)["sha256"]
    assert new != old
    assert hostcheck.stat(topo, "cl-rest", COPY)["sha256"] == new
    view = hostcheck.agent_view(topo, "cl-rest")
    assert view["accepted"] is True and view["key_sha256"] == new, view
    check = topo.ssh("cl-rest", "slurmrestd-access check --as-user slurm-web")
    assert check.stdout.strip() == LINE, check.stdout
    assert_no_slurm_conf_on_clients(topo)
    job_runs_on_the_compute_node(topo)
    report = subprocess.run([*report_cmd(), str(topo.inventory_path), "--json"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, check=False)
    assert report.returncode == 0, report.stdout + report.stderr
    data = json.loads(report.stdout)
    assert data["ok"] is True, data
    rows = {r["host"]: r for r in data["clusters"][0]["hosts"]}
    # The AuthAlt lines as each host's Slurm reads them: cl-rest's and cl-cn's are the copy of
    # cl-ctl's file (compared by hash, not read as root in slurm's directory).
    assert {h: rows[h]["authalt"] for h in rows} == {
        "cl-ctl": "present", "cl-rest": "copy", "cl-cn": "copy"}, rows
    assert rows["cl-rest"]["dropin"] == "ok" and rows["cl-rest"]["slurmrestd"] == "active"


def test_a_host_with_no_configuration_at_all_is_refused_before_any_change(configless_deployed):
    topo, _, _ = configless_deployed
    before = hostcheck.snapshot(topo)
    # sackd stopped: its runtime directory, and the copy in it, are gone (measured).
    topo.ssh("cl-rest", "systemctl stop sackd && ! test -e /run/slurm/conf/slurm.conf")
    try:
        run = run_deploy(topo.inventory_path)
        assert run.returncode != 0
        assert ("/etc/slurm/slurm.conf is missing and no configuration was fetched from a "
                "controller (/run/slurm/conf/slurm.conf does not exist): this host needs its "
                "own slurm.conf, or, on a configless cluster, sackd (or a configless slurmd) "
                "running with --conf-server CONTROLLER") in run.output, run.output[-4000:]
        assert "configless: failed (cl-rest: " in run.output
        assert_no_slurm_conf_on_clients(topo)
    finally:
        topo.ssh("cl-rest", "systemctl start sackd")
    # No file changed, no daemon restarted, on any host (slurmrestd kept serving meanwhile).
    assert hostcheck.snapshot(topo) == before
    check = topo.ssh("cl-rest", "slurmrestd-access check --as-user slurm-web")
    assert check.stdout.strip() == LINE, check.stdout


def report(topo) -> dict:
    done = subprocess.run([*report_cmd(), str(topo.inventory_path), "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    return json.loads(done.stdout)


def test_a_stale_copy_is_reported_then_brought_by_the_next_deploy(configless_deployed):
    topo, _, _ = configless_deployed
    # An edit of the controller's file that no `scontrol reconfigure` followed.
    topo.ssh("cl-ctl", f"echo '# edited by hand' >> {CONF}")
    data = report(topo)
    rows = {r["host"]: r for r in data["clusters"][0]["hosts"]}
    assert data["ok"] is False
    assert {h: rows[h]["authalt"] for h in CLIENTS} == {h: "STALE copy" for h in CLIENTS}
    # The deploy has nothing to merge, but the copies differ: it reconfigures, once.
    run = run_deploy(topo.inventory_path, "deploys/slurmrestd_access.py", "-v")
    assert run.returncode == 0, run.output[-4000:]
    assert "configless hosts to bring slurm.conf to: cl-rest, cl-cn" in run.output
    copies_follow_the_controller(topo)
    assert report(topo)["ok"] is True
    again = run_deploy(topo.inventory_path)
    assert again.returncode == 0 and again.totals()["changed"] == 0, again.output[-4000:]
