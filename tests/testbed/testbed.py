"""The testbed as a whole: up, down, status and ssh, tying the pieces together."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.testbed import (
    accounts,
    basecache,
    hostconfig,
    logins,
    machine,
    provision,
    slurmweb_pkg,
)
from tests.testbed.errors import TestbedError
from tests.testbed.inventory import password_hosts, render_inventory, render_sudo_inventory
from tests.testbed.mounts import mounts_below, remove_tree, unmount_below
from tests.testbed.proc import say
from tests.testbed.sshrun import ensure_keypair, port_open, ssh, wait_ssh
from tests.testbed.topology import Catalog, Host, Topology, load_catalog

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = Path("/var/cache/slurmrestd-access-testbed")
STANDIN_SOURCE = Path(__file__).with_name("standin") / "slurm_web_agent_standin.py"
SSH_TIMEOUT = float(os.environ.get("SRA_TESTBED_SSH_TIMEOUT", "90"))


def cache_dir() -> Path:
    return Path(os.environ.get("SRA_TESTBED_CACHE") or DEFAULT_CACHE).resolve()


@dataclass(frozen=True)
class HostStatus:
    host: Host
    running: bool
    ssh: bool


class Testbed:
    __test__ = False  # not a pytest test class

    def __init__(
        self,
        catalog: Catalog | None = None,
        cache: Path | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.catalog = catalog or load_catalog()
        self.cache = cache or cache_dir()
        # Repo-relative and git-ignored: the key and the inventories.
        self.state_dir = state_dir or REPO / ".testbed"
        self.hosts_dir = self.cache / "hosts"
        self.clusters_dir = self.cache / "clusters"

    # --- paths -----------------------------------------------------------------------------

    @property
    def key_path(self) -> Path:
        return self.state_dir / "id_ed25519"

    def inventory_path(self, topology: str | None = None) -> Path:
        return self.state_dir / (f"{topology}.py" if topology else "inventory.py")

    def sudo_inventory_path(self, topology: str) -> Path:
        """The topology's inventory as `admin` over sudo (see accounts.py)."""
        return self.state_dir / f"{topology}-sudo.py"

    @property
    def sudo_password_path(self) -> Path:
        """admin's sudo password on every host, in a file only root can read (0600)."""
        return self.state_dir / accounts.PASSWORD_FILE_NAME

    def sudo_password(self) -> str:
        try:
            return accounts.read_password(self.sudo_password_path)
        except FileNotFoundError:
            raise TestbedError(f"no {self.sudo_password_path} yet: run "
                               "`python -m tests.testbed up TOPOLOGY`") from None

    @property
    def _sudo_modes_path(self) -> Path:
        # Hosts whose rule was switched away from their topology's default since their `up`.
        return self.state_dir / "sudo-modes.json"

    def dirs(self, host: Host) -> machine.HostDirs:
        return machine.HostDirs(self.hosts_dir / host.name)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # One up/down at a time: two concurrent runs would fight over mounts and the bridge.
        self.cache.mkdir(parents=True, exist_ok=True)
        with (self.cache / ".lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    # --- up --------------------------------------------------------------------------------

    def up(self, names: list[str], fresh: bool = False) -> list[Topology]:
        """Bring topologies up; fresh=True rebuilds their hosts even if healthy (start state)."""
        topologies = [self.catalog.topology(n) for n in dict.fromkeys(names)]
        machine.check_root()
        specs = {t.release: basecache.spec_for(t.release) for t in topologies}
        building = any(not basecache.is_complete(basecache.base_dir(self.cache, spec))
                       for spec in specs.values())
        machine.check_tools(building)
        machine.check_disk(self.cache, building)
        started = time.monotonic()
        with self._locked():
            bases = {release: basecache.ensure_base(self.cache, spec)
                     for release, spec in specs.items()}
            self._refuse_foreign_hosts()
            key = ensure_keypair(self.state_dir)
            machine.ensure_bridge(self.catalog.network)
            hosts = [h for t in topologies for h in t.hosts]
            if fresh:
                self._destroy(hosts)
                for cluster in (c for t in topologies for c in t.clusters.values()):
                    remove_tree(self._state_save_dir(cluster.name))
            booted = self._start_hosts(bases, key, hosts)
            if booted:
                say(f"testbed: booted {', '.join(h.name for h in booted)}; waiting for SSH")
            self._wait_ssh_or_reboot(bases, key, hosts)
            say("testbed: waiting for munge, MariaDB, slurmdbd, slurmctld, slurmd and the agent")
            # admin's password and rule need only sshd: set while the daemons settle (~0.5 s).
            with ThreadPoolExecutor(max_workers=1) as side:
                accounts_set = side.submit(self._set_up_accounts, key, hosts)
                with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
                    list(pool.map(lambda h: provision.settle_host(key, h), hosts))
                accounts_set.result()
            self._wait_logins(key, hosts)
            # A reused host gets its topology's Slurm-web release back (a test may have switched
            # it) and this worktree's stand-in; a booted one has them already (a no-op here).
            agents = [h for h in hosts if h.is_agent_host and h not in booted]
            if agents:
                with ThreadPoolExecutor(max_workers=len(agents)) as pool:
                    list(pool.map(lambda h: self._install_slurmweb(key, h, h.slurmweb), agents))
            clusters = [c for t in topologies for c in t.clusters.values()]
            with ThreadPoolExecutor(max_workers=len(clusters)) as pool:
                list(pool.map(lambda c: provision.cluster_ready(key, c), clusters))
            self._write_inventories(key)
        reused = len(hosts) - len(booted)
        say(
            f"testbed: {', '.join(t.name for t in topologies)} up in "
            f"{time.monotonic() - started:.1f} s ({len(booted)} booted, {reused} reused)"
        )
        return topologies

    def _refuse_foreign_hosts(self) -> None:
        """Hosts booted with another SRA_TESTBED_CACHE would clash on names and addresses."""
        bridge = self.catalog.network.bridge
        prefix = str(self.hosts_dir) + "/"
        foreign = [
            str(root) for root in machine.nspawn_pids_below(self.hosts_dir, bridge).values()
            if not str(root).startswith(prefix)
        ]
        if foreign:
            raise TestbedError(
                f"testbed hosts from another cache dir are running ({', '.join(foreign)}): "
                "run `python -m tests.testbed down` first"
            )

    def _destroy(self, hosts: list[Host]) -> None:
        # Signal all first so they power off in parallel.
        pids = [p for h in hosts if (p := machine.running_pid(self.dirs(h))) is not None]
        for pid in pids:
            machine.signal_pid(pid)
        for host in hosts:
            machine.destroy_host(self.dirs(host))

    def build_bases(self, releases: list[str]) -> list[Path]:
        """Build (or find) the cached bases of these Debian releases, booting nothing."""
        specs = [basecache.spec_for(r) for r in dict.fromkeys(releases)]
        machine.check_root()
        building = any(not basecache.is_complete(basecache.base_dir(self.cache, s))
                       for s in specs)
        machine.check_tools(building)
        machine.check_disk(self.cache, building)
        with self._locked():
            return [basecache.ensure_base(self.cache, spec) for spec in specs]

    def _start_hosts(self, bases: dict[str, Path], key: Path, hosts: list[Host]) -> list[Host]:
        fresh = []
        for host in hosts:
            dirs = self.dirs(host)
            base = bases[host.release]
            if self._healthy(host, base, key):
                continue
            # Anything half there (stopped, wrong base, not answering) is rebuilt from scratch.
            machine.destroy_host(dirs)
            self._create_host(base, key, host, dirs)
            fresh.append(host)
        return fresh

    def _healthy(self, host: Host, base: Path, key: Path) -> bool:
        dirs = self.dirs(host)
        if machine.running_pid(dirs) is None:
            return False
        try:
            lower = (dirs.top / "base").read_text().strip()
        except OSError:
            return False
        if lower != str(base):
            return False
        if not port_open(host.address):
            return False
        return ssh(key, host.address, "true", timeout=15).returncode == 0

    def _create_host(self, base: Path, key: Path, host: Host, dirs: machine.HostDirs) -> None:
        dirs.top.mkdir(parents=True, exist_ok=True)
        (dirs.top / "base").write_text(f"{base}\n")
        machine.mount_overlay(base, dirs)
        files = hostconfig.host_files(
            self.catalog,
            host,
            munge_key=self._munge_key(host.cluster),
            authorized_key=key.with_suffix(".pub").read_text(),
            machine_id=uuid.uuid4().hex,
            gateway_key=secrets.token_bytes(32),
        )
        machine.write_files(dirs.root, files)
        if host.is_agent_host:
            # Before enable_units: the package ships the agent units.
            slurmweb_pkg.install_offline(dirs.root, host.slurmweb, STANDIN_SOURCE.read_text())
        machine.enable_units(dirs.root, hostconfig.enabled_units(host))
        machine.boot(dirs, host.name, self.catalog.network.bridge,
                     unified_cgroup=basecache.spec_for(host.release).unified_cgroup,
                     binds=self._binds(host, dirs))

    def _state_save_dir(self, cluster: str) -> Path:
        # Beside the cluster's munge key: removed by `down` with it (remove_tree unmounts first).
        return self.clusters_dir / cluster / "statesave"

    def _binds(self, host: Host, dirs: machine.HostDirs) -> tuple[tuple[Path, str], ...]:
        """High availability: every controller of the cluster binds the one StateSaveLocation."""
        topo = self.catalog.topology_of(host.name)
        cluster = topo.clusters[host.cluster]
        if not (host.has("slurmctld") and cluster.shares_state):
            return ()
        self._munge_key(host.cluster)  # creates the cluster's directory root-only (0700)
        shared = machine.shared_dir(self._state_save_dir(host.cluster), dirs.root, "slurm")
        return ((shared, hostconfig.STATE_SAVE_LOCATION),)

    def _munge_key(self, cluster: str) -> bytes:
        """One key per cluster, kept while any of its hosts may be up so a rebuilt host joins."""
        path = self.clusters_dir / cluster / "munge.key"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(secrets.token_bytes(1024))
            tmp.chmod(0o600)
            os.replace(tmp, path)
        return path.read_bytes()

    def _silent_hosts(self, key: Path, hosts: list[Host]) -> list[Host]:
        deadline = time.monotonic() + SSH_TIMEOUT
        with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
            answered = list(pool.map(lambda h: wait_ssh(key, h.address, deadline), hosts))
        return [h for h, ok in zip(hosts, answered, strict=True) if not ok]

    def _wait_ssh_or_reboot(self, bases: dict[str, Path], key: Path, hosts: list[Host]) -> None:
        """Wait for SSH; a host that stays silent is booted afresh once before giving up.

        Seen in CI: one host of several booted together now and then never brought up sshd
        while the others did; a second boot of the same overlay came up normally.
        """
        silent = self._silent_hosts(key, hosts)
        if silent:
            for h in silent:
                log = self.dirs(h).console_log
                if log.exists():
                    kept = self.cache / f"silent-{h.name}-console.log"
                    kept.write_bytes(log.read_bytes())
                    say(f"testbed: {h.name} did not answer SSH; its console log is kept in "
                        f"{kept}; booting it again")
            self._destroy(silent)
            self._start_hosts(bases, key, silent)
            silent = self._silent_hosts(key, silent)
        if silent:
            details = "; ".join(
                f"{h.name} ({h.address}), console log {self.dirs(h).console_log}" for h in silent
            )
            raise TestbedError(
                f"host(s) never answered SSH within {SSH_TIMEOUT:.0f} s: {details}. "
                "Read the console log, then `python -m tests.testbed down` and retry "
                "(SRA_TESTBED_SSH_TIMEOUT raises the wait)"
            )

    def _wait_logins(self, key: Path, hosts: list[Host]) -> None:
        """Every account of the inventories (root, admin, nosudo) logs in and runs a command on
        every host, or `up` fails naming the host and account (logins.py says why root alone
        is not enough)."""
        by_name = {h.name: h for h in hosts}

        def probe(name: str, user: str) -> logins.LoginResult:
            try:
                res = ssh(key, by_name[name].address, logins.PROBE, timeout=15, user=user)
            except TestbedError as exc:
                return logins.LoginResult(255, "", str(exc))
            return logins.LoginResult(res.returncode, res.stdout.decode(errors="replace"),
                                      res.stderr.decode(errors="replace"))

        def diagnose(name: str) -> str:
            try:
                res = ssh(key, by_name[name].address, logins.DIAGNOSE, timeout=30)
            except TestbedError as exc:
                return str(exc)
            return (res.stdout + res.stderr).decode(errors="replace").strip()

        waited = logins.wait_logins(by_name, probe, SSH_TIMEOUT, diagnose=diagnose)
        slow = {n: w for n, w in waited.items() if w >= 1.0}
        if slow:
            say("testbed: non-root logins waited for " + ", ".join(
                f"{n} {w:.1f} s" for n, w in sorted(slow.items())))

    # --- admin's password and sudo rule ---------------------------------------------------

    def _set_up_accounts(self, key: Path, hosts: list[Host]) -> None:
        """admin's password and its topology's default sudo rule on every host being brought up
        (booted or reused: `up` resets a switched rule); a newly generated password also goes to
        the hosts of the other topologies still up, so every running host matches the file."""
        password, created = accounts.ensure_password_file(self.sudo_password_path)
        modes = self._load_sudo_modes()
        for host in hosts:
            modes.pop(host.name, None)
        targets = {h.name: h for h in hosts}
        if created:
            targets.update((h.name, h) for t in self.running_topologies() for h in t.hosts)
        with ThreadPoolExecutor(max_workers=len(targets)) as pool:
            list(pool.map(lambda h: self._apply_sudo(key, h, modes.get(h.name, h.sudo), password),
                          targets.values()))
        self._save_sudo_modes(modes)

    def _apply_sudo(self, key: Path, host: Host, mode: str, password: str | None) -> None:
        script = accounts.apply_script(mode, set_password=password is not None)
        stdin = accounts.chpasswd_input(password) if password is not None else None
        res = ssh(key, host.address, script, input=stdin, timeout=60)
        if res.returncode != 0:
            out = (res.stdout + res.stderr).decode(errors="replace").strip()
            raise TestbedError(f"{host.name}: setting admin's sudo rule ({mode}) "
                               f"failed (exit {res.returncode}):\n{out}")

    def _sudo_targets(self, target: str) -> list[Host]:
        """A topology's hosts, or one host, each of them running."""
        if target in self.catalog.topologies:
            hosts = self.catalog.topology(target).hosts
        else:
            try:
                hosts = [self.catalog.host(target)]
            except TestbedError:
                known = ", ".join(self.catalog.topologies)
                raise TestbedError(
                    f"{target!r} is neither a topology ({known}) nor a host of one"
                ) from None
        for host in hosts:
            if machine.running_pid(self.dirs(host)) is None:
                topo = self.catalog.topology_of(host.name).name
                raise TestbedError(
                    f"host {host.name} is not up: `python -m tests.testbed up {topo}`"
                )
        return hosts

    def set_sudo_mode(self, target: str, mode: str) -> dict[str, str]:
        """Switch admin's sudo rule on a host or on every host of a topology: "nopasswd",
        "password", or "default" (each host's `sudo` in topologies.toml). The topology's
        `-sudo.py` inventory follows (`_sudo_password` exactly where a password is asked).
        Returns each host's rule now."""
        hosts = self._sudo_targets(target)
        wanted = {h.name: h.sudo if mode == "default" else accounts.check_mode(mode)
                  for h in hosts}
        if not self.key_path.is_file():
            raise TestbedError("no testbed key yet: run `python -m tests.testbed up TOPOLOGY`")
        with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
            list(pool.map(lambda h: self._apply_sudo(self.key_path, h, wanted[h.name], None),
                          hosts))
        with self._locked():
            modes = self._load_sudo_modes()
            for host in hosts:
                if wanted[host.name] == host.sudo:
                    modes.pop(host.name, None)
                else:
                    modes[host.name] = wanted[host.name]
            self._save_sudo_modes(modes)
            self._write_inventories(self.key_path)
        return wanted

    def sudo_modes(self, target: str) -> dict[str, str | None]:
        """admin's rule as each host has it now (read on the host; None: not the testbed's)."""
        hosts = self._sudo_targets(target)

        def read(host: Host) -> str | None:
            res = ssh(self.key_path, host.address, f"cat {accounts.SUDOERS_PATH}", timeout=30)
            return accounts.mode_of(res.stdout.decode(errors="replace")) if (
                res.returncode == 0) else None

        with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
            return dict(zip((h.name for h in hosts), pool.map(read, hosts), strict=True))

    def _load_sudo_modes(self) -> dict[str, str]:
        try:
            data = json.loads(self._sudo_modes_path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if v in accounts.SUDO_MODES}

    def _save_sudo_modes(self, modes: dict[str, str]) -> None:
        if modes:
            _write_text(self._sudo_modes_path, json.dumps(modes, indent=2, sort_keys=True) + "\n")
        else:
            self._sudo_modes_path.unlink(missing_ok=True)

    def write_sudo_inventory(
        self,
        topology: str,
        path: Path,
        user: str = accounts.ADMIN_USER,
        password_hosts: Collection[str] | None = None,
    ) -> Path:
        """A variant of `<topology>-sudo.py` for a test: another user (e.g. accounts.NOSUDO_USER)
        and/or `_sudo_password` on other hosts (empty: none, for `--same-sudo-password` or
        pyinfra's prompt). None: the hosts whose current rule asks for a password."""
        topo = self.catalog.topology(topology)
        hosts = (self._password_hosts([topo]) if password_hosts is None
                 else list(password_hosts))
        _write_text(path, render_sudo_inventory([topo], self.key_path, self.sudo_password_path,
                                                hosts, user))
        return path

    def _password_hosts(self, topologies: list[Topology]) -> list[str]:
        return password_hosts(topologies, self._load_sudo_modes())

    # --- inventories -----------------------------------------------------------------------

    def running_topologies(self) -> list[Topology]:
        return [
            t for t in self.catalog.topologies.values()
            if all(machine.running_pid(self.dirs(h)) is not None for h in t.hosts)
        ]

    def _write_inventories(self, key: Path) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        running = self.running_topologies()
        for topo in self.catalog.topologies.values():
            path = self.inventory_path(topo.name)
            sudo_path = self.sudo_inventory_path(topo.name)
            if topo in running:
                _write_text(path, render_inventory([topo], key))
                _write_text(sudo_path, render_sudo_inventory(
                    [topo], key, self.sudo_password_path, self._password_hosts([topo])))
            else:
                path.unlink(missing_ok=True)
                sudo_path.unlink(missing_ok=True)
        if running:
            _write_text(self.inventory_path(), render_inventory(running, key))
        else:
            self.inventory_path().unlink(missing_ok=True)

    # --- down ------------------------------------------------------------------------------

    def down(self, names: list[str] | None = None) -> list[str]:
        """Stop hosts, unmount their overlays; return the hosts stopped.

        Without names: every host, and the bridge is deleted (nothing is left). With topology
        names: only their hosts; the bridge goes only once no host at all is left on it.
        """
        machine.check_root()
        started = time.monotonic()
        with self._locked():
            if names is None:
                stopped = self._down_all()
            else:
                hosts = [h for n in dict.fromkeys(names) for h in self.catalog.topology(n).hosts]
                stopped = [h.name for h in hosts if machine.running_pid(self.dirs(h))]
                self._destroy(hosts)
                modes = self._load_sudo_modes()
                self._save_sudo_modes({k: v for k, v in modes.items()
                                       if k not in {h.name for h in hosts}})
                for name in names:
                    for cluster in self.catalog.topology(name).clusters:
                        remove_tree(self.clusters_dir / cluster)
                bridge = self.catalog.network.bridge
                if not machine.nspawn_pids_below(self.hosts_dir, bridge):
                    self._down_all()
                elif self.key_path.is_file():
                    self._write_inventories(self.key_path)
        say(f"testbed: down in {time.monotonic() - started:.1f} s ({len(stopped)} hosts stopped)")
        return stopped

    def _down_all(self) -> list[str]:
        stopped = []
        bridge = self.catalog.network.bridge
        pids = machine.nspawn_pids_below(self.hosts_dir, bridge)
        # Signal every host first so they power off in parallel, then wait for each.
        for pid in pids:
            machine.signal_pid(pid)
        for pid, root in pids.items():
            stopped.append(root.parent.name)
            machine.stop_pid(pid)
            # A host booted with another SRA_TESTBED_CACHE: unmount it, leave its files.
            unmount_below(root)
        if self.hosts_dir.exists():
            for top in sorted(self.hosts_dir.iterdir()):
                machine.destroy_host(machine.HostDirs(top))
            remove_tree(self.hosts_dir)
        remove_tree(self.clusters_dir)
        machine.remove_bridge(self.catalog.network)
        for topo in self.catalog.topologies:
            self.inventory_path(topo).unlink(missing_ok=True)
            self.sudo_inventory_path(topo).unlink(missing_ok=True)
        self.inventory_path().unlink(missing_ok=True)
        # Nothing is up any more: no rule is switched. The password file stays, like the key.
        self._sudo_modes_path.unlink(missing_ok=True)
        left = mounts_below(self.hosts_dir)
        if left or machine.nspawn_pids_below(self.hosts_dir, bridge):
            raise TestbedError(f"down left mounts or processes behind: {left}")
        return stopped

    # --- one host's power ------------------------------------------------------------------

    def kill_host(self, host_name: str) -> None:
        """Kill a running host as a power failure would (see machine.kill_container)."""
        machine.kill_container(self.dirs(self.catalog.host(host_name)))

    def boot_host(self, host_name: str) -> None:
        """Boot a killed host again on its own disk; returns once its daemons are settled."""
        host = self.catalog.host(host_name)
        dirs = self.dirs(host)
        if machine.running_pid(dirs) is not None:
            return
        machine.remove_stale_veth(dirs)
        machine.boot(dirs, host.name, self.catalog.network.bridge,
                     unified_cgroup=basecache.spec_for(host.release).unified_cgroup,
                     binds=self._binds(host, dirs))
        if not wait_ssh(self.key_path, host.address, time.monotonic() + SSH_TIMEOUT):
            raise TestbedError(f"{host.name} did not answer SSH after booting again; console "
                               f"log: {dirs.console_log}")
        provision.settle_host(self.key_path, host)
        self._wait_logins(self.key_path, [host])

    # --- the Slurm-web release of an agent host ---------------------------------------------

    def _install_slurmweb(self, key: Path, host: Host, release: str) -> tuple[str, bool]:
        """Install the stand-in package of `release` on a running agent host (skipped when the
        same package is there): (dpkg's version, whether it was installed now)."""
        source = STANDIN_SOURCE.read_text()
        res = ssh(key, host.address, slurmweb_pkg.install_script(release, source),
                  input=slurmweb_pkg.build_deb(release, source), timeout=120)
        out = res.stdout.decode(errors="replace").split()
        if res.returncode != 0 or len(out) < 2:
            detail = (res.stdout + res.stderr).decode(errors="replace").strip()
            raise TestbedError(f"{host.name}: installing the Slurm-web {release} stand-in "
                               f"package failed (exit {res.returncode}):\n{detail}")
        return out[-2], out[-1] == "installed"

    def _agent_host(self, host_name: str) -> Host:
        host = self.catalog.host(host_name)
        if not host.is_agent_host:
            raise TestbedError(f"{host.name} has no Slurm-web agent (not the slurmrestd host "
                               "of its cluster)")
        return host

    def set_slurmweb(self, host_name: str, release: str) -> str:
        """Make a running agent host's agent Slurm-web `release` ("5.2", "6.0", or "default":
        its topologies.toml setting): its package reinstalled, systemd reloaded, the agent unit
        restarted if it was active. Returns what dpkg-query then answers (e.g. 5.2.0-1standin).
        `up` puts the default back on the hosts it reuses."""
        host = self._agent_host(host_name)
        wanted = host.slurmweb if release == "default" else release
        self.ssh(host.name, "true")  # a clear error when the host is not up
        version, _ = self._install_slurmweb(self.key_path, host, wanted)
        return version

    def slurmweb(self, host_name: str) -> str | None:
        """The slurm-web-agent package version on a running agent host (None: not installed)."""
        host = self._agent_host(host_name)
        res = self.ssh(host.name, f"dpkg-query -W -f='${{Version}}' {slurmweb_pkg.PACKAGE}")
        version = res.stdout.decode().strip()
        return version if res.returncode == 0 and version else None

    # --- status and ssh --------------------------------------------------------------------

    def status(self) -> list[HostStatus]:
        result = []
        for host in self.catalog.all_hosts:
            running = machine.running_pid(self.dirs(host)) is not None
            answers = running and port_open(host.address, timeout=0.5)
            result.append(HostStatus(host, running, answers))
        return result

    def ssh(
        self,
        host_name: str,
        command: str,
        input: bytes | None = None,
        timeout: float | None = None,
        stream: bool = False,
        user: str = "root",
    ) -> subprocess.CompletedProcess[bytes]:
        host = self.catalog.host(host_name)
        if not self.key_path.is_file():
            raise TestbedError("no testbed key yet: run `python -m tests.testbed up TOPOLOGY`")
        if machine.running_pid(self.dirs(host)) is None:
            topo = self.catalog.topology_of(host.name).name
            raise TestbedError(f"host {host.name} is not up: `python -m tests.testbed up {topo}`")
        return ssh(self.key_path, host.address, command, input=input, timeout=timeout,
                   capture=not stream, user=user)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
