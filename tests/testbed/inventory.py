"""Render pyinfra inventory files for running topologies (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tests.testbed.topology import ROLES, Host, Topology


def host_data(host: Host, key_path: Path) -> dict[str, str]:
    data = {
        "ssh_hostname": host.address,
        "ssh_user": "root",
        "ssh_key": str(key_path),
        # Addresses are reused by every `up` and the hosts are throwaway: never pin host keys.
        "ssh_known_hosts_file": "/dev/null",
        "ssh_strict_host_key_checking": "no",
        "cluster": host.cluster,
        "agent_unit": host.agent_unit,
    }
    if not host.agent_unit_in_inventory:
        del data["agent_unit"]
    return data


def render_inventory(topologies: Iterable[Topology], key_path: Path) -> str:
    """One group per cluster holding (name, data) tuples, plus role groups holding names.

    pyinfra merges a host's data over every group it appears in, so the name-only role groups
    add no data and the cluster group carries it all.
    """
    topologies = list(topologies)
    lines = [
        '"""pyinfra inventory of the running testbed, written by `python -m tests.testbed up`."""',
        "",
    ]
    role_members: dict[str, list[str]] = {role: [] for role in ROLES}
    for topo in topologies:
        for cluster in topo.clusters.values():
            lines.append(f"{cluster.name} = [")
            lines.extend(f"    ({h.name!r}, {host_data(h, key_path)!r})," for h in cluster.hosts)
            lines.append("]")
            for host in cluster.hosts:
                for role in host.roles:
                    role_members[role].append(host.name)
    lines.append("")
    for role in ROLES:
        lines.append(f"{role} = {role_members[role]!r}")
    return "\n".join(lines) + "\n"
