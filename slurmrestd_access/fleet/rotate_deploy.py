"""The coordinated key rotation deploy (`slurmrestd_access.deploys.rotate_key`): one operation
per cluster.

The rotation itself runs on each cluster's controller and drives that cluster's other hosts
(see rotation.py); the other hosts only get the host tool. Other clusters' keys are untouched:
each controller rotates its own cluster only.
"""

from __future__ import annotations

import functools

from pyinfra import host, inventory, state
from pyinfra.api import FunctionCommand, OperationError, deploy, operation

from slurmrestd_access import callkeywords
from slurmrestd_access import operations as ops
from slurmrestd_access.cluster import ClusterPlan, roles_of
from slurmrestd_access.deploy import cluster_plans, settings_for
from slurmrestd_access.fleet import summary_hook
from slurmrestd_access.fleet.rotation import rotate_cluster
from slurmrestd_access.fleet.rotation_plan import rotation_hosts
from slurmrestd_access.hostfail import host_local
from slurmrestd_access.settings import Settings, setting_keywords


def settings_of(name: str, keywords: dict | None = None) -> Settings:
    return settings_for(name, dict(inventory.get_host(name).data.dict()), keywords)


@operation()
@host_local
def rotate_cluster_key(settings: Settings, plan: ClusterPlan, keywords: dict):
    """On the cluster's controller: the whole rotation, with its proof and rollback."""
    ops.stop_if_cluster_failed(settings)
    if host.name != plan.key_origin:
        host.noop(f"the key of cluster {plan.name} is rotated from {plan.key_origin}")
        return
    if settings.key_source_file or settings.key_source_command:
        raise OperationError(
            f"cluster {plan.name} takes its key from a key source on the workstation: put a new "
            "key there and run the deploy (slurmrestd_access.deploys.slurmrestd_access: it "
            "pushes it by hash)")
    outside = [h for h in plan.all_hosts()
               if not state.is_host_in_limit(inventory.get_host(h))]
    if outside:
        raise OperationError(
            f"rotating cluster {plan.name} needs all its hosts; {', '.join(outside)} "
            f"excluded by --limit: use --limit {plan.name}")
    yield FunctionCommand(rotate_cluster,
                          (rotation_hosts(plan), functools.partial(settings_of, keywords=keywords)),
                          {})


@deploy("rotate the Slurm JWT key")
@setting_keywords
def rotate_key(**keywords) -> None:
    """Rotate each cluster's JWT signing key, with its proof and rollback. The keywords are the
    deploy's settings (see slurmrestd_access), over host data, over the defaults."""
    callkeywords.remember(state, keywords)
    summary_hook.install(state)
    if not roles_of(host.groups):
        host.noop("in no role group: nothing to do")
        return
    settings = settings_of(host.name, keywords)
    plan = cluster_plans()[settings.cluster]
    ops.install_tool(name="Install the slurmrestd-access host tool", settings=settings,
                     agent_host=host.name in plan.watchdog_hosts(), _timeout=600)
    # Bounds the whole rotation: 2 restarts per daemon (rotation + rollback) and the checks.
    budget = (settings.restart_wait + 60) * 8 + (settings.check_timeout * 4 + 30) * 6
    rotate_cluster_key(name=f"Rotate the JWT key of cluster {plan.name}", settings=settings,
                       plan=plan, keywords=keywords, _timeout=budget)
