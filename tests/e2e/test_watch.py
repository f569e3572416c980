"""End-to-end: the rotation watchdog under systemd on real Slurm hosts (testbed).

The deploy installs and starts `slurmrestd-access-watch.service`; these tests rotate Slurm's
key by rename, the way an administrator or a rotation tool does, and watch what happens.
"""

from __future__ import annotations

import json
import shlex
import time

import pytest

from tests.e2e import hostcheck
from tests.e2e.pyinfra_run import run_deploy

pytestmark = pytest.mark.e2e

KEY = "/var/spool/slurm/jwt_hs256.key"
COPY = "/var/lib/slurm-web/slurmrestd.key"
WATCH = "slurmrestd-access-watch.service"
ROTATE = (f"umask 077; head -c 32 /dev/urandom > {KEY}.rot && chown slurm:slurm {KEY}.rot && "
          f"mv -f {KEY}.rot {KEY}")


def agent_starts(topo, host: str, unit: str) -> int:
    """How many times the agent unit has been started since boot (journal, not guesses)."""
    out = topo.ssh(host, f"journalctl -b -u {unit} -o cat --no-pager | "
                   "grep -c '^Started ' || true").stdout
    return int(out.strip() or 0)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def watch_status(topo, host: str) -> dict:
    return json.loads(topo.ssh(host, "slurmrestd-access status", check=False).stdout or "{}")


def rotate_and_check(topo, host: str, unit: str) -> None:
    old_copy = hostcheck.stat(topo, host, COPY)
    starts = agent_starts(topo, host, unit)
    topo.ssh(host, ROTATE)
    new_key = hostcheck.stat(topo, host, KEY)["sha256"]
    assert new_key != old_copy["sha256"]
    # Slurm still runs with the old key: the watchdog waits, the agent keeps running untouched.
    wait_for(lambda: watch_status(topo, host).get("state") == "waiting_for_slurm", 30,
             "the watchdog to report it waits for Slurm to reload the key")
    time.sleep(3)
    assert agent_starts(topo, host, unit) == starts
    assert hostcheck.agent_view(topo, host)["accepted"] is True  # still on the old key
    # Slurm reloads the key (FACTS: reconfigure for slurmctld, restart for slurmdbd).
    topo.ssh(host, "systemctl restart slurmdbd && "
                   "for i in $(seq 60); do ss -Hltn 'sport = :6819' | grep -q . && break; "
                   "sleep 0.5; done; scontrol reconfigure")
    wait_for(lambda: (hostcheck.stat(topo, host, COPY) or {}).get("sha256") == new_key, 90,
             "the agent's copy to be synced to the new key")
    copy = hostcheck.stat(topo, host, COPY)
    assert (copy["owner"], copy["group"], copy["mode"]) == ("slurm-web", "slurm-web", 0o400)
    wait_for(lambda: agent_starts(topo, host, unit) == starts + 1, 60,
             "the agent to be restarted once")
    status = wait_for(lambda: (s := hostcheck.agent_view(topo, host))["accepted"] and s,
                      60, "the agent stand-in to report accepted")
    assert status["key_sha256"] == new_key
    time.sleep(3)
    assert agent_starts(topo, host, unit) == starts + 1  # exactly once


@pytest.fixture(scope="module")
def single_deployed(testbed):
    topo = testbed.up("single", fresh=True)
    reloads = hostcheck.reload_counts(topo)
    run = run_deploy(topo.inventory_path)
    assert run.returncode == 0, run.output[-6000:]
    topo.ssh("hpc1", f"systemctl is-active {WATCH}")
    hostcheck.assert_systemd_settled(topo, reloads, most=1)
    return topo


def test_rotation_syncs_only_after_slurm_accepts_then_restarts_the_agent_once(single_deployed):
    reloads = hostcheck.reload_counts(single_deployed)
    rotate_and_check(single_deployed, "hpc1", "slurm-web-agent.service")
    # The watchdog's actions (copy synced, agent restarted) need no daemon-reload either.
    hostcheck.assert_systemd_settled(single_deployed, reloads, most=0)


