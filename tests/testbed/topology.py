"""Topologies as data: parse and validate `topologies.toml` (pure, no I/O beyond reading it)."""

from __future__ import annotations

import ipaddress
import keyword
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tests.testbed.accounts import DEFAULT_SUDO_MODE, SUDO_MODES
from tests.testbed.errors import TestbedError

ROLES = ("slurmctld", "slurmdbd", "slurmrestd", "compute")
AGENT_UNITS = ("slurm-web-agent.service", "slurm-web-agent-uwsgi.service")
DEFAULT_TOPOLOGIES_FILE = Path(__file__).with_name("topologies.toml")
# Debian releases a topology may name; each has its own cached base (basecache.RELEASES).
RELEASES = ("bullseye", "bookworm", "trixie", "forky")
DEFAULT_RELEASE = "trixie"
# Slurm-web releases the agent stand-in can be (its RELEASES), installed as a slurm-web-agent
# package of that release on an agent host (slurmweb_pkg.py).
SLURMWEB_RELEASES = ("5.2", "6.0")
DEFAULT_SLURMWEB = "6.0"
# Releases whose base has Debian's uWSGI (basecache.UWSGI_PACKAGES), which
# slurm-web-agent-uwsgi.service runs: only where a topology runs that unit, since a package
# more rebuilds a release's base.
UWSGI_RELEASES = ("trixie",)
# Releases whose base has sackd (basecache.SACKD_PACKAGES), which a configless cluster's hosts
# that are not compute nodes run.
SACKD_RELEASES = ("trixie",)

# Host names double as nspawn machine names and DNS labels in /etc/hosts.
_HOST_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")
# Cluster names become variable names in the generated pyinfra inventory and Slurm ClusterName.
_CLUSTER_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


@dataclass(frozen=True)
class Host:
    name: str
    cluster: str
    roles: tuple[str, ...]
    address: str
    agent_unit: str
    # False: the inventory leaves agent_unit out, so the deploy finds the unit in use itself.
    agent_unit_in_inventory: bool = True
    # Debian release the host boots (its base; see basecache.RELEASES).
    release: str = "trixie"
    # admin's sudo rule `up` installs (accounts.SUDO_MODES); switchable at run time.
    sudo: str = DEFAULT_SUDO_MODE
    # Slurm-web release of the agent (stand-in) on an agent host; switchable at run time.
    slurmweb: str = DEFAULT_SLURMWEB
    # In a configless cluster (`configless = true`): only the controller has a slurm.conf.
    configless: bool = False

    @property
    def fetches_conf(self) -> bool:
        """A configless host without a slurm.conf of its own: slurmd (a compute node) or sackd
        fetches the controller's."""
        return self.configless and not self.has("slurmctld")

    @property
    def runs_sackd(self) -> bool:
        return self.fetches_conf and not self.has("compute")

    def has(self, role: str) -> bool:
        return role in self.roles

    @property
    def is_agent_host(self) -> bool:
        # The Slurm-web agent lives next to slurmrestd.
        return self.has("slurmrestd")


@dataclass(frozen=True)
class Cluster:
    name: str
    agent_unit: str
    hosts: tuple[Host, ...]
    configless: bool = False

    def only(self, role: str) -> Host:
        found = [h for h in self.hosts if h.has(role)]
        if len(found) != 1:
            raise TestbedError(f"cluster {self.name}: expected one {role} host, found {len(found)}")
        return found[0]

    @property
    def ctl_hosts(self) -> tuple[Host, ...]:
        """Every slurmctld host, primary first (slurm.conf's SlurmctldHost lines, in order)."""
        return tuple(h for h in self.hosts if h.has("slurmctld"))

    @property
    def ctl_host(self) -> Host:
        """The primary controller."""
        return self.ctl_hosts[0]

    @property
    def shares_state(self) -> bool:
        """High availability: the controllers share one StateSaveLocation (a machine directory
        bound into each of them, see Testbed._binds)."""
        return len(self.ctl_hosts) > 1

    @property
    def db_host(self) -> Host:
        return self.only("slurmdbd")

    @property
    def rest_host(self) -> Host:
        return self.only("slurmrestd")

    @property
    def compute_hosts(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.has("compute"))


@dataclass(frozen=True)
class Topology:
    name: str
    clusters: dict[str, Cluster] = field(hash=False)
    release: str = DEFAULT_RELEASE

    @property
    def hosts(self) -> list[Host]:
        return [h for c in self.clusters.values() for h in c.hosts]

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise TestbedError(f"topology {self.name} has no host {name!r}")


@dataclass(frozen=True)
class Network:
    subnet: ipaddress.IPv4Network
    bridge: str
    gateway: ipaddress.IPv4Address

    @property
    def prefixlen(self) -> int:
        return self.subnet.prefixlen


