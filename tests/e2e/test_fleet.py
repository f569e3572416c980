"""End-to-end on the `fleet` topology: three clusters (alpha: one host, beta: ctl/db/rest,
gamma: one host with the uWSGI agent unit) deployed, rotated, broken and audited together.

The tests run in file order on one fresh fleet; each leaves the fleet deployed and healthy.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from tests.e2e import hostcheck
from tests.e2e.pyinfra_run import ROOT, DeployRun, report_cmd, rollout_cmd, run_deploy
from tests.e2e.test_deploy import COPY, KEY, assert_deployed

pytestmark = pytest.mark.e2e

ROTATE = "deploys/rotate_key.py"
DEPLOY = "deploys/slurmrestd_access.py"
SLURM_CONF = "/etc/slurm/slurm.conf"
AGENT_INI = "/etc/slurm-web/agent.ini"
WATCH = "slurmrestd-access-watch.service"


@pytest.fixture(scope="module")
def fleet(testbed):
    topo = testbed.up("fleet", fresh=True)
    reloads = hostcheck.reload_counts(topo)
    first = run_deploy(topo.inventory_path)
    assert first.returncode == 0, first.output[-6000:]
    # Right after the run, before any test does something of its own on the hosts.
    settled = hostcheck.systemd_problems(topo, reloads, most=1)
    return topo, first, settled


def summary(run) -> dict[str, str]:
    """The per-cluster summary printed at the end of a pyinfra run: {cluster: line}."""
    lines = run.output.splitlines()
    try:
        start = max(i for i, line in enumerate(lines) if "--> Per-cluster summary:" in line)
    except ValueError:
        raise AssertionError(f"no per-cluster summary:\n{run.output[-3000:]}") from None
    found = {}
    for line in lines[start + 1:]:
        m = re.match(r"^    (\S+): (.*)$", line)
        if not m:
            break
        found[m.group(1)] = m.group(2)
    return found


def key_hashes(topo) -> dict[str, str | None]:
    """SHA-256 of Slurm's key on every key host and of the agent copy on every agent host."""
    hashes = {}
    for h in topo.hosts:
        if {"slurmctld", "slurmdbd"} & set(h.roles):
            hashes[f"{h.name}:key"] = (hostcheck.stat(topo, h.name, KEY) or {}).get("sha256")
        if "slurmrestd" in h.roles:
            hashes[f"{h.name}:copy"] = (hostcheck.stat(topo, h.name, COPY) or {}).get("sha256")
    return hashes


snapshot = hostcheck.snapshot


def report(topo, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*report_cmd(), str(topo.inventory_path),
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)


def test_a_fresh_fleet_is_deployed_in_one_run(fleet):
    topo, first, settled = fleet
    assert summary(first) == {"alpha": "changed", "beta": "changed", "gamma": "changed"}
    assert_deployed(topo)
    assert settled == []  # no unit left with NeedDaemonReload=yes, one reload at most
    # gamma's agent runs under uWSGI (its unix socket): every worker serves with the copy.
    hostcheck.assert_every_worker_serves(topo, "gamma1", key_hashes(topo)["gamma1:copy"])


def test_a_second_run_changes_nothing(fleet):
    topo, _, _ = fleet
    before = snapshot(topo)
    reloads = hostcheck.reload_counts(topo)
    again = run_deploy(topo.inventory_path)
    assert again.returncode == 0, again.output[-6000:]
    assert summary(again) == {"alpha": "unchanged", "beta": "unchanged", "gamma": "unchanged"}
    assert again.totals()["changed"] == 0
    assert snapshot(topo) == before
    hostcheck.assert_systemd_settled(topo, reloads, most=0)


def test_the_report_of_a_healthy_fleet_is_ok_and_changes_nothing(fleet):
    topo, _, _ = fleet
    before = snapshot(topo)
    table = report(topo)
    assert table.returncode == 0, table.stdout + table.stderr
    for cluster in ("alpha", "beta", "gamma"):
        assert f"{cluster}: OK" in table.stdout
    data = json.loads(report(topo, "--json").stdout)
    assert data["ok"] is True
    rows = {r["host"]: r for c in data["clusters"] for r in c["hosts"]}
    assert rows["gamma1"]["agent"] == "slurm-web-agent-uwsgi active"
    # The watchdog where the agent host holds the key; beta-rest holds only the copy.
    assert {h: rows[h]["watchdog"] for h in ("alpha1", "beta-rest", "gamma1")} == {
        "alpha1": "active", "beta-rest": "not needed (no key here)", "gamma1": "active"}
    assert rows["beta-ctl"]["key"][:12] == rows["beta-rest"]["copy"][:12]
    assert snapshot(topo) == before  # read-only: same files, no unit restarted


