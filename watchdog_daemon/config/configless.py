"""Where a host's Slurm reads slurm.conf when the cluster is configless.

On a configless cluster (`SlurmctldParameters=enable_configless`) only the controllers have a
slurm.conf. sackd (login and service hosts) and a configless slurmd fetch the controller's files
and keep them under /run/slurm/conf/; Slurm's commands and daemons, slurmrestd included, read
that copy when /etc/slurm/slurm.conf does not exist (`_establish_config_source()` in
src/common/read_config.c, 24.11 and 26.05: `-f`, `SLURM_CONF`, the default path, the cache,
then a fetch). Measured in tests/testbed/MEASUREMENTS.md ("Configless Slurm (issue 22)"): the
cache is the controller's file byte for byte, and `scontrol reconfigure` rewrites it within
0.3 s. Pure, except `slurm_conf_to_read` which looks at the two paths.
"""

from __future__ import annotations

import os
from typing import Callable

DEFAULT_SLURM_CONF = "/etc/slurm/slurm.conf"
CACHED_SLURM_CONF = "/run/slurm/conf/slurm.conf"
CONFIGLESS_PARAMETER = "enable_configless"


def slurm_conf_to_read(path: str, exists: Callable[[str], bool] = os.path.exists) -> str:
    """The slurm.conf this host's Slurm reads when told `path`: `path` itself, unless it is the
    default path, absent, and a configless cache exists (then the cache, as Slurm does).

    A path a site chose (`SLURM_CONF`) is never replaced: Slurm reads that one or nothing.
    """
    if path != DEFAULT_SLURM_CONF or exists(path):
        return path
    return CACHED_SLURM_CONF if exists(CACHED_SLURM_CONF) else path


def serves_configless(slurmctld_parameters: str | None) -> bool:
    """Whether a controller with this `SlurmctldParameters` value serves its configuration
    (a comma-separated list; Slurm compares the words without regard to case)."""
    words = (slurmctld_parameters or "").split(",")
    return any(w.strip().lower() == CONFIGLESS_PARAMETER for w in words)
