"""End-to-end on the Slurm releases Debian ships besides trixie's 24.11 (issue 9).

- bullseye (Slurm 20.11, Python 3.9) and bookworm (22.05, 3.11): Slurm-web's agent cannot use
  them, so the deploy must stop at preflight with the release, the minimum and why, exit
  non-zero, and leave slurm.conf, slurmdbd.conf and the slurmrestd drop-in directory byte for
  byte as they were, with no daemon restarted. On bullseye1 the host tool runs on Python 3.9.
- bookworm with `allow_unsupported_slurm: True` in host data: the deploy goes on, its checks
  speak for the API 22.05 serves (v0.0.38) and pass; a wrong agent copy is caught (exit 24,
  with why 22.05 cannot say 30).
- forky (Slurm 26.05, Python 3.14), split over a controller, an agent host and a compute-only
  host: deploy, check, rotation, the watchdog after it, the fleet report, and slurmd on the
  compute host surviving restarts and serving jobs after the deploy and after the rotation.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.e2e import hostcheck
from tests.e2e.pyinfra_run import ROOT, report_cmd, run_deploy

pytestmark = pytest.mark.e2e

WATCH = "slurmrestd-access-watch.service"
ROTATE = "deploys/rotate_key.py"
KEY = "/var/spool/slurm/jwt_hs256.key"
COPY = "/var/lib/slurm-web/slurmrestd.key"
# Everything the deploy would change first on a Slurm host, hashed (never printed: slurmdbd.conf
# holds the database password).
WATCHED = ("/etc/slurm/slurm.conf", "/etc/slurm/slurmdbd.conf",
           "/etc/systemd/system/slurmrestd.service.d", "/etc/slurm-web/agent.ini", KEY, COPY,
           "/etc/slurmrestd-access")
DAEMONS = ("slurmctld.service", "slurmdbd.service", "slurmd.service", "slurmrestd.service")


def fingerprint(topo, host: str) -> dict[str, str]:
    """sha256 of every file under WATCHED (with owner and mode), 'absent' for what is not there;
    and each daemon's last start time and PID (a restart changes them)."""
    paths = " ".join(WATCHED)
    script = (
        f"for p in {paths}; do if [ -e $p ]; then find $p -type f -print0 | sort -z | "
        "xargs -0 -r sh -c 'for f; do printf \"%s %s \" \"$f\" \"$(stat -c %U:%G:%a \"$f\")\"; "
        "sha256sum < \"$f\"; done' sh; else echo \"$p absent\"; fi; done; "
        "systemctl show -p Id,ActiveEnterTimestampMonotonic,MainPID " + " ".join(DAEMONS)
    )
    lines = topo.ssh(host, script).stdout.splitlines()
    return {line.split(" ", 1)[0]: line for line in lines if line.strip()} | {
        "units": "\n".join(line for line in lines if "=" in line)}


# --------------------------------------------------------------------- refused releases


@pytest.mark.parametrize(("name", "release"), [("bookworm", "22.05.8"), ("bullseye", "20.11.4")])
def test_old_slurm_is_refused_before_any_change(testbed, name, release):
    topo = testbed.up(name, fresh=True)
    host = f"{name}1"
    version = topo.ssh(host, "sinfo -V").stdout
    assert release in version, version
    before = fingerprint(topo, host)
    run = run_deploy(topo.inventory_path)
    tail = run.output[-4000:]
    assert run.returncode != 0, tail
    for text in (f"Slurm {release} is not supported: the minimum is Slurm 24.05",
                 "REST API v0.0.41", "allow_unsupported_slurm",
                 f"{name}: failed ({host}: "):  # the per-cluster summary
        assert text in run.output, tail
    after = fingerprint(topo, host)
    assert after == before
    assert "/etc/systemd/system/slurmrestd.service.d absent" in after.values()
    assert f"{KEY} absent" in after.values()


