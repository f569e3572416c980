"""End-to-end: a host whose slurm.conf is not at /etc/slurm/slurm.conf (issue 20).

hpc1's Slurm configuration moves to /etc/slurm-llnl (Debian's old layout; any site path works
the same): its daemons are told with `SLURM_CONF` in systemd drop-ins, as a site does, and
/etc/slurm no longer exists. A deploy with `slurm_conf` and `slurmdbd_conf` in its host data
sets the host up, its connect check and the watchdog read that file, and with accounting (set
there) on and slurmdbd moved to another key, both say slurmdbd refuses (31): neither fell back
to the default path, where they would have found no slurm.conf and skipped slurmdbd.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e import hostcheck
from tests.e2e.pyinfra_run import run_deploy

pytestmark = pytest.mark.e2e

HOST = "hpc1"
CONF_DIR = "/etc/slurm-llnl"
SLURM_CONF = f"{CONF_DIR}/slurm.conf"
DBD_CONF = f"{CONF_DIR}/slurmdbd.conf"
OTHER_KEY = "/var/spool/slurm/other-for-slurmdbd.key"
DAEMONS = ("slurmctld", "slurmd", "slurmdbd", "slurmrestd")
WAIT_UP = ("for i in $(seq 120); do ss -Hltn 'sport = :6819' | grep -q . && "
           f"SLURM_CONF={SLURM_CONF} scontrol ping 2>/dev/null | grep -q UP && exit 0; "
           "sleep 0.5; done; exit 1")
# Where the site tells Slurm's daemons (and the stand-in, which reads slurm.conf only to grade
# accounting: the real agent does not read it) about the path. Debian's units start only where
# /etc/slurm/slurm.conf (slurmdbd: slurmdbd.conf) exists: a site moving them replaces that too.
MOVE = f"""set -e
systemctl stop slurmctld slurmd slurmdbd
mv /etc/slurm {CONF_DIR}
for unit in {' '.join(DAEMONS)}; do
  conf={SLURM_CONF}; [ $unit = slurmdbd ] && conf={DBD_CONF}
  mkdir -p /etc/systemd/system/$unit.service.d
  printf '[Unit]\\nConditionPathExists=\\nConditionPathExists=%s\\n[Service]\\n' "$conf" \\
    > /etc/systemd/system/$unit.service.d/site-conf.conf
  printf 'Environment=SLURM_CONF={SLURM_CONF}\\n' \\
    >> /etc/systemd/system/$unit.service.d/site-conf.conf
done
for unit in slurm-web-agent slurm-web-agent-uwsgi; do
  mkdir -p /etc/systemd/system/$unit.service.d
  printf '[Service]\\nEnvironment=STANDIN_SLURM_CONF={SLURM_CONF}\\n' \\
    > /etc/systemd/system/$unit.service.d/site-conf.conf
done
systemctl daemon-reload
systemctl start slurmdbd slurmctld slurmd
{WAIT_UP}
"""
CHECK = "slurmrestd-access check --as-user slurm-web"


@pytest.fixture(scope="module")
def moved(testbed):
    topo = testbed.up("single", fresh=True)
    topo.ssh(HOST, MOVE)
    run = run_deploy(topo.inventory_path, "deploys/slurmrestd_access.py",
                     "--data", f"slurm_conf={SLURM_CONF}", "--data", f"slurmdbd_conf={DBD_CONF}",
                     "--data", "watch_health_interval=5")
    assert run.returncode == 0, run.output[-6000:]
    yield topo, run
    # Back to the start state for whoever uses this topology next.
    testbed.up("single", fresh=True)


def test_the_deploy_sets_up_the_host_through_that_path(moved):
    topo, _run = moved
    assert topo.ssh(HOST, "test -e /etc/slurm", check=False).returncode != 0
    assert hostcheck.grep_lines(topo, HOST, SLURM_CONF, "^authalttypes") == [
        "AuthAltTypes=auth/jwt"]
    assert hostcheck.grep_lines(topo, HOST, DBD_CONF, "^authalttypes") == [
        "AuthAltTypes=auth/jwt"]
    watch_toml = hostcheck._text(topo.ssh(HOST, "cat /etc/slurmrestd-access/watch.toml"))
    assert f'slurm_conf = "{SLURM_CONF}"' in watch_toml
    view = hostcheck.agent_view(topo, HOST)
    assert view["accepted"] is True and view["accounting"] is True, view
    assert hostcheck.watchdog(topo, HOST) == hostcheck.WATCHDOG_HEALTHY


def test_check_and_watchdog_read_that_file_for_accounting(moved):
    topo, _run = moved
    topo.ssh(HOST, f"set -e; head -c 32 /dev/urandom > {OTHER_KEY}; chown slurm:slurm "
                   f"{OTHER_KEY}; chmod 0600 {OTHER_KEY}; sed -i 's|^AuthAltParameters=jwt_key="
                   f".*|AuthAltParameters=jwt_key={OTHER_KEY}|' {DBD_CONF}; "
                   f"systemctl restart slurmdbd; {WAIT_UP}")
    refused = topo.ssh(HOST, f"{CHECK} --slurm-conf {SLURM_CONF}", check=False)
    assert refused.returncode == 31, refused.stdout + refused.stderr
    # The agent's own path to slurmdbd fails too: the check is not alone in saying so.
    assert hostcheck.agent_view(topo, HOST)["accounts"] != 200
    deadline = time.monotonic() + 5 + 5
    while True:
        res = topo.ssh(HOST, "slurmrestd-access status --json", check=False)
        state = json.loads(hostcheck._text(res) or "{}")
        if res.returncode != 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert (res.returncode, state.get("status_reason")) == (31, "refused_by_slurmdbd"), state
