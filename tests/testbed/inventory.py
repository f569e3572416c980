"""Render pyinfra inventory files for running topologies (pure).

Two flavours of the same hosts, groups and data: root's (`.testbed/<topology>.py`) and one that
logs in as the unprivileged `admin` and works through sudo (`.testbed/<topology>-sudo.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from pathlib import Path

from tests.testbed.accounts import ADMIN_USER, PASSWORD
from tests.testbed.topology import ROLES, Host, Topology

# Called in the sudo inventory, at load time, for the hosts whose rule asks for a password.
_PASSWORD_FUNCTION = "_testbed_sudo_password"


def host_data(host: Host, key_path: Path, user: str = "root") -> dict[str, object]:
    data: dict[str, object] = {
        "ssh_hostname": host.address,
        "ssh_user": user,
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
    header = ('"""pyinfra inventory of the running testbed, written by '
              '`python -m tests.testbed up`."""')
    return _render(topologies, [header], lambda h: repr(host_data(h, key_path)))


def render_sudo_inventory(
    topologies: Iterable[Topology],
    key_path: Path,
    password_file: Path,
    password_hosts: Collection[str],
    user: str = ADMIN_USER,
) -> str:
    """The same inventory logging in as `user` with `_sudo=True`; hosts named in password_hosts
    get `_sudo_password`, read from password_file when pyinfra loads the inventory: the password
    itself is never written here."""
    def data(host: Host) -> str:
        text = repr({**host_data(host, key_path, user), "_sudo": True})
        if host.name in password_hosts:
            text = text[:-1] + f", '_sudo_password': {_PASSWORD_FUNCTION}()}}"
        return text

    header = [
        '"""pyinfra inventory of the running testbed over sudo, as the unprivileged '
        f'{user!r}, written',
        "by `python -m tests.testbed up`.",
    ]
    if not password_hosts:
        header[-1] += ' No host is given a sudo password."""'
    else:
        header += [
            "The hosts given a sudo password read it from",
            f'{password_file} (root only) when this file is loaded."""',
            "",
            "",
            f"def {_PASSWORD_FUNCTION}():",
            f"    path = {str(password_file)!r}",
            "    try:",
            "        with open(path) as fh:",
            "            return fh.read().strip()",
            "    except OSError as exc:",
            "        raise SystemExit(",
            "            f'testbed sudo inventory: cannot read the sudo password from {path} '",
            "            f'({exc}): run pyinfra as root, after `python -m tests.testbed up`'",
            "        ) from None",
            "",
        ]
    return _render(topologies, header, data)


def password_hosts(topologies: Iterable[Topology], modes: dict[str, str]) -> list[str]:
    """Hosts whose current rule (modes, falling back to the topology's default) asks for one."""
    return [h.name for t in topologies for h in t.hosts if modes.get(h.name, h.sudo) == PASSWORD]


def _render(topologies: Iterable[Topology], header: list[str],
            data: Callable[[Host], str]) -> str:
    topologies = list(topologies)
    lines = [*header, ""]
    role_members: dict[str, list[str]] = {role: [] for role in ROLES}
    for topo in topologies:
        for cluster in topo.clusters.values():
            lines.append(f"{cluster.name} = [")
            lines.extend(f"    ({h.name!r}, {data(h)})," for h in cluster.hosts)
            lines.append("]")
            for host in cluster.hosts:
                for role in host.roles:
                    role_members[role].append(host.name)
    lines.append("")
    for role in ROLES:
        lines.append(f"{role} = {role_members[role]!r}")
    return "\n".join(lines) + "\n"