def test_killed_watchdog_comes_back_and_restarts_nothing(single_deployed):
    topo = single_deployed
    starts = agent_starts(topo, "hpc1", "slurm-web-agent.service")
    pid = topo.ssh("hpc1", f"systemctl show -p MainPID --value {WATCH}").stdout.strip()
    topo.ssh("hpc1", f"systemctl kill -s KILL {WATCH}")
    wait_for(lambda: topo.ssh("hpc1", f"systemctl show -p MainPID --value {WATCH}").stdout.strip()
             not in ("0", pid) and topo.ssh("hpc1", f"systemctl is-active {WATCH}",
                                            check=False).stdout.strip() == "active",
             60, "systemd to bring the watchdog back")
    time.sleep(5)
    assert agent_starts(topo, "hpc1", "slurm-web-agent.service") == starts
    assert hostcheck.agent_view(topo, "hpc1")["accepted"] is True


def test_redeploy_after_rotation_changes_nothing(single_deployed):
    before = hostcheck.snapshot(single_deployed)
    reloads = hostcheck.reload_counts(single_deployed)
    run = run_deploy(single_deployed.inventory_path)
    assert run.returncode == 0, run.output[-4000:]
    assert run.totals()["changed"] == 0, run.output[-4000:]
    # The rotated key, the copy the watchdog synced, the agent it restarted: all left alone.
    assert hostcheck.snapshot(single_deployed) == before
    hostcheck.assert_systemd_settled(single_deployed, reloads, most=0)


def test_rotation_on_the_uwsgi_agent_host(testbed):
    topo = testbed.up("fleet")
    run = run_deploy(topo.inventory_path, "deploys/slurmrestd_access.py", "--limit", "gamma")
    assert run.returncode == 0, run.output[-6000:]
    # The agent under uWSGI: five workers forked from the master that read the key copy.
    hostcheck.assert_every_worker_serves(topo, "gamma1",
                                         hostcheck.stat(topo, "gamma1", COPY)["sha256"])
    rotate_and_check(topo, "gamma1", "slurm-web-agent-uwsgi.service")
    # The watchdog's one restart of the unit gave every worker the new key, not only the one
    # agent_view happened to reach.
    new_key = hostcheck.stat(topo, "gamma1", KEY)["sha256"]
    assert hostcheck.stat(topo, "gamma1", COPY)["sha256"] == new_key
    hostcheck.assert_every_worker_serves(topo, "gamma1", new_key)


# -- issue 10: every rotation followed, the agent back within seconds, an honest status -------

RELOAD = ("systemctl restart slurmdbd && for i in $(seq 60); do ss -Hltn 'sport = :6819' | "
          "grep -q . && break; sleep 0.5; done; scontrol reconfigure")
# On the host: seconds from now until the agent runs with KEY_SHA and its data endpoints answer
# (/jobs from slurmctld, /accounts from slurmdbd).
AGENT_BACK = """
import json, sys, time, urllib.request as u
want, t0 = sys.argv[1], time.monotonic()
while time.monotonic() - t0 < 60:
    try:
        s = json.load(u.urlopen("http://127.0.0.1:5012/standin/status", timeout=5))
        if s.get("key_sha256") == want and all(
                u.urlopen("http://127.0.0.1:5012/v6.0.0/" + p, timeout=5).status == 200
                for p in ("jobs", "accounts")):
            print(round(time.monotonic() - t0, 3))
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.05)
sys.exit(1)
"""


def status_code(topo, host: str) -> tuple[int, dict]:
    res = topo.ssh(host, "slurmrestd-access status", check=False)
    return res.returncode, json.loads(res.stdout or "{}")


