"""The deploys, to run from the command line or to call from a site's own pyinfra deploy.

    pyinfra INVENTORY slurmrestd_access.deploys.slurmrestd_access [SETTING=VALUE ...] [--dry]
    pyinfra INVENTORY slurmrestd_access.deploys.rotate_key -y [--limit CLUSTER]

or, in a deploy file of your own::

    from slurmrestd_access.deploys import slurmrestd_access
    slurmrestd_access(agent_unit="slurm-web-agent-uwsgi.service", _sudo=True)

Every setting of docs/deploy.md's table is a keyword of both (keyword > host data > default).
"""

from slurmrestd_access.deploy import slurmrestd_access
from slurmrestd_access.fleet.rotate_deploy import rotate_key

__all__ = ["rotate_key", "slurmrestd_access"]