def test_rotating_beta_leaves_alpha_and_gamma_untouched_and_is_proven(fleet):
    topo, _, _ = fleet
    before = key_hashes(topo)
    reloads = hostcheck.reload_counts(topo)
    # The test's own copies of the old key (the rotation keeps none once it is proven).
    old_key, old_copy = "/root/old-jwt.key", "/root/old-copy.key"
    topo.ssh("beta-ctl", f"install -m 0600 {KEY} {old_key}")
    topo.ssh("beta-rest", f"install -m 0600 {COPY} {old_copy}")
    run = run_deploy(topo.inventory_path, ROTATE, "--limit", "beta", "-vvv")
    assert run.returncode == 0, run.output[-6000:]
    hostcheck.assert_systemd_settled(topo, reloads, most=0)  # restarts only, no unit file
    assert summary(run) == {"beta": "changed"}
    # Neither key shows in the output, at pyinfra's highest verbosity.
    for path in (KEY, old_key):
        raw = topo.ssh("beta-ctl", f"base64 -w0 {path}; echo; od -An -tx1 -v {path} | "
                                   "tr -d ' \n'").stdout.split()
        assert len(raw) == 2 and all(len(r) >= 44 for r in raw)
        assert not any(r in run.output for r in raw)
    after = key_hashes(topo)
    for name in ("alpha1:key", "alpha1:copy", "gamma1:key", "gamma1:copy"):
        assert after[name] == before[name], name
    new = after["beta-ctl:key"]
    assert new != before["beta-ctl:key"]
    assert after["beta-db:key"] == new and after["beta-rest:copy"] == new
    # Proven, so no host keeps the previous key: not in root's state directory where the
    # rotation kept it, not beside the key. Tokens signed with it are refused.
    for name in ("beta-ctl", "beta-db", "beta-rest"):
        kept = topo.ssh(name, "ls -A /var/lib/slurmrestd-access/previous; "
                              "stat -c '%U %a' /var/lib/slurmrestd-access/previous; "
                              f"ls {KEY}.previous {COPY}.previous 2>&1 | grep -v 'No such'",
                        check=False).stdout.split()
        assert kept == ["root", "700"], (name, kept)
    old = topo.ssh("beta-rest", f"slurmrestd-access check --key {old_copy}", check=False)
    assert old.returncode == 30, old.stdout + old.stderr
    topo.ssh("beta-ctl", f"rm -f {old_key}")
    topo.ssh("beta-rest", f"rm -f {old_copy}")
    topo.ssh("beta-rest", "runuser -u slurm-web -- slurmrestd-access check")
    status = hostcheck.agent_view(topo, "beta-rest")
    assert status["accepted"] is True and status["key_sha256"] == new
    assert "previous key refused by slurmctld, new key accepted" in run.output


def test_a_rotation_whose_new_key_does_not_work_is_rolled_back(fleet):
    topo, _, _ = fleet
    before = key_hashes(topo)
    reloads = hostcheck.reload_counts(topo)
    # slurmctld is made to load a pinned copy of the current key: after the rotation it still
    # accepts the previous key, so the proof fails and the rotation must roll back.
    pinned = "/var/spool/slurm/pinned.key"
    topo.ssh("beta-ctl", f"cp -p {KEY} {pinned} && cp -p {SLURM_CONF} /root/slurm.conf.good && "
                         f"sed -i 's|jwt_key={KEY}|jwt_key={pinned}|' {SLURM_CONF}")
    try:
        run = run_deploy(topo.inventory_path, ROTATE, "--limit", "beta")
        assert run.returncode != 0
        line = summary(run)["beta"]
        assert line.startswith("failed (beta-ctl: rotation of cluster beta failed: a token "
                               "signed with the previous key is still accepted"), line
        assert "rolled back to the previous key" in line and "BUT" not in line
        assert key_hashes(topo) == before
        assert hostcheck.agent_view(topo, "beta-rest")["accepted"] is True
        hostcheck.assert_systemd_settled(topo, reloads, most=0)
    finally:
        topo.ssh("beta-ctl", f"mv -f /root/slurm.conf.good {SLURM_CONF} && rm -f {pinned} && "
                             "systemctl restart slurmctld && for i in $(seq 60); do "
                             "scontrol ping | grep -q 'is UP' && break; sleep 0.5; done")
    topo.ssh("beta-rest", "runuser -u slurm-web -- slurmrestd-access check")


