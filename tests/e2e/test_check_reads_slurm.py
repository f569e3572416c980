"""End-to-end: the connect check reads slurm.conf as slurmctld does (issue 20).

Accounting set in an `Include`d file is accounting all the same: with slurmdbd restarted on
another key, the check on the agent host says slurmdbd refuses the agent's token (exit 31),
where it used to read only the top of slurm.conf, skip slurmdbd and pass.
"""

from __future__ import annotations

import pytest

from tests.e2e.pyinfra_run import run_deploy

pytestmark = pytest.mark.e2e

HOST = "hpc1"
CHECK = "slurmrestd-access check --as-user slurm-web"
OTHER_KEY = "/var/spool/slurm/other-for-slurmdbd.key"
DBD_LISTENS = ("for i in $(seq 60); do ss -Hltn 'sport = :6819' | grep -q . && exit 0; "
               "sleep 0.5; done; exit 1")


@pytest.fixture(scope="module")
def deployed(testbed):
    topo = testbed.up("single", fresh=True)
    run = run_deploy(topo.inventory_path)
    assert run.returncode == 0, run.output[-6000:]
    topo.ssh(HOST, "cp -p /etc/slurm/slurm.conf /root/slurm.conf.orig && "
                   "cp -p /etc/slurm/slurmdbd.conf /root/slurmdbd.conf.orig")
    yield topo
    # As the deploy left it, for any story that reuses the host.
    topo.ssh(HOST, "cp -p /root/slurm.conf.orig /etc/slurm/slurm.conf && "
                   "cp -p /root/slurmdbd.conf.orig /etc/slurm/slurmdbd.conf && "
                   f"rm -f /etc/slurm/acct.conf {OTHER_KEY} && systemctl restart slurmdbd && "
                   f"{{ {DBD_LISTENS}; }}")


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
