"""Coordinated rotation of Slurm's JWT signing key, cluster by cluster.

    pyinfra INVENTORY deploys/rotate_key.py -y [--limit CLUSTER]

A new key is generated on each cluster's controller (the previous one kept in root's own
directory until the new one is proven), installed by hash on the slurmdbd host(s), slurmdbd and
slurmctld are restarted, the agent's copy is synced and the agent restarted. Proven per cluster:
a token signed with the previous key is refused by slurmctld, one signed with the new key
accepted, the agent's check passes. If not, every host goes back to the previous key. See
README.md. Installed from the wheel: `pyinfra INVENTORY slurmrestd_access.deploys.rotate_key`.
"""

import pyinfra

from slurmrestd_access.deploys import rotate_key

if pyinfra.is_cli:  # run by `pyinfra`; importing this file deploys nothing
    rotate_key()