def test_host_tool_runs_on_bullseyes_python_39(testbed):
    topo = testbed.up("bullseye")
    # The refused deploy above installed it; install it again if this test runs alone.
    if topo.ssh("bullseye1", "test -x /usr/local/bin/slurmrestd-access", check=False).returncode:
        run_deploy(topo.inventory_path)
    py = topo.ssh("bullseye1", "/opt/slurmrestd-access/current/bin/python3 -V").stdout
    assert py.startswith("Python 3.9."), py
    topo.ssh("bullseye1", "slurmrestd-access --help")
    # Every module imports, every command parses, on the host's 3.9 with the wheels fetched for
    # it (watchdog 6, structlog 25, tomli).
    topo.ssh("bullseye1", "/opt/slurmrestd-access/current/bin/python3 -c '"
             "import importlib, pkgutil, watchdog_daemon as w\n"
             "names = [m.name for m in pkgutil.walk_packages(w.__path__, \"watchdog_daemon.\")]\n"
             "[importlib.import_module(n) for n in names]\n"
             "assert len(names) > 30, names'")
    for command in ("check", "watch", "status", "key", "conf", "agent-ini", "preflight", "plan"):
        topo.ssh("bullseye1", f"slurmrestd-access {command} --help >/dev/null")
    # Parsing TOML (tomli on 3.9) and the tool's own preflight, which refuses Slurm 20.11.
    topo.ssh("bullseye1", "printf 'reconcile_interval = 45\\n' > /tmp/w.toml && "
             "/opt/slurmrestd-access/current/bin/python3 -c 'from watchdog_daemon.watch.config "
             "import load_watch_config as l; assert l(\"/tmp/w.toml\").reconcile_interval == 45'")
    # The agent stand-in runs on the host's python3 (3.9) too: with no key copy (the deploy was
    # refused) it stops with its own message, as Slurm-web's agent does, not with a traceback.
    agent = topo.ssh("bullseye1", "python3 -V; journalctl -u slurm-web-agent.service -o cat "
                     "--no-pager").stdout
    assert agent.startswith("Python 3.9.") and "[CRITICAL]" in agent, agent
    assert "Traceback" not in agent, agent
    pre = topo.ssh("bullseye1", "slurmrestd-access preflight --json", check=False)
    assert pre.returncode == 41, pre.stdout + pre.stderr
    assert "Slurm 20.11.4 is not supported" in pre.stdout
    allowed = topo.ssh("bullseye1", "slurmrestd-access preflight --json --allow-unsupported-slurm",
                       check=False)
    assert "not supported" not in allowed.stdout


# --------------------------------------------------------------------- opting in on 22.05


@pytest.fixture(scope="module")
def bookworm_opted_in(testbed, tmp_path_factory):
    """bookworm1 deployed with `allow_unsupported_slurm: True` in its host data (the testbed's
    inventory, with that one setting added as a site would write it)."""
    topo = testbed.up("bookworm", fresh=True)
    inventory = tmp_path_factory.mktemp("optin") / "bookworm_optin.py"
    inventory.write_text(topo.inventory_path.read_text() + "\nbookworm = [(name, {**data, "
                         "'allow_unsupported_slurm': True}) for name, data in bookworm]\n")
    run = run_deploy(inventory, "deploys/slurmrestd_access.py", "-v")
    assert run.returncode == 0, run.output[-6000:]
    return topo, inventory, run


def test_bookworm_opt_in_deploys_and_the_check_speaks_for_2205s_api(bookworm_opted_in):
    topo, inventory, run = bookworm_opted_in
    for text in ("Slurm 22.05.8 is older than 24.05, which Slurm-web's agent needs; going on "
                 "because allow_unsupported_slurm is set; 22.05 serves v0.0.36 to v0.0.38",
                 # bookworm1's agent is Slurm-web 6.0: its connect-check's words.
                 "connect check before the agent restart: ✅ connection successful! "
                 "(cluster: bookworm, slurm: 22.05.8, api: 0.0.38)"):
        assert text in run.output, run.output[-4000:]
    # JWT is set up as on a supported release; the check with the newest API 22.05 serves
    # (v0.0.38), slurmctld and slurmdbd accepting the agent's token, the random key refused.
    assert hostcheck.grep_lines(topo, "bookworm1", "/etc/slurm/slurm.conf",
                                "^authalttypes") == ["AuthAltTypes=auth/jwt"]
    assert hostcheck.stat(topo, "bookworm1", COPY)["sha256"] == \
        hostcheck.stat(topo, "bookworm1", KEY)["sha256"]
    done = topo.ssh("bookworm1", "slurmrestd-access check --as-user slurm-web "
                    "--any-api-version --json")
    result = json.loads(done.stdout)
    assert (result["ok"], result["slurm"], result["api_version"], result["accounting"]) == (
        True, "22.05.8", "0.0.38", True), result
    # Without the opt-in's --any-api-version the check fails as the agent would: the 6.0
    # agent's own versions are not served by 22.05 (slurmweb_incompatible, both named).
    agent = topo.ssh("bookworm1", "slurmrestd-access check --as-user slurm-web", check=False)
    assert agent.returncode == 25, agent.stdout + agent.stderr
    assert ("Slurm-web 6.0.0 discovers its REST API among 0.0.44, 0.0.43, 0.0.42, 0.0.41; "
            "slurmrestd on /run/slurmrestd/slurmrestd.socket serves 0.0.36 to 0.0.38") in \
        agent.stderr, agent.stderr
    again = run_deploy(inventory)
    assert again.returncode == 0 and again.totals()["changed"] == 0, again.output[-4000:]


