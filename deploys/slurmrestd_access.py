"""Set up slurmrestd for the Slurm-web agent: unix socket, JWT, auto token management.

    pyinfra INVENTORY deploys/slurmrestd_access.py [--dry] [--limit CLUSTER_OR_HOST]

Hosts are chosen by the inventory's role groups (slurmctld, slurmdbd, slurmrestd, compute)
and their `cluster` host data; see README.md.
"""

from deploys.lib.deploy import slurmrestd_access

slurmrestd_access()
