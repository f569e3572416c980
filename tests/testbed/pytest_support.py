"""What the pytest fixtures hand to end-to-end tests: a factory and running topologies.

Used by tests/e2e/conftest.py. A test asks `testbed.up("single")` and gets a RunningTopology:

    topo.inventory_path   Path of .testbed/<topology>.py (pyinfra inventory of this topology)
    topo.hosts            [Host(name, cluster, roles, address, agent_unit), ...]
    topo.clusters         {"hpc": Cluster(name, agent_unit, hosts, ctl_host, db_host, rest_host)}
    topo.host(name)       one Host
    topo.kill(name) / topo.boot(name)   power failure of one host, and its boot on the same disk
    topo.ssh(host, cmd, check=True, input=None, text=True, timeout=120, user="root")
                          -> subprocess.CompletedProcess; stdout/stderr are str when text=True
                          (the default, UTF-8 with replacement), bytes when text=False; input is
                          always bytes (or None). check=True raises SSHCommandError (a
                          CalledProcessError whose message carries the output) on non-zero exit.
                          user="admin" or "nosudo": the unprivileged accounts (same key).

Over sudo (tests/testbed/accounts.py): every host has `admin` (sudo by a rule per host,
"nopasswd" or "password", from topologies.toml) and `nosudo` (no sudo rights).

    topo.sudo_inventory_path   .testbed/<topology>-sudo.py: as admin, _sudo=True, and
                          _sudo_password (read from the password file at load time) on the hosts
                          whose rule asks for one
    topo.sudo_password_path / topo.sudo_password()   admin's password file (0600) and its content
    topo.set_sudo_mode(mode, host=None)   "nopasswd" | "password" | "default", on one host or all
                          of the topology; the -sudo inventory follows
    with topo.sudo_mode(mode, host=None): ...   the same, back to "default" afterwards
    topo.write_sudo_inventory(path, user="admin", password_hosts=None)   a variant (another
                          user, e.g. "nosudo"; password_hosts=[] for --same-sudo-password)

The Slurm-web release of an agent host's stand-in ("5.2" or "6.0", `slurmweb` in
topologies.toml; tests/testbed/slurmweb_pkg.py):

    topo.set_slurmweb(host, release)   reinstall its slurm-web-agent package of that release
                          ("default": the topology's), restart the agent unit if it was active;
                          returns dpkg's version (e.g. "5.2.0-1standin")
    with topo.slurmweb_release(host, release): ...   the same, back to the default afterwards
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.testbed.errors import TestbedError
from tests.testbed.topology import Cluster, Host, Topology


class SSHCommandError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        def tail(data: Any) -> str:
            if isinstance(data, bytes):
                data = data.decode("utf-8", "replace")
            return "\n".join((data or "").strip().splitlines()[-20:])

        return (
            f"{super().__str__()}\n--- stdout ---\n{tail(self.stdout)}"
            f"\n--- stderr ---\n{tail(self.stderr)}"
        )


@dataclass
class RunningTopology:
    topology: Topology
    inventory_path: Path
    _testbed: Any = field(repr=False)

    @property
    def name(self) -> str:
        return self.topology.name

    @property
    def hosts(self) -> list[Host]:
        return self.topology.hosts

    @property
    def clusters(self) -> dict[str, Cluster]:
        return self.topology.clusters

    def host(self, name: str) -> Host:
        return self.topology.host(name)

    def kill(self, host_name: str) -> None:
        """Power failure of one host of this topology: its disk is kept (see boot)."""
        self.topology.host(host_name)
        self._testbed.kill_host(host_name)

    def boot(self, host_name: str) -> None:
        """Boot a killed host again on its own disk; returns once its daemons are settled."""
        self.topology.host(host_name)
        self._testbed.boot_host(host_name)

    @property
    def sudo_inventory_path(self) -> Path:
        return Path(self._testbed.sudo_inventory_path(self.name))

    @property
    def sudo_password_path(self) -> Path:
        return Path(self._testbed.sudo_password_path)

    def sudo_password(self) -> str:
        """admin's sudo password (the same on every host)."""
        return str(self._testbed.sudo_password())

    def set_sudo_mode(self, mode: str, host: str | None = None) -> dict[str, str]:
        """admin's rule on one host, or every host of this topology ("default": topologies.toml)."""
        if host is not None:
            self.topology.host(host)
        return dict(self._testbed.set_sudo_mode(host or self.name, mode))

    @contextmanager
    def sudo_mode(self, mode: str, host: str | None = None) -> Iterator[dict[str, str]]:
        """set_sudo_mode for the `with` block, then the default rule again (even on failure)."""
        try:
            yield self.set_sudo_mode(mode, host)
        finally:
            self.set_sudo_mode("default", host)

    def set_slurmweb(self, host: str, release: str) -> str:
        """Switch an agent host's stand-in to Slurm-web `release` (see the module docstring)."""
        self.topology.host(host)
        return str(self._testbed.set_slurmweb(host, release))

    @contextmanager
    def slurmweb_release(self, host: str, release: str) -> Iterator[str]:
        """set_slurmweb for the `with` block, then the host's default again (even on failure)."""
        try:
            yield self.set_slurmweb(host, release)
        finally:
            self.set_slurmweb(host, "default")

    def write_sudo_inventory(self, path: Path, user: str = "admin",
                             password_hosts: Collection[str] | None = None) -> Path:
        return Path(self._testbed.write_sudo_inventory(self.name, path, user, password_hosts))

    def ssh(
        self,
        host_name: str,
        cmd: str,
        check: bool = True,
        input: bytes | None = None,
        text: bool = True,
        timeout: float | None = 120,
        user: str = "root",
    ) -> subprocess.CompletedProcess[Any]:
        """Run a shell command line on a host of this topology, as root unless told."""
        self.topology.host(host_name)  # only hosts of this topology
        res = self._testbed.ssh(host_name, cmd, input=input, timeout=timeout, user=user)
        out: Any = res.stdout
        err: Any = res.stderr
        if text:
            out = out.decode("utf-8", "replace")
            err = err.decode("utf-8", "replace")
        done = subprocess.CompletedProcess(res.args, res.returncode, out, err)
        if check and res.returncode != 0:
            where = host_name if user == "root" else f"{user}@{host_name}"
            raise SSHCommandError(res.returncode, f"[{where}] {cmd}", out, err)
        return done


