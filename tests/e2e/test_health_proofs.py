"""End-to-end: what says "healthy" proves it, on a deployed host (issue 20).

- The watchdog's `status` is 0 only on a recent proof: a stopped agent unit, a stopped
  slurmrestd, or slurmdbd on another key each make it non-zero within `health_interval` (5 s
  here, from the deploy's `watch_health_interval`) plus 5 s, naming what is wrong; each repair
  brings it back to 0.
- The connect check reads slurm.conf as slurmctld does: accounting set in an `Include`d file is
  accounting all the same, so with slurmdbd restarted on another key the check says slurmdbd
  refuses the agent's token (exit 31), where it used to read only the top of slurm.conf, skip
  slurmdbd and pass. The watchdog reads it the same way.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.pyinfra_run import run_deploy

pytestmark = pytest.mark.e2e

HOST = "hpc1"
CHECK = "slurmrestd-access check --as-user slurm-web"
OTHER_KEY = "/var/spool/slurm/other-for-slurmdbd.key"
HEALTH_INTERVAL = 5
AGENT = "slurm-web-agent.service"
DBD_LISTENS = ("for i in $(seq 60); do ss -Hltn 'sport = :6819' | grep -q . && exit 0; "
               "sleep 0.5; done; exit 1")


@pytest.fixture(scope="module")
def deployed(testbed):
    topo = testbed.up("single", fresh=True)
    run = run_deploy(topo.inventory_path, "deploys/slurmrestd_access.py",
                     "--data", f"watch_health_interval={HEALTH_INTERVAL}")
    assert run.returncode == 0, run.output[-6000:]
    topo.ssh(HOST, "cp -p /etc/slurm/slurm.conf /root/slurm.conf.orig && "
                   "cp -p /etc/slurm/slurmdbd.conf /root/slurmdbd.conf.orig")
    yield topo
    # As the deploy left it, for any story that reuses the host.
    topo.ssh(HOST, "cp -p /root/slurm.conf.orig /etc/slurm/slurm.conf && "
                   "cp -p /root/slurmdbd.conf.orig /etc/slurm/slurmdbd.conf && "
                   f"rm -f /etc/slurm/acct.conf {OTHER_KEY} && systemctl restart slurmdbd && "
                   f"{{ {DBD_LISTENS}; }}")


def status(topo) -> tuple[int, dict]:
    res = topo.ssh(HOST, "slurmrestd-access status --json", check=False)
    return res.returncode, json.loads(res.stdout or "{}")


def status_within(topo, want, seconds: float) -> tuple[float, int, dict]:
    """(seconds it took, code, state) once `want(code)` holds; fails after `seconds`."""
    start = time.monotonic()
    while True:
        code, state = status(topo)
        took = time.monotonic() - start
        if want(code):
            return took, code, state
        assert took < seconds, f"status still {code} after {took:.1f} s: {state}"
        time.sleep(0.5)


def test_after_the_deploy_status_is_0_on_a_fresh_proof(deployed):
    code, state = status(deployed)
    assert code == 0, state
    assert state["proof_reason"] == "ok" and state["proof_units"] == [AGENT]
    assert state["proof_age_seconds"] <= HEALTH_INTERVAL + 5


def test_a_stopped_agent_unit_makes_status_name_it_then_0_once_started(deployed):
    deployed.ssh(HOST, f"systemctl stop {AGENT}")
    try:
        _took, code, state = status_within(deployed, lambda c: c != 0, HEALTH_INTERVAL + 5)
        assert code == 54 and state["status_reason"] == "agent_unit_not_active", state
        assert AGENT in state["proof_message"]
    finally:
        deployed.ssh(HOST, f"systemctl start {AGENT}")
    status_within(deployed, lambda c: c == 0, HEALTH_INTERVAL + 5)


def test_a_stopped_slurmrestd_makes_status_non_zero_then_0_once_started(deployed):
    deployed.ssh(HOST, "systemctl stop slurmrestd")
    try:
        _took, code, state = status_within(deployed, lambda c: c != 0, HEALTH_INTERVAL + 5)
        assert code in (20, 22), state  # its socket is gone, or refuses connections
        assert "slurmrestd" in state["proof_message"] or "socket" in state["proof_message"]
    finally:
        deployed.ssh(HOST, "systemctl start slurmrestd")
    status_within(deployed, lambda c: c == 0, HEALTH_INTERVAL + 5)


def test_accounting_from_an_included_file_with_slurmdbd_on_another_key_is_31(deployed):
    # AccountingStorageType moves to an included file: the value slurmctld reads is the same.
    deployed.ssh(HOST, "set -e; cd /etc/slurm; grep -i '^AccountingStorageType' slurm.conf "
                       "> acct.conf; chmod 0644 acct.conf; "
                       "sed -i '/^AccountingStorageType/Id' slurm.conf; "
                       "echo 'Include acct.conf' >> slurm.conf; "
                       "! grep -qi '^AccountingStorageType' slurm.conf")
    ok = deployed.ssh(HOST, CHECK, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # slurmdbd now signs with another key than slurmctld and the agent's copy.
    deployed.ssh(HOST, f"set -e; head -c 32 /dev/urandom > {OTHER_KEY}; "
                       f"chown slurm:slurm {OTHER_KEY}; chmod 0600 {OTHER_KEY}; "
                       f"sed -i 's|^AuthAltParameters=jwt_key=.*|AuthAltParameters=jwt_key="
                       f"{OTHER_KEY}|' /etc/slurm/slurmdbd.conf; systemctl restart slurmdbd; "
                       f"{DBD_LISTENS}")
    refused = deployed.ssh(HOST, CHECK, check=False)
    assert refused.returncode == 31, refused.stdout + refused.stderr
    assert "slurmdbd" in refused.stderr
    # The watchdog reads slurm.conf the same way: its status names slurmdbd.
    _took, code, state = status_within(deployed, lambda c: c != 0, HEALTH_INTERVAL + 5)
    assert (code, state["status_reason"]) == (31, "refused_by_slurmdbd"), state
