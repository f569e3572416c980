"""slurmrestd-access, the workstation side: pyinfra deploys that set up slurmrestd for the
Slurm-web agent (unix socket, JWT, automatic token management) on many clusters.

`slurmrestd_access.deploys` holds what a site calls (`slurmrestd_access`, `rotate_key`); the
modules here are its building blocks (settings, the cluster's roles, the host survey, facts,
privilege); fleet/ the rotation, rollout, report and summary built on them. The host-side tool
(watchdog_daemon) travels to the hosts as its own wheel, of the same version.
"""

import sys

if sys.version_info < (3, 11):  # noqa: UP036 - pyproject says 3.9 for the host-side tool
    raise SystemExit(
        "slurmrestd-access: the workstation side (slurmrestd_access) needs Python 3.11 or "
        f"later, this is {sys.version_info[0]}.{sys.version_info[1]}; the cluster hosts may run "
        "3.9 and later"
    )

# One version for both sides: the host tool's, which the hosts report back.
from watchdog_daemon import __version__

__all__ = ["__version__"]