def test_bookworm_a_wrong_copy_is_caught_with_2205s_answer_then_repaired(bookworm_opted_in):
    """22.05 drops the reason of a failed call (HTTP 500 "Unspecified error" [-1], for a refused
    token as for a stopped slurmctld): the check says slurmrestd_error (24), not 30, and why."""
    topo, inventory, _ = bookworm_opted_in
    topo.ssh("bookworm1", f"systemctl stop {WATCH}; head -c 32 /dev/urandom > {COPY}.new && "
                          f"chown slurm-web:slurm-web {COPY}.new && chmod 0400 {COPY}.new && "
                          f"mv -f {COPY}.new {COPY}")
    try:
        done = topo.ssh("bookworm1", "slurmrestd-access check --as-user slurm-web "
                        "--any-api-version --json", check=False)
        result = json.loads(done.stdout)
        assert done.returncode == 24 and result["reason"] == "slurmrestd_error", result
        assert result["message"] == ("/slurm/v0.0.38/diag: HTTP 500: Unspecified error: "
                                     "request failed [-1]"), result
        assert "answer alike" in result["hint"], result
        # slurmctld itself did refuse the token: its log says so.
        log = topo.ssh("bookworm1", "journalctl -u slurmctld --since -2min -o cat --no-pager")
        assert "REQUEST_STATS_INFO has authentication error" in log.stdout, log.stdout[-2000:]
        repair = run_deploy(inventory)
        assert repair.returncode == 0, repair.output[-6000:]
    finally:
        topo.ssh("bookworm1", f"systemctl start {WATCH}")
    # Repaired: the check passes again. 22.05's slurmrestd once reset the connection of the
    # first check right after the deploy (exit 24, "Connection reset by peer", seen in one
    # newcomer rehearsal): a passing check within a few seconds is what proves the repair.
    for attempt in range(4):
        again = topo.ssh("bookworm1", "slurmrestd-access check --as-user slurm-web "
                                      "--any-api-version", check=False)
        if again.returncode == 0 or attempt == 3:
            break
        time.sleep(2)
    assert again.returncode == 0, again.stdout + again.stderr


# --------------------------------------------------------------------- Slurm 26.05