def test_a_host_killed_mid_rotation_is_named_and_one_deploy_rerun_converges(fleet):
    topo, _, _ = fleet
    old = key_hashes(topo)["beta-ctl:key"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}
    rotation = subprocess.Popen(
        [sys.executable, "-m", "pyinfra", "-y", str(topo.inventory_path), ROTATE, "--limit",
         "beta", "--data", "restart_wait=15"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        try:
            # As soon as the controller holds the new key, beta-db loses its power.
            deadline = time.monotonic() + 300
            while (hostcheck.stat(topo, "beta-ctl", KEY) or {}).get("sha256") == old:
                assert rotation.poll() is None and time.monotonic() < deadline, "no new key"
                time.sleep(0.2)
            topo.kill("beta-db")
            output, _ = rotation.communicate(timeout=1200)
        finally:
            if rotation.poll() is None:
                rotation.kill()
                rotation.communicate()
        run = DeployRun(rotation.returncode, re.sub(r"\x1b\[[0-9;]*m", "", output), 0.0)
        assert run.returncode != 0
        line = summary(run)["beta"]
        assert line.startswith("failed (beta-ctl: rotation of cluster beta failed: "), line
        # The whole message (the summary line is cut): every reason names its host and step,
        # none is empty, and the hand work is spelt out.
        message = next(x for x in run.output.splitlines() if "BUT the rollback had problems" in x)
        assert "on beta-db: " in message, message
        assert ": ;" not in message and "failed: ;" not in message and ": ." not in message
        assert "Keys now: beta-ctl:/var/spool/slurm/jwt_hs256.key " in message, message
        assert "beta-db:/var/spool/slurm/jwt_hs256.key unknown" in message, message
        assert "slurmrestd_access.deploys.slurmrestd_access --limit beta" in message, message
    finally:
        # beta-db comes back on its own disk (as after a power failure).
        topo.boot("beta-db")
    # The one deploy re-run the message asks for converges the cluster.
    rerun = run_deploy(topo.inventory_path, DEPLOY, "--limit", "beta")
    assert rerun.returncode == 0, rerun.output[-6000:]
    final = report(topo, "--limit", "beta")
    assert final.returncode == 0 and "beta: OK" in final.stdout, final.stdout + final.stderr
    assert_deployed(topo)


def test_a_broken_cluster_fails_alone_and_is_named_in_the_summary(fleet):
    topo, _, _ = fleet
    # alpha and beta get work to do (agent.ini lost a setting the deploy manages; not the key
    # copy, which a running watchdog would put back first); gamma's slurm.conf gets a line that
    # makes slurmctld fail to start, and loses its AuthAlt lines so that the deploy changes
    # slurm.conf and restarts slurmctld.
    for host in ("alpha1", "beta-rest"):
        topo.ssh(host, f"sed -i '/^jwt_mode/d' {AGENT_INI} && grep -q '^jwt_key' {AGENT_INI}")
    # (An unknown parameter: slurmctld exits at once. A missing plugin would leave its
    # slurmscriptd behind, and systemd would wait 90 s to kill it before failing the restart.)
    topo.ssh("gamma1", f"cp -p {SLURM_CONF} /root/slurm.conf.good && sed -i '/^AuthAlt/d' "
                       f"{SLURM_CONF} && echo NoSuchParameter=1 >> {SLURM_CONF}")
    try:
        # Should slurmctld hang on its way down, do not wait the default 60 s for it.
        run = run_deploy(topo.inventory_path, DEPLOY, "--data", "restart_wait=15")
        assert run.returncode != 0
        lines = summary(run)
        assert lines["alpha"] == "changed" and lines["beta"] == "changed", lines
        assert lines["gamma"].startswith("failed (gamma1: "), lines
        assert "slurmctld" in lines["gamma"]
        for host in ("alpha1", "beta-rest"):
            assert hostcheck.agent_view(topo, host)["accepted"] is True
        # gamma stopped at the failed step: its agent was not restarted by this run.
        assert "[gamma1] " not in run.output.split("Restart the Slurm-web agent")[1].split(
            "-->")[0]
    finally:
        topo.ssh("gamma1", f"mv -f /root/slurm.conf.good {SLURM_CONF} && "
                           "systemctl restart slurmctld")
    reloads = hostcheck.reload_counts(topo)
    repair = run_deploy(topo.inventory_path, DEPLOY, "--limit", "gamma")
    assert repair.returncode == 0, repair.output[-6000:]
    assert hostcheck.agent_view(topo, "gamma1")["accepted"] is True
    hostcheck.assert_systemd_settled(topo, reloads, most=0)


def test_the_report_catches_a_wrong_copy_mode_and_keys_that_differ(fleet):
    topo, _, _ = fleet
    # A watchdog (when the deploy installs one) would repair the copy before the report looks.
    topo.ssh("alpha1", f"systemctl stop {WATCH} 2>/dev/null; chmod 0440 {COPY}")
    topo.ssh("beta-db", f"head -c 32 /dev/urandom > {KEY}.new && chown slurm:slurm {KEY}.new && "
                        f"chmod 0600 {KEY}.new && mv -f {KEY}.new {KEY}")
    before = snapshot(topo)
    bad = report(topo)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"the agent's copy {COPY} is slurm-web:slurm-web 0440, should be " \
           "slurm-web:slurm-web 0400" in bad.stdout
    assert re.search(r"Slurm's key differs between the cluster's hosts: beta-ctl \w{12}, "
                     r"beta-db \w{12}", bad.stdout), bad.stdout
    assert "gamma: OK" in bad.stdout
    # ...and the watchdog stopped where it belongs (alpha1 holds the key).
    assert f"alpha1: {WATCH} is inactive: a change of Slurm's key on this host would not " \
           "reach the agent" in bad.stdout
    data = json.loads(report(topo, "--json", "--limit", "beta").stdout)
    assert [c["cluster"] for c in data["clusters"]] == ["beta"] and data["ok"] is False
    assert snapshot(topo) == before
    # The deploy repairs both.
    try:
        repair = run_deploy(topo.inventory_path)
        assert repair.returncode == 0, repair.output[-6000:]
    finally:
        topo.ssh("alpha1", f"systemctl start {WATCH} 2>/dev/null; true")
    final = report(topo)
    assert final.returncode == 0, final.stdout


def test_a_failed_canary_leaves_the_other_clusters_untouched(fleet):
    topo, _, _ = fleet
    # gamma cannot take the deploy (preflight: slurmrestd would listen twice); alpha and beta
    # would have work to do.
    for host in ("alpha1", "beta-rest"):
        topo.ssh(host, f"sed -i '/^jwt_mode/d' {AGENT_INI}")
    topo.ssh("gamma1", "echo 'SLURMRESTD_LISTEN=unix:/run/slurmrestd/slurmrestd.socket' "
                       ">> /etc/default/slurmrestd")
    others = [h.name for h in topo.hosts if h.cluster != "gamma"]
    before = {h: hostcheck.stat(topo, h, AGENT_INI) for h in others}
    gamma_before = snapshot(topo, ["gamma1"])
    try:
        done = subprocess.run([*rollout_cmd(), str(topo.inventory_path),
                               "--canary", "gamma"], cwd=ROOT, capture_output=True, text=True,
                              timeout=600, check=False)
        out = done.stdout + done.stderr
        assert done.returncode == 3, out[-4000:]
        assert "a canary failed: the other clusters were NOT touched" in out
        assert "rest stage" not in out
        assert re.search(r"^    gamma: failed \(gamma1: not ready for the deploy", out, re.M), out
        assert {h: hostcheck.stat(topo, h, AGENT_INI) for h in others} == before
    finally:
        topo.ssh("gamma1", "sed -i '/^SLURMRESTD_LISTEN=/d' /etc/default/slurmrestd")
    done = subprocess.run([*rollout_cmd(), str(topo.inventory_path),
                           "--canary", "gamma"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, check=False)
    out = done.stdout
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    summary_part = out.split("--> Rollout summary:")[1]
    assert "alpha: changed" in summary_part and "beta: changed" in summary_part
    assert "gamma: unchanged" in summary_part
    # The second stage really ran on alpha and beta: agent.ini got its setting back and the
    # agents run with it; the canary gamma was left as the first stage found it.
    for host in ("alpha1", "beta-rest"):
        assert hostcheck.grep_lines(topo, host, AGENT_INI, "^jwt_mode") == ["jwt_mode = auto"]
        assert hostcheck.agent_view(topo, host)["accepted"] is True
    assert snapshot(topo, ["gamma1"]) == gamma_before