def test_six_rotations_in_a_row_each_followed_and_the_agent_serves_after_each(single_deployed):
    """Issue 10: the 4th rotation within 10 minutes was left on the old key (restart budget)."""
    topo, host, unit = single_deployed, "hpc1", "slurm-web-agent.service"
    for n in range(6):
        starts = agent_starts(topo, host, unit)
        topo.ssh(host, ROTATE)
        new_key = hostcheck.stat(topo, host, KEY)["sha256"]
        # Waiting for Slurm while Slurm still accepts the agent's copy: serving, status 0.
        code, state = wait_for(lambda: (s := status_code(topo, host))[1].get("state") ==
                               "waiting_for_slurm" and s[1].get("agent_key") == "accepted" and s,
                               30, f"rotation {n}: the watchdog waiting, agent serving")
        assert code == 0 and state["agent_serving"] is True, state
        back = topo.ssh(host, f"{RELOAD} && python3 -c {shlex.quote(AGENT_BACK)} {new_key}",
                        check=False)
        assert back.returncode == 0, f"rotation {n}: the agent did not come back: {back.stderr}"
        # Seconds from the end of `scontrol reconfigure` (SSH-free, on the host).
        assert float(back.stdout.strip()) < 3.0, (n, back.stdout)
        assert (hostcheck.stat(topo, host, COPY) or {}).get("sha256") == new_key
        wait_for(lambda: status_code(topo, host)[1].get("state") == "in_sync", 30,
                 f"rotation {n}: in sync")
        # In sync, then 0 once the restarted agent is proven (the next proof comes within a
        # second); meanwhile `status` may only say that proof is pending, never an old verdict.
        seen: list[tuple[int, str]] = []

        def proven(seen: list[tuple[int, str]] = seen) -> bool:
            code, state = status_code(topo, host)
            seen.append((code, state.get("status_reason")))
            return code == 0

        wait_for(proven, 10, f"rotation {n}: status 0 after the sync")
        assert set(seen[:-1]) <= {(50, "proof_pending")}, seen
        assert agent_starts(topo, host, unit) == starts + 1, f"rotation {n}: not one restart"


FAIL_DROPIN = "/run/systemd/system/slurm-web-agent.service.d/zz-test-fail.conf"


def test_agent_restart_failing_repeatedly_opens_the_circuit_and_status_says_so(single_deployed):
    topo, host, unit = single_deployed, "hpc1", "slurm-web-agent.service"
    topo.ssh(host, f"mkdir -p {FAIL_DROPIN.rsplit('/', 1)[0]} && printf '[Service]\\n"
                   f"ExecStartPre=/bin/false\\n' > {FAIL_DROPIN} && systemctl daemon-reload")
    try:
        topo.ssh(host, ROTATE)
        new_key = hostcheck.stat(topo, host, KEY)["sha256"]
        wait_for(lambda: status_code(topo, host)[1].get("agent_key") == "accepted", 30,
                 "the watchdog waiting for Slurm")
        topo.ssh(host, RELOAD)
        _code, state = wait_for(lambda: (s := status_code(topo, host))[0] == 52 and s, 90,
                               "status to exit 52 (circuit open)")
        assert state["circuit"] == "open" and state["agent_serving"] is False, state
        assert state["restart_pending"] == new_key[:12]
        assert (hostcheck.stat(topo, host, COPY) or {}).get("sha256") == new_key  # synced
        journal = topo.ssh(host, f"journalctl -u {WATCH} -o cat --no-pager | "
                                 "grep -c agent_restart_failed || true").stdout
        assert int(journal.strip() or 0) >= 3
    finally:
        topo.ssh(host, f"rm -f {FAIL_DROPIN} && systemctl daemon-reload && "
                       f"systemctl reset-failed {unit} || true")
    # Fixed by the administrator; a restart of the watchdog takes over the pending restart.
    topo.ssh(host, f"systemctl restart {WATCH}")
    wait_for(lambda: status_code(topo, host)[0] == 0, 60, "status 0 again")
    assert hostcheck.agent_view(topo, host)["key_sha256"] == new_key
    assert topo.ssh(host, "systemctl show -p NeedDaemonReload --value "
                          f"{unit} {WATCH}").stdout.split() == ["no", "no"]


