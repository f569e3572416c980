"""Fakes and a harness for the watch daemon's tests (no tests in this module).

Real files in tmp dirs, real `watchdog` observers and the real keyfile module; fakes for what
would touch the host or Slurm: systemctl, the verify against slurmrestd, the agent check.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from watchdog_daemon.exitcodes import ExitCode
from watchdog_daemon.keys.secret import SecretBytes
from watchdog_daemon.system.systemctl import SystemctlError, UnitState
from watchdog_daemon.watch.config import WatchConfig
from watchdog_daemon.watch.daemon import WatchDaemon
from watchdog_daemon.watch.keystore import RealKeyStore
from watchdog_daemon.watch.verdict import ProbeResult, Verdict

OWNER, GROUP = "nobody", "nogroup"
AGENT = "slurm-web-agent.service"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def new_key(tag: str = "") -> bytes:
    return (tag.encode() + os.urandom(32))[:48].ljust(40, b"x")


class ListLogger:
    """Stands in for a structlog logger: records (level, event, fields)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def _add(self, level: str, event: str, **fields: Any) -> None:
        with self._lock:
            self.records.append((level, event, fields))

    def debug(self, event: str, **fields: Any) -> None:
        self._add("debug", event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self._add("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._add("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._add("error", event, **fields)

    def events(self, name: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return [(e, f) for _lvl, e, f in self.records if name is None or e == name]

    def names(self) -> list[str]:
        with self._lock:
            return [e for _lvl, e, _f in self.records]


class FakeSystemctl:
    """Units with a state; restart() may fail; every call recorded."""

    def __init__(self, units: dict[str, str] | None = None) -> None:
        # unit -> active state; missing units are "not-found"
        self.active = dict(units if units is not None else {AGENT: "active"})
        self.restarts: list[str] = []
        self.restart_attempts: list[str] = []
        self.fail_restart: int | None = 0  # None: always fail; n: fail the next n
        self.raise_on_show: BaseException | None = None
        self._lock = threading.Lock()
        # When each unit's main process started (CLOCK_MONOTONIC µs), as systemd says it.
        now = time.monotonic_ns() // 1000
        self.started_us: dict[str, int] = {unit: now for unit in self.active}

    def show(self, unit: str) -> UnitState:
        if self.raise_on_show is not None:
            raise self.raise_on_show
        state = self.active.get(unit)
        if state is None:
            return UnitState(unit, "not-found", "inactive", "")
        # "ACTIVE" or "ACTIVE:UNITFILE" ("inactive:disabled": stopped on purpose)
        active, _, unit_file = state.partition(":")
        return UnitState(unit, "loaded", active, unit_file or "enabled",
                         self.started_us.get(unit))

    def start(self, unit: str) -> None:
        """What `systemctl start` does to a unit: active, started now."""
        with self._lock:
            self.active[unit] = "active"
            self.started_us[unit] = time.monotonic_ns() // 1000

    def restart(self, unit: str, *, timeout: float) -> None:
        with self._lock:
            self.restart_attempts.append(unit)
            if self.fail_restart is None or self.fail_restart > 0:
                if self.fail_restart:
                    self.fail_restart -= 1
                self.active[unit] = "failed"
                raise SystemctlError(f"systemctl restart {unit}: Job failed (fake)")
            self.active[unit] = "active"
            self.started_us[unit] = time.monotonic_ns() // 1000
            self.restarts.append(unit)


class FakeSlurm:
    """Which keys slurmctld and slurmdbd accept; a verifier, an agent check and a probe of the
    agent's copy on top of it. `ctld_refusals` counts what would be an authentication error line
    in slurmctld's log (a refused token, the verify's decoy)."""

    def __init__(self, accepted: bytes, copy_path: Path) -> None:
        self.accepted = {sha(accepted)}  # slurmctld's
        self.dbd_accepted: set[str] | None = None  # None: the same as slurmctld's
        self.copy_path = copy_path
        self.verified: list[str] = []  # sha of every key asked about
        self.agent_checks = 0
        self.probes: list[frozenset[str]] = []  # the daemons skipped, per probe
        self.ctld_refusals = 0
        self.accept_any = False
        self.probe_error: Verdict | None = None  # e.g. slurmctld unreachable while it restarts

    def accept_only(self, key: bytes) -> None:
        """Both daemons reloaded `key` (scontrol reconfigure + slurmdbd restart)."""
        self.accepted = {sha(key)}
        self.dbd_accepted = None

    def reload_ctld(self, key: bytes) -> None:
        if self.dbd_accepted is None:
            self.dbd_accepted = set(self.accepted)
        self.accepted = {sha(key)}

    def reload_dbd(self, key: bytes) -> None:
        self.dbd_accepted = {sha(key)}

    def _ctld(self, digest: str) -> bool:
        ok = self.accept_any or digest in self.accepted
        self.ctld_refusals += 0 if ok else 1
        return ok

    def _dbd(self, digest: str) -> bool:
        accepted = self.accepted if self.dbd_accepted is None else self.dbd_accepted
        return self.accept_any or digest in accepted

    def _ask(self, digest: str, *, decoy: bool) -> Verdict:
        if not self._ctld(digest):
            return Verdict(False, "rejected_by_slurmctld", ExitCode.REJECTED_BY_SLURMCTLD,
                           "slurmctld rejected the token", rejected=True)
        if decoy:
            self.ctld_refusals += 1  # a token signed with a random key, refused
        if not self._dbd(digest):
            return Verdict(False, "rejected_by_slurmdbd", ExitCode.REJECTED_BY_SLURMDBD,
                           "slurmdbd rejected the token", rejected=True)
        return Verdict(True, "ok", 0, "connection successful",
                       details={"slurm": "24.11.5", "cluster": "hpc"})

    def verify(self, key: SecretBytes) -> Verdict:
        self.verified.append(key.sha256)
        return self._ask(key.sha256, decoy=True)

    def agent_check(self) -> Verdict:
        self.agent_checks += 1
        try:
            data = self.copy_path.read_bytes()
        except OSError:
            return Verdict(False, "key_missing", ExitCode.KEY_MISSING, "copy missing")
        return self._ask(sha(data), decoy=False)

    def probe(self, skip: frozenset[str]) -> ProbeResult:
        self.probes.append(skip)
        try:
            digest = sha(self.copy_path.read_bytes())
        except OSError:
            return ProbeResult(usable=False)
        ask = [d for d in ("slurmctld", "slurmdbd") if d not in skip]
        if not ask:
            return ProbeResult(usable=False)
        if self.probe_error is not None:
            return ProbeResult(error=self.probe_error)
        accepted, refused = set(), set()
        for daemon in ask:
            ok = self._ctld(digest) if daemon == "slurmctld" else self._dbd(digest)
            (accepted if ok else refused).add(daemon)
        return ProbeResult(accepted=frozenset(accepted), refused=frozenset(refused))


class RecordingKeyStore(RealKeyStore):
    """The real key files, plus a record of every key content installed."""

    def __init__(self) -> None:
        self.installed: list[str] = []
        self.fail_install: Callable[[SecretBytes], None] | None = None

    def install(self, secret: SecretBytes, dest: Path, *, owner: str, group: str,
                mode: int) -> bool:
        if self.fail_install is not None:
            self.fail_install(secret)
        changed = super().install(secret, dest, owner=owner, group=group, mode=mode)
        if changed:
            self.installed.append(secret.sha256)
        return changed


def write_key(path: Path, data: bytes, mode: int = 0o600) -> None:
    """A rotation as it should be done: new file, mode set, renamed over the key."""
    tmp = path.parent / f".new-{os.getpid()}-{time.monotonic_ns()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def install_copy(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    os.chown(path, 65534, 65534)
    os.chmod(path, 0o400)


def wait_for(pred: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return bool(pred())


def tree(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple[int, int, str]]:
    """path -> (mode, size, sha) of everything under root, except the skipped directories."""
    out: dict[str, tuple[int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = [n for n in dirnames if d / n not in skip]
        for name in filenames + [n for n in dirnames]:
            p = d / name
            st = os.lstat(p)
            digest = ""
            if os.path.isfile(p) and not os.path.islink(p):
                digest = sha(p.read_bytes())
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, digest)
    return out


@dataclass
class Harness:
    root: Path
    config: WatchConfig
    old_key: bytes
    slurm: FakeSlurm
    systemctl: FakeSystemctl
    keys: RecordingKeyStore
    log: ListLogger
    observer_factory: Any = None
    tick: float = 0.02
    daemon: WatchDaemon | None = None
    thread: threading.Thread | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key_path(self) -> Path:
        return self.config.key_path

    @property
    def copy_path(self) -> Path:
        return self.config.copy_path

    def build(self) -> WatchDaemon:
        kwargs: dict[str, Any] = {}
        if self.observer_factory is not None:
            kwargs["observer_factory"] = self.observer_factory
        self.daemon = WatchDaemon(
            self.config, keys=self.keys, verifier=self.slurm.verify,
            agent_check=self.slurm.agent_check, probe=self.slurm.probe,
            systemctl=self.systemctl, logger=self.log,
            tick=self.tick, rand=lambda: 0.5, **kwargs,
        )
        return self.daemon

    def start(self, *, wait_ready: bool = True) -> WatchDaemon:
        daemon = self.daemon or self.build()
        self.thread = threading.Thread(target=daemon.run, kwargs={"install_signals": False},
                                       daemon=True)
        self.thread.start()
        if wait_ready:
            assert daemon.first_run_done.wait(5), "daemon did not finish its first run"
        return daemon

    def stop(self) -> None:
        if self.daemon is not None and self.thread is not None:
            self.daemon.request_stop()
            self.thread.join(10)
            assert not self.thread.is_alive(), "daemon did not stop"

    def copy_bytes(self) -> bytes:
        return self.copy_path.read_bytes()

    def idle(self, seconds: float = 0.3) -> None:
        """Let the daemon settle: no run in progress and no trigger pending."""
        assert self.daemon is not None
        deadline = time.monotonic() + 5
        time.sleep(seconds)
        while time.monotonic() < deadline and (
            self.daemon._busy_since is not None or self.daemon.trigger.pending
        ):
            time.sleep(0.01)


def make_harness(tmp_path: Path, *, in_sync: bool = True, units: dict[str, str] | None = None,
                 observer_factory: Any = None, **overrides: Any) -> Harness:
    key_dir = tmp_path / "spool" / "slurm"
    copy_dir = tmp_path / "lib" / "slurm-web"
    key_dir.mkdir(parents=True)
    copy_dir.mkdir(parents=True)
    old = new_key("old")
    key_path = key_dir / "jwt_hs256.key"
    copy_path = copy_dir / "slurmrestd.key"
    write_key(key_path, old)
    install_copy(copy_path, old if in_sync else new_key("stale"))
    config = WatchConfig(
        key_path=key_path, copy_path=copy_path, copy_owner=OWNER, copy_group=GROUP,
        agent_ini=tmp_path / "agent.ini", reconcile_interval=30.0, quiet=0.2,
        quiet_cap=3.0, backoff_base=0.05, backoff_cap=0.2, restart_spacing=0.0,
        probe_interval=0.05,
        state_file=tmp_path / "run" / "watch-state.json",
    )
    config = replace(config, **overrides)
    return Harness(root=tmp_path, config=config, old_key=old,
                   slurm=FakeSlurm(old, copy_path), systemctl=FakeSystemctl(units),
                   keys=RecordingKeyStore(), log=ListLogger(), observer_factory=observer_factory)


class DeafObserver:
    """An observer that is alive but never reports anything (lost events, NFS)."""

    def __init__(self) -> None:
        self._alive = False
        self.emitters: list[Any] = [self]

    def schedule(self, *args: Any, **kwargs: Any) -> None:
        return None

    def start(self) -> None:
        self._alive = True

    def stop(self) -> None:
        self._alive = False

    def join(self, timeout: float | None = None) -> None:
        return None

    def is_alive(self) -> bool:
        return self._alive


# ------------------------------------------------------------------------------------------
# Guard against gevent. Importing pyinfra_cli runs gevent's monkey.patch_all() for the whole
# pytest process: threads become greenlets and a blocking inotify read or lock wait in one of
# the daemon's threads freezes all of them. Tests that need pyinfra_cli load it in a child
# process; should one forget, these tests fail at once with the reason instead of hanging.


def gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey is not None and monkey.is_module_patched("threading"))


@pytest.fixture(autouse=True)
def refuse_gevent_patched_process() -> None:
    if gevent_patched():
        pytest.fail("this test process was gevent-patched (an in-process import of pyinfra_cli): "
                    "load pyinfra_cli in a child process instead", pytrace=False)