class TestbedFactory:
    """Session-wide: brings topologies up on demand, remembers them, takes them down at the end."""

    __test__ = False

    def __init__(self, testbed: Any, fail: Any) -> None:
        self._testbed = testbed
        self._fail = fail  # pytest.fail: a testbed that cannot come up fails, never skips
        self._up: dict[str, RunningTopology] = {}
        self._errors: dict[str, str] = {}

    def up(self, name: str, fresh: bool = False) -> RunningTopology:
        """The running topology; fresh=True rebuilds its hosts back to the start state (~10 s)."""
        if name in self._errors:
            self._fail(self._errors[name])
        if name in self._up and not fresh:
            return self._up[name]
        try:
            (topology,) = self._testbed.up([name], fresh=fresh)
        except (TestbedError, OSError) as exc:
            ci = " (CI=true: end-to-end tests fail without their testbed)" if _in_ci() else ""
            self._errors[name] = f"testbed topology {name!r} could not come up{ci}: {exc}"
            self._fail(self._errors[name])
        running = RunningTopology(topology, self._testbed.inventory_path(name), self._testbed)
        self._up[name] = running
        return running

    def close(self) -> None:
        # SRA_TESTBED_KEEP=1 leaves the hosts up after the session (faster local iterations).
        if os.environ.get("SRA_TESTBED_KEEP") == "1":
            return
        # Only what this session brought up: another session may be using other topologies.
        # With nothing else up, this is a full `down` (bridge deleted, nothing left).
        names = sorted({*self._up, *self._errors})
        if names:
            self._testbed.down(names)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")