def test_an_agent_that_crashed_for_want_of_its_key_is_revived_by_the_rotation_it_follows(
        single_deployed):
    """Issue 14: the real agent exits at start without its key copy; the watchdog must restart
    such an enabled-but-failed agent once the copy is right, not only a running one."""
    topo, host, unit = single_deployed, "hpc1", "slurm-web-agent.service"
    topo.ssh(host, f"systemctl stop {WATCH} && rm -f {COPY} && "
                   f"(systemctl restart {unit} || true)")
    wait_for(lambda: hostcheck.unit_state(topo, host, unit) == "failed", 30,
             "the agent to fail for want of its key copy")
    assert "Unable to load JWT key for slurmrestd" in hostcheck.journal(topo, host, unit)
    topo.ssh(host, f"{ROTATE} && {RELOAD}")
    new_key = hostcheck.stat(topo, host, KEY)["sha256"]
    topo.ssh(host, f"systemctl start {WATCH}")
    back = topo.ssh(host, f"python3 -c {shlex.quote(AGENT_BACK)} {new_key}", check=False)
    assert back.returncode == 0, f"the agent did not come back: {back.stderr}"
    assert hostcheck.unit_state(topo, host, unit) == "active"
    status, jobs = hostcheck.agent_get(topo, host, "/v6.0.0/jobs")
    assert status == 200 and isinstance(jobs, list)
    wait_for(lambda: status_code(topo, host)[0] == 0, 30, "status 0: in sync, agent serving")


# -- issue 21: local users cannot blind the root watchdog through its metrics port ----------

METRICS_PORT = 9812
# Run as `nobody` (any local user): hold N idle connections to the metrics port until killed.
FLOOD = """
import os, socket, sys, time, contextlib
held = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        s.connect(("127.0.0.1", int(sys.argv[2])))
    held.append(s)
print("held", len(held), flush=True)
time.sleep(600)
"""


def test_a_rotation_is_followed_while_2000_idle_connections_hold_the_metrics_port(
        single_deployed):
    topo, host, unit = single_deployed, "hpc1", "slurm-web-agent.service"
    conf = "/etc/slurmrestd-access/watch.toml"
    unit_path = f"/etc/systemd/system/{WATCH}"
    topo.ssh(host, f"cp -p {conf} /root/watch.toml.orig && cp -p {unit_path} /root/watch.unit.orig"
                   f" && echo 'metrics = \"127.0.0.1:{METRICS_PORT}\"' >> {conf} && "
                   f"slurmrestd-access watch --print-unit > {unit_path} && "
                   f"systemctl daemon-reload && systemctl restart {WATCH}")
    try:
        wait_for(lambda: status_code(topo, host)[0] == 0, 60, "status 0 with metrics on")
        flood = (f"ulimit -n 4096; setsid setpriv --reuid nobody --regid nogroup "
                 f"--clear-groups python3 -c {shlex.quote(FLOOD)} 2000 {METRICS_PORT} "
                 "< /dev/null > /run/flood.out 2>&1 & echo $! > /run/flood.pid; "
                 "for i in $(seq 100); do grep -q held /run/flood.out && exit 0; sleep 0.2; "
                 "done; cat /run/flood.out; exit 1")
        topo.ssh(host, flood)
        assert topo.ssh(host, "cat /run/flood.out").stdout.strip() == "held 2000"
        starts = agent_starts(topo, host, unit)
        topo.ssh(host, ROTATE)
        new_key = hostcheck.stat(topo, host, KEY)["sha256"]
        back = topo.ssh(host, f"{RELOAD} && python3 -c {shlex.quote(AGENT_BACK)} {new_key}",
                        check=False)
        assert back.returncode == 0, f"the agent did not come back: {back.stderr}"
        assert float(back.stdout.strip()) < 3.0, back.stdout  # as without the flood
        assert agent_starts(topo, host, unit) == starts + 1
        pid = topo.ssh(host, f"systemctl show -p MainPID --value {WATCH}").stdout.strip()
        fds = int(topo.ssh(host, f"ls /proc/{pid}/fd | wc -l").stdout.strip())
        assert fds < 64, fds
        wait_for(lambda: status_code(topo, host)[0] == 0, 30, "status 0 after the rotation")
    finally:
        topo.ssh(host, "kill $(cat /run/flood.pid) 2>/dev/null; pkill -u nobody python3; "
                       "rm -f /run/flood.*; "
                       f"cp -p /root/watch.toml.orig {conf} && cp -p /root/watch.unit.orig "
                       f"{unit_path} && systemctl daemon-reload && systemctl restart {WATCH}",
                 check=False)