@dataclass(frozen=True)
class Catalog:
    """Every topology of the testbed plus the one network they share."""

    network: Network
    topologies: dict[str, Topology]

    def topology(self, name: str) -> Topology:
        try:
            return self.topologies[name]
        except KeyError:
            known = ", ".join(sorted(self.topologies))
            raise TestbedError(f"unknown topology {name!r} (known: {known})") from None

    @property
    def all_hosts(self) -> list[Host]:
        return [h for t in self.topologies.values() for h in t.hosts]

    def host(self, name: str) -> Host:
        for h in self.all_hosts:
            if h.name == name:
                return h
        known = ", ".join(h.name for h in self.all_hosts)
        raise TestbedError(f"unknown host {name!r} (known: {known})")

    def topology_of(self, host_name: str) -> Topology:
        for t in self.topologies.values():
            if any(h.name == host_name for h in t.hosts):
                return t
        raise TestbedError(f"unknown host {host_name!r}")


def load_catalog(path: Path = DEFAULT_TOPOLOGIES_FILE) -> Catalog:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TestbedError(f"cannot read topologies from {path}: {exc}") from exc
    return parse_catalog(data)


def parse_catalog(data: dict[str, Any]) -> Catalog:
    network = _parse_network(_table(data, "network", "top level"))
    raw_topologies = _table(data, "topologies", "top level")
    if not raw_topologies:
        raise TestbedError("no topology defined")
    topologies = {
        name: _parse_topology(name, _table(raw_topologies, name, "topologies"))
        for name in raw_topologies
    }
    _check_unique(topologies, network)
    return Catalog(network=network, topologies=topologies)


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise TestbedError(f"{where}: [{key}] table is missing or not a table")
    return value


def _parse_network(raw: dict[str, Any]) -> Network:
    try:
        subnet = ipaddress.IPv4Network(str(raw["subnet"]))
        gateway = ipaddress.IPv4Address(str(raw["gateway"]))
        bridge = str(raw["bridge"])
    except (KeyError, ValueError) as exc:
        raise TestbedError(f"[network]: invalid or missing setting: {exc}") from exc
    if not subnet.is_private:
        raise TestbedError(f"[network]: subnet {subnet} is not private")
    if gateway not in subnet or gateway in (subnet.network_address, subnet.broadcast_address):
        raise TestbedError(f"[network]: gateway {gateway} is not a host address of {subnet}")
    # Linux limits interface names to 15 bytes.
    if not re.fullmatch(r"[a-z][a-z0-9]{0,14}", bridge):
        raise TestbedError(f"[network]: bad bridge name {bridge!r}")
    return Network(subnet=subnet, bridge=bridge, gateway=gateway)


def _parse_topology(name: str, raw: dict[str, Any]) -> Topology:
    clusters_raw = _table(raw, "clusters", f"topology {name}")
    if not clusters_raw:
        raise TestbedError(f"topology {name}: no cluster")
    release = raw.get("release", DEFAULT_RELEASE)
    if release not in RELEASES:
        raise TestbedError(
            f"topology {name}: release must be one of {', '.join(RELEASES)}, not {release!r}"
        )
    clusters = {
        cname: _parse_cluster(name, cname, _table(clusters_raw, cname, f"topology {name}"),
                              release)
        for cname in clusters_raw
    }
    return Topology(name=name, clusters=clusters, release=release)


def _parse_cluster(topo: str, name: str, raw: dict[str, Any], release: str) -> Cluster:
    where = f"topology {topo}, cluster {name}"
    if not _CLUSTER_NAME.fullmatch(name) or keyword.iskeyword(name) or name in ROLES:
        raise TestbedError(f"{where}: bad cluster name (lowercase identifier, not a role name)")
    agent_unit = raw.get("agent_unit", AGENT_UNITS[0])
    if agent_unit not in AGENT_UNITS:
        raise TestbedError(f"{where}: agent_unit must be one of {', '.join(AGENT_UNITS)}")
    if agent_unit == AGENT_UNITS[1] and release not in UWSGI_RELEASES:
        having = ", ".join(UWSGI_RELEASES)
        raise TestbedError(f"{where}: {agent_unit} needs uWSGI, which the base of {having} "
                           f"has, not {release}'s (add {release} to topology.UWSGI_RELEASES: "
                           "its base is then rebuilt with uWSGI)")
    hosts_raw = raw.get("hosts")
    if not isinstance(hosts_raw, list) or not hosts_raw:
        raise TestbedError(f"{where}: hosts must be a non-empty list")
    in_inventory = raw.get("agent_unit_in_inventory", True)
    if not isinstance(in_inventory, bool):
        raise TestbedError(f"{where}: agent_unit_in_inventory must be true or false")
    configless = raw.get("configless", False)
    if not isinstance(configless, bool):
        raise TestbedError(f"{where}: configless must be true or false")
    if configless and release not in SACKD_RELEASES:
        raise TestbedError(f"{where}: configless needs sackd, which the base of "
                           f"{', '.join(SACKD_RELEASES)} has, not {release}'s")
    hosts = tuple(replace(_parse_host(where, name, agent_unit, h, release, in_inventory),
                          configless=configless) for h in hosts_raw)
    cluster = Cluster(name=name, agent_unit=agent_unit, hosts=hosts, configless=configless)
    for role in ("slurmctld", "slurmdbd", "slurmrestd"):
        count = sum(h.has(role) for h in hosts)
        # Two controllers: a primary and a backup (high availability), in slurm.conf's order.
        if count != 1 and not (role == "slurmctld" and count == 2):
            allowed = "one or two" if role == "slurmctld" else "exactly one"
            raise TestbedError(f"{where}: needs {allowed} {role} host, has {count}")
    if not cluster.compute_hosts:
        raise TestbedError(f"{where}: needs at least one compute host")
    return cluster


