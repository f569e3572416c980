"""Set up slurmrestd for the Slurm-web agent: unix socket, JWT, auto token management.

    pyinfra INVENTORY deploys/slurmrestd_access.py [--dry] [--limit CLUSTER_OR_HOST]

Hosts are chosen by the inventory's role groups (slurmctld, slurmdbd, slurmrestd, compute)
and their `cluster` host data; see README.md. The same deploy, installed from the wheel:
`pyinfra INVENTORY slurmrestd_access.deploys.slurmrestd_access`.
"""

import pyinfra

from slurmrestd_access.deploys import slurmrestd_access

if pyinfra.is_cli:  # run by `pyinfra`; importing this file deploys nothing
    slurmrestd_access()