def node_serves_jobs(topo, node: str = "forky-cn", timeout: float = 90) -> None:
    """The controller sees the node responding (idle, no '*'), and a job runs on it."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = topo.ssh("forky-ctl", f"sinfo -h -n {node} -o %t", check=False).stdout.strip()
        if state == "idle":
            break
        time.sleep(1)
    assert state == "idle", topo.ssh("forky-ctl", f"scontrol show node {node}").stdout
    job = topo.ssh("forky-ctl", f"timeout 60 srun -N1 -w {node} -t 1 hostname")
    assert job.stdout.strip() == node


def restart_slurmd(topo) -> None:
    """slurmd 26.05 reads AuthAltTypes=auth/jwt from slurm.conf; forky-cn has no key file."""
    topo.ssh("forky-cn", f"test ! -e {KEY}")
    since = topo.ssh("forky-cn", "date +%s").stdout.strip()
    topo.ssh("forky-cn", "systemctl restart slurmd.service && sleep 2 && "
             "systemctl is-active -q slurmd.service")
    node_serves_jobs(topo)
    log = topo.ssh("forky-cn", f"journalctl -u slurmd --since @{since} -o cat --no-pager").stdout
    assert "fatal" not in log.lower(), log


@pytest.fixture(scope="module")
def forky_refused(testbed):
    """A fresh forky whose agent host runs Slurm-web 5.2 (REST API 0.0.41 only, which 26.05 no
    longer serves): the deploy, what it left, and the hosts before it. Then back to 6.0."""
    topo = testbed.up("forky", fresh=True)
    hosts = ("forky-ctl", "forky-rest", "forky-cn")
    with topo.slurmweb_release("forky-rest", "5.2"):
        before = {h: fingerprint(topo, h) for h in hosts}
        run = run_deploy(topo.inventory_path, "deploys/slurmrestd_access.py")
        after = {h: fingerprint(topo, h) for h in hosts}
    return run, before, after


@pytest.fixture(scope="module")
def forky_deployed(testbed, forky_refused):
    topo = testbed.up("forky", fresh=True)
    assert "26.05" in topo.ssh("forky-ctl", "sinfo -V").stdout
    run = run_deploy(topo.inventory_path, "deploys/slurmrestd_access.py", "-v")
    assert run.returncode == 0, run.output[-6000:]
    return topo, run


def test_forky_refuses_a_5_2_agent_before_any_change(forky_refused):
    run, before, after = forky_refused
    assert run.returncode != 0
    assert ("Slurm-web 5.2.0 uses REST API 0.0.41 only; Slurm 26.05 serves 0.0.42 to 0.0.45: "
            "the agent cannot work with it. Nothing was changed — install Slurm-web 6.x; run it "
            "with Slurm 24.05 to 25.11") in run.output, run.output[-6000:]
    assert "forky: failed (forky-rest: " in run.output  # the per-cluster summary
    # slurm.conf, slurmdbd.conf, the drop-in directory, the keys, agent.ini, watch.toml: as they
    # were, on every host of the cluster (the agent host's refusal stops the cluster), and no
    # daemon restarted. (Only the host tool was installed, in its own prefix: the agent host's
    # preflight is the tool's.)
    assert after == before
    assert "/etc/systemd/system/slurmrestd.service.d absent" in after["forky-rest"].values()


def test_forky_check_of_a_5_2_agent_exits_25_naming_both(forky_deployed):
    topo, _ = forky_deployed
    with topo.slurmweb_release("forky-rest", "5.2"):
        res = topo.ssh("forky-rest", "slurmrestd-access check --as-user slurm-web --json",
                       check=False)
    data = json.loads(res.stdout)
    assert (res.returncode, data["reason"]) == (25, "slurmweb_incompatible"), data
    assert "Slurm-web 5.2.0 uses REST API 0.0.41 only" in data["message"]
    assert "serves 0.0.42 to 0.0.45" in data["message"], data["message"]
    assert hostcheck.agent_view(topo, "forky-rest")["accepted"] is True  # 6.0 again


def test_forky_deploy_proves_slurm_2605(forky_deployed):
    topo, run = forky_deployed
    # forky-rest's agent is Slurm-web 6.0: it discovers 0.0.44, the newest it knows that
    # 26.05 serves, and the check says so in 6.0's words.
    line = "✅ connection successful! (cluster: forky, slurm: 26.05.5, api: 0.0.44)"
    for text in (line, "preflight passed: Slurm 26.05"):
        assert text in run.output, run.output[-4000:]
    check = topo.ssh("forky-rest", "slurmrestd-access check --as-user slurm-web")
    assert check.stdout.strip() == line, check.stdout
    assert hostcheck.agent_view(topo, "forky-rest")["accepted"] is True
    # The compute-only host got the AuthAlt* lines (same slurm.conf everywhere) but no key.
    assert hostcheck.grep_lines(topo, "forky-cn", "/etc/slurm/slurm.conf", "^AuthAltTypes=")
    assert hostcheck.stat(topo, "forky-cn", KEY) is None
    again = run_deploy(topo.inventory_path)
    assert again.returncode == 0 and again.totals()["changed"] == 0, again.output[-4000:]


def test_forky_compute_slurmd_survives_a_restart_after_the_deploy(forky_deployed):
    topo, _ = forky_deployed
    restart_slurmd(topo)


def test_forky_rotation_then_watchdog_report_and_slurmd(forky_deployed):
    topo, _ = forky_deployed
    old = hostcheck.stat(topo, "forky-ctl", KEY)["sha256"]
    run = run_deploy(topo.inventory_path, ROTATE)
    assert run.returncode == 0, run.output[-6000:]
    new = hostcheck.stat(topo, "forky-ctl", KEY)["sha256"]
    assert new != old
    assert hostcheck.stat(topo, "forky-rest", COPY)["sha256"] == new
    status = hostcheck.agent_view(topo, "forky-rest")
    assert status["accepted"] is True and status["key_sha256"] == new
    # Slurm's key lives on forky-ctl only: the agent host runs no watchdog, which would have no
    # key to follow (it said key_missing for ever); the rotation itself synced the copy and
    # restarted the agent (above).
    for host in ("forky-rest", "forky-ctl", "forky-cn"):
        assert hostcheck.watchdog(topo, host) == hostcheck.WATCHDOG_ABSENT, host
    restart_slurmd(topo)
    report = subprocess.run([*report_cmd(), str(topo.inventory_path),
                             "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            check=False)
    assert report.returncode == 0, report.stdout + report.stderr
    data = json.loads(report.stdout)
    assert data["ok"] is True and [c["cluster"] for c in data["clusters"]] == ["forky"]
    rows = {r["host"]: r for r in data["clusters"][0]["hosts"]}
    assert rows["forky-rest"]["watchdog"] == "not needed (no key here)"
