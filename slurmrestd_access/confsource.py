"""Where each host's Slurm reads slurm.conf: its own file, or a configless cache. Pure.

On a configless cluster only the controllers have a slurm.conf; sackd or a configless slurmd
keep a copy of the controller's under /run/slurm/conf/ (watchdog_daemon/config/configless.py).
The deploy puts the AuthAlt lines into the controller's file only (the copies follow it on
`scontrol reconfigure`) and never creates a slurm.conf on a configless host: slurmrestd would
then read that file instead of the cluster's.
"""

from __future__ import annotations

from dataclasses import dataclass

from slurmrestd_access.hoststate import HostState
from watchdog_daemon.config.configless import CACHED_SLURM_CONF, DEFAULT_SLURM_CONF

# The daemons that fetch a configless host's configuration and keep its cache.
FETCHER_UNITS = ("sackd.service", "slurmd.service")
LOCAL, CONFIGLESS, MISSING = "local", "configless", "missing"


@dataclass(frozen=True)
class SlurmConfSource:
    kind: str  # LOCAL, CONFIGLESS or MISSING
    reads: str  # the file this host's Slurm reads
    fetchers: tuple[str, ...] = ()  # the running units that keep a configless cache

    @property
    def configless(self) -> bool:
        return self.kind == CONFIGLESS

    def problem(self, slurm_conf: str, controller: bool) -> str | None:
        """What stops the deploy on this host, or None."""
        if self.kind == LOCAL:
            return None
        if controller:
            return (f"{slurm_conf} is missing: a controller reads its own slurm.conf, "
                    "configless or not")
        if self.kind == MISSING:
            where = (f" and no configuration was fetched from a controller ({CACHED_SLURM_CONF} "
                     "does not exist)" if slurm_conf == DEFAULT_SLURM_CONF else "")
            return (f"{slurm_conf} is missing{where}: this host needs its own slurm.conf, or, "
                    "on a configless cluster, sackd (or a configless slurmd) running with "
                    "--conf-server CONTROLLER")
        if not self.fetchers:
            return (f"{CACHED_SLURM_CONF} exists but neither sackd nor slurmd is running, and "
                    "slurmrestd finds no configuration at its next start without one: start "
                    "sackd (or slurmd) with --conf-server CONTROLLER")
        return None


def slurm_conf_source(hs: HostState, slurm_conf: str) -> SlurmConfSource:
    """As Slurm itself decides (read_config.c): the file named, else, for the default path
    only, the configless cache."""
    if hs.file(slurm_conf).exists:
        return SlurmConfSource(LOCAL, slurm_conf)
    if slurm_conf == DEFAULT_SLURM_CONF and hs.file(CACHED_SLURM_CONF).exists:
        running = tuple(u for u in FETCHER_UNITS if hs.unit(u).active == "active")
        return SlurmConfSource(CONFIGLESS, CACHED_SLURM_CONF, running)
    return SlurmConfSource(MISSING, slurm_conf)


def stale_copies(controller_sha256: str | None, others: dict[str, tuple[bool, str | None]]
                 ) -> list[str]:
    """The configless hosts whose copy of slurm.conf is not the controller's file.

    `others`: per other host of the cluster, (configless, the copy's SHA-256 or None). A
    controller file whose content is not known (merged in this run) makes every copy stale. A
    copy whose hash is not known (larger than the tool hashes, or with more than one name) is
    left out: it would make every run reconfigure (`unhashed_copies` names it).
    """
    return [name for name, (configless, sha) in others.items()
            if configless and (controller_sha256 is None or (sha is not None
                                                              and sha != controller_sha256))]


def unhashed_copies(others: dict[str, tuple[bool, str | None]]) -> list[str]:
    return [name for name, (configless, sha) in others.items() if configless and sha is None]