def _parse_host(where: str, cluster: str, agent_unit: str, raw: Any, release: str,
                in_inventory: bool = True) -> Host:
    if not isinstance(raw, dict):
        raise TestbedError(f"{where}: each host must be a table")
    name = raw.get("name")
    if not isinstance(name, str) or not _HOST_NAME.fullmatch(name):
        raise TestbedError(f"{where}: bad host name {name!r} (lowercase, digits, '-')")
    roles = raw.get("roles")
    if not isinstance(roles, list) or not roles:
        raise TestbedError(f"{where}, host {name}: roles must be a non-empty list")
    unknown = [r for r in roles if r not in ROLES]
    if unknown or len(set(roles)) != len(roles):
        raise TestbedError(f"{where}, host {name}: bad roles {roles} (known: {', '.join(ROLES)})")
    address = raw.get("address")
    try:
        ipaddress.IPv4Address(str(address))
    except ValueError:
        raise TestbedError(f"{where}, host {name}: bad address {address!r}") from None
    sudo = raw.get("sudo", DEFAULT_SUDO_MODE)
    if sudo not in SUDO_MODES:
        raise TestbedError(
            f"{where}, host {name}: sudo must be one of {', '.join(SUDO_MODES)}, not {sudo!r}"
        )
    unknown_keys = sorted(set(raw) - {"name", "roles", "address", "sudo", "slurmweb"})
    if unknown_keys:
        raise TestbedError(f"{where}, host {name}: unknown setting(s) {', '.join(unknown_keys)}")
    slurmweb = raw.get("slurmweb", DEFAULT_SLURMWEB)
    if slurmweb not in SLURMWEB_RELEASES:
        raise TestbedError(
            f"{where}, host {name}: slurmweb must be one of {', '.join(SLURMWEB_RELEASES)} "
            f"(a string, quoted), not {slurmweb!r}"
        )
    if "slurmweb" in raw and "slurmrestd" not in roles:
        raise TestbedError(
            f"{where}, host {name}: slurmweb names the agent's release; only the slurmrestd "
            "host has the agent"
        )
    # Keep roles in the canonical order so rendering is stable.
    ordered = tuple(r for r in ROLES if r in roles)
    return Host(name=name, cluster=cluster, roles=ordered, address=str(address),
                agent_unit=agent_unit, release=release, agent_unit_in_inventory=in_inventory,
                sudo=sudo, slurmweb=slurmweb)


def _check_unique(topologies: dict[str, Topology], network: Network) -> None:
    names: dict[str, str] = {}
    addresses: dict[str, str] = {}
    clusters: dict[str, str] = {}
    reserved = {network.subnet.network_address, network.subnet.broadcast_address, network.gateway}
    for topo in topologies.values():
        for cname in topo.clusters:
            if cname in clusters:
                raise TestbedError(
                    f"cluster {cname} is in topologies {clusters[cname]} and {topo.name}"
                )
            clusters[cname] = topo.name
        for host in topo.hosts:
            if host.name in names:
                raise TestbedError(
                    f"host {host.name} is in topologies {names[host.name]} and {topo.name}"
                )
            names[host.name] = topo.name
            ip = ipaddress.IPv4Address(host.address)
            if ip not in network.subnet or ip in reserved:
                raise TestbedError(
                    f"host {host.name}: address {ip} is not a free host address of "
                    f"{network.subnet} (gateway {network.gateway})"
                )
            if host.address in addresses:
                raise TestbedError(
                    f"hosts {addresses[host.address]} and {host.name} share {host.address}"
                )
            addresses[host.address] = host.name
