"""Which host plays which part in its cluster, from the inventory's groups. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from slurmrestd_access.settings import ROLES


class InventoryError(ValueError):
    """The inventory does not describe a cluster the deploy can set up."""


@dataclass(frozen=True)
class HostEntry:
    name: str
    cluster: str
    roles: frozenset[str]


@dataclass
class ClusterPlan:
    name: str
    controllers: list[str] = field(default_factory=list)
    dbd_hosts: list[str] = field(default_factory=list)
    rest_hosts: list[str] = field(default_factory=list)
    compute_hosts: list[str] = field(default_factory=list)

    @property
    def key_origin(self) -> str:
        """The host whose key is the cluster's key when no key source is configured."""
        return self.controllers[0]

    @property
    def primary_controller(self) -> str:
        """The first host of the `slurmctld` group, in the inventory's host order (pyinfra's:
        where the inventory first names each host). With high availability it must be the first
        `SlurmctldHost` line of slurm.conf (the primary): the inventory's order is the one the
        deploy knows before anything runs, `--dry` included."""
        return self.controllers[0]

    def controller_restart_order(self) -> list[str]:
        """Backups first (the rotation takes them in inventory order, the deploy's `_serial`
        operation in pyinfra's), the primary last: one at a time, each restart
        waiting until `scontrol ping` says every controller is UP, so at least one controller
        always runs. (A primary restarted while the backup is down would leave none; the
        backups restarted first find the primary up, and it finds them up when its turn comes.)"""
        return self.controllers[1:] + self.controllers[:1]

    def hosts_needing_key(self) -> list[str]:
        """Hosts whose daemons load Slurm's key: every slurmctld and slurmdbd host."""
        return list(dict.fromkeys(self.controllers + self.dbd_hosts))

    def watchdog_hosts(self) -> list[str]:
        """Agent hosts that get the rotation watchdog: those that hold Slurm's key themselves.

        The watchdog follows the key file on its own host; it cannot follow a key it cannot
        see. On an agent host without the key (slurmrestd apart from slurmctld and slurmdbd)
        the copy is pushed from the workstation's memory by the deploy and by the rotation
        (`slurmrestd_access.deploys.rotate_key`), and a watchdog there would only report
        `key_missing` forever.
        """
        holders = set(self.hosts_needing_key())
        return [h for h in self.rest_hosts if h in holders]

    def all_hosts(self) -> list[str]:
        return list(
            dict.fromkeys(self.controllers + self.dbd_hosts + self.rest_hosts + self.compute_hosts)
        )

    @property
    def uses_slurmdbd(self) -> bool:
        return bool(self.dbd_hosts)


def primary_mismatch(controllers: list[str], slurmctld_hosts: list[str]) -> str | None:
    """A warning when the inventory's first slurmctld host is not slurm.conf's first
    `SlurmctldHost` (the primary), compared by short host name; None when they agree or there
    is no backup to order."""
    if len(controllers) < 2 or not slurmctld_hosts:
        return None

    def short(name: str) -> str:
        return name.split(".", 1)[0].lower()

    if short(controllers[0]) == short(slurmctld_hosts[0]):
        return None
    return (f"warning: slurm.conf names {slurmctld_hosts[0]} first (the primary controller), "
            f"the inventory's slurmctld group {controllers[0]}: the deploy and the rotation "
            f"restart {controllers[0]} last, as the primary (each restart still waits until "
            f"every controller is UP); name the primary first in the inventory (pyinfra orders "
            f"hosts by where the inventory first names them)")


def roles_of(groups: Iterable[str]) -> frozenset[str]:
    return frozenset(g for g in groups if g in ROLES)


def plan_clusters(entries: Iterable[HostEntry]) -> dict[str, ClusterPlan]:
    """Group hosts by cluster and check that each cluster can be deployed."""
    clusters: dict[str, ClusterPlan] = {}
    for entry in entries:
        plan = clusters.setdefault(entry.cluster, ClusterPlan(entry.cluster))
        if "slurmctld" in entry.roles:
            plan.controllers.append(entry.name)
        if "slurmdbd" in entry.roles:
            plan.dbd_hosts.append(entry.name)
        if "slurmrestd" in entry.roles:
            plan.rest_hosts.append(entry.name)
        if "compute" in entry.roles:
            plan.compute_hosts.append(entry.name)
    for plan in clusters.values():
        if not plan.controllers:
            raise InventoryError(
                f"cluster {plan.name!r}: no host in group 'slurmctld'; add the controller's "
                "name to the slurmctld group of the inventory"
            )
        if not plan.rest_hosts:
            raise InventoryError(
                f"cluster {plan.name!r}: no host in group 'slurmrestd' (the host of slurmrestd "
                "and the Slurm-web agent); add it to the slurmrestd group"
            )
    return clusters
