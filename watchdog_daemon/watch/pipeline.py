"""One sync run: Slurm's key -> verified by Slurm -> agent copy -> agent restart -> agent check.

Pure logic over injected dependencies (key files, verifier, agent check, systemctl, clock), so
every fault is tested fast. The worker calls `run()` for each batch of triggers, one at a time;
`run()` returns when the next run is due on its own (backoff), or None.

The order, and why:
1. Read Slurm's key under its rules (regular file, no symlink, no "other" bit, >= 32 bytes,
   stable while read). For a possible in-place write, wait until size/mtime/inode stayed the same
   for `quiet` first. An invalid key changes nothing and is reported once per problem.
2. Compare with the copy (hash, owner, group, mode). Equal and nothing pending: return at once,
   no log line, no restart - also at daemon start, so a reboot or daemon restart storms nothing.
3. Verify FIRST, then install. The copy is installed only once slurmctld (and slurmdbd when
   used) accept a token signed with the new key. Installing it earlier breaks nothing at once
   (the agent reads it only at start), but any agent restart in between - a reboot, an admin,
   systemd's Restart= after a crash - would start the agent on a key Slurm still rejects, while
   the old copy keeps working until Slurm reloads. So the copy always holds a key Slurm accepts.
   While Slurm rejects the new key: the agent keeps running on its copy, which Slurm still
   accepts until it reloads; report `waiting_for_slurm`. Rather than asking again with the new
   key (each refusal is an authentication error in slurmctld's log), PROBE with the agent's
   copy every `probe_interval`: accepted means "not reloaded yet" and logs nothing; its first
   refusal by slurmctld or slurmdbd means that daemon switched, and the new key is verified at
   once. So the agent is back on a key Slurm accepts within about probe_interval + a restart
   of Slurm's reload, however long the administrator took. Without a usable probe (the copy
   unreadable, both keys refused): verify again with capped exponential backoff and jitter.
4. Install atomically (keyfile.install_key_atomically: temp file in the copy's directory, owner
   and mode set before rename, fsync, rename, fsync directory). Remember `restart_pending` (also
   in the state file, so a crash between install and restart still restarts the agent).
5. Restart the agent unit(s) in use (agentunits), always for a new key Slurm accepts: there is
   no budget on restarts that work. Only FAILED restarts (the unit does not come back, or the
   check after it fails) count, and `circuit_threshold` of them in a row open the circuit; a
   new key still gets one trial restart at once. At most one restart per `restart_spacing`.
   No agent unit in use: sync only.
6. Check as the agent would (agent.ini + the copy). Success: in sync.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from watchdog_daemon.exitcodes import ExitCode
from watchdog_daemon.keys.keyfile import KeyFileError, KeyProblem
from watchdog_daemon.keys.secret import SecretBytes
from watchdog_daemon.system.agentunits import agent_units_in_use
from watchdog_daemon.system.systemctl import Systemctl, SystemctlError, wait_active
from watchdog_daemon.watch.backoff import Backoff
from watchdog_daemon.watch.circuit import CircuitBreaker, CircuitState
from watchdog_daemon.watch.config import WatchConfig
from watchdog_daemon.watch.health import AGENT_KEY_ACCEPTED, health
from watchdog_daemon.watch.log import Redactor, describe_exc
from watchdog_daemon.watch.trigger import Batch


@dataclass(frozen=True)
class Verdict:
    """Outcome of asking slurmrestd about a key."""

    accepted: bool
    reason: str  # "ok", "rejected_by_slurmctld", "controller_unreachable", ...
    exit_code: int = 0
    message: str = ""
    # Slurm answered and refused the key (it has not reloaded it yet): "waiting for Slurm".
    # False for everything else (unreachable, socket missing...): a plain verify failure.
    rejected: bool = False
    details: dict[str, Any] = field(default_factory=dict)


class KeyStore(Protocol):
    def read_key(self, path: Path) -> SecretBytes: ...

    def describe(self, path: Path) -> Any: ...  # keyfile.FileState

    def install(self, secret: SecretBytes, dest: Path, *, owner: str, group: str,
                mode: int) -> bool: ...

    def remove_stale(self, directory: Path) -> list[Path]: ...

    def owner_ids(self, owner: str, group: str, path: Path) -> tuple[int, int]: ...


class RealKeyStore:
    """keys/keyfile.py's functions; Slurm's key is read under Slurm's rule (no "other" bit)."""

    def read_key(self, path: Path) -> SecretBytes:
        from watchdog_daemon.keys.keyfile import read_key

        return read_key(path, allow_group=True, stable=True)

    def describe(self, path: Path) -> Any:
        from watchdog_daemon.keys.keyfile import describe_file

        return describe_file(path)

    def install(self, secret: SecretBytes, dest: Path, *, owner: str, group: str,
                mode: int) -> bool:
        from watchdog_daemon.keys.keyfile import install_key_atomically

        return install_key_atomically(secret, dest, owner=owner, group=group, mode=mode)

    def remove_stale(self, directory: Path) -> list[Path]:
        from watchdog_daemon.keys.keyfile import remove_stale_temp_files

        return remove_stale_temp_files(directory)

    def owner_ids(self, owner: str, group: str, path: Path) -> tuple[int, int]:
        from watchdog_daemon.keys.keyfile import resolve_owner

        return resolve_owner(owner, group, path)


@dataclass(frozen=True)
class ProbeResult:
    """Slurm's answer to a token signed with the agent's copy (the key the agent runs with)."""

    accepted: frozenset[str] = frozenset()  # daemons ("slurmctld", "slurmdbd") that accepted it
    refused: frozenset[str] = frozenset()  # daemons that answered and refused it
    error: Verdict | None = None  # a daemon could not be asked (unreachable, socket missing...)
    # False: no probe was possible (copy unreadable, agent.ini invalid, no daemon left to ask).
    usable: bool = True


Verifier = Callable[[SecretBytes], Verdict]
AgentCheck = Callable[[], Verdict]
# Argument: the daemons not to ask (they already refused the copy: they switched).
Probe = Callable[[frozenset], ProbeResult]


class Sink(Protocol):
    """Where the pipeline reports: log events, metric counters, state persistence."""

    def log(self, level: str, event: str, **fields: Any) -> None: ...

    def count(self, name: str, **labels: str) -> None: ...

    def persist(self) -> None: ...


def _default_sleep(seconds: float) -> None:
    time.sleep(seconds)


@dataclass
class Status:
    """What `status`, metrics and STATUS= show. Fingerprints only."""

    state: str = "starting"  # in_sync | waiting_for_slurm | verify_failed | key_invalid |
    #  copy_insecure | restart_pending | circuit_open | agent_check_failed | error | syncing
    reason: str = ""
    message: str = ""
    exit_code: int = 0
    key_fingerprint: str | None = None
    copy_fingerprint: str | None = None
    restart_pending: str | None = None  # fingerprint of a copy the agent has not loaded yet
    agent_units: list[str] = field(default_factory=list)
    last_sync_at: float | None = None
    last_success_at: float | None = None
    last_restart_at: float | None = None
    next_retry_in: float | None = None
    circuit: str = "closed"
    restart_failures: int = 0  # consecutive failed restarts (the circuit's count)
    # What Slurm last said to a token signed with the agent's copy: "accepted",
    # "refused_by_slurmctld", "refused_by_slurmdbd", or None (not known).
    agent_key: str | None = None
    waiting_since: float | None = None  # wall time the wait for Slurm's reload began

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def health(self) -> tuple[int, str]:
        """(exit code of `status`, reason): 0 only when the agent can be serving."""
        return health(self.to_dict())

    def line(self) -> str:
        """One line for systemd's STATUS=."""
        key = self.key_fingerprint or "-"
        code, why = self.health()
        if self.state == "in_sync" and code == 0:
            return f"in sync (key sha256:{key})"
        if self.state == "waiting_for_slurm":
            text = f"waiting for Slurm to reload the key (new key sha256:{key})"
            if code == 0:
                return text + "; agent serving on the previous key"
            return text + f"; AGENT NOT SERVING: {why.replace('_', ' ')}"
        return f"{self.state}: {self.reason or why} (key sha256:{key}; exit {code})"


class Pipeline:
    def __init__(self, config: WatchConfig, *, keys: KeyStore, verifier: Verifier,
                 agent_check: AgentCheck, systemctl: Systemctl, sink: Sink,
                 probe: Probe | None = None,
                 redactor: Redactor | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = _default_sleep,
                 rand: Callable[[], float] | None = None) -> None:
        self.config = config
        self.keys = keys
        self.verifier = verifier
        self.agent_check = agent_check
        self.probe = probe
        self.systemctl = systemctl
        self.sink = sink
        self.redactor = redactor or Redactor()
        self.clock = clock
        self.wall_clock = wall_clock
        self.sleep = sleep
        self.backoff = Backoff(config.backoff_base, config.backoff_cap, rand=rand)
        self.restart_backoff = Backoff(config.backoff_base, config.backoff_cap, rand=rand)
        self.circuit = CircuitBreaker(config.circuit_threshold, config.circuit_cooldown,
                                      clock=clock)
        self.restart_spacing = config.restart_spacing
        self.status = Status()
        self._recheck_pending = False
        self._check_after_restart = False  # the next agent check decides the restart's fate
        self._circuit_key: str | None = None  # fingerprint whose restarts opened the circuit
        self._restart_targets: list[str] = []  # units chosen for the pending restart
        self._next_verify_at = 0.0
        self._next_restart_at = 0.0
        self._probing = False  # waiting for Slurm: probe with the copy instead of verifying
        self._verify_due = False  # a probe saw a daemon switch: verify at the next run
        self._switched: set[str] = set()  # daemons seen refusing the copy (they reloaded)
        self._wait_verdict: Verdict | None = None  # the new key's last refusal
        self._key_stat: tuple[int, int, int] | None = None  # key's stat at our last read
        self._last_reported: tuple[str, str] | None = None  # (state, reason) last logged
        self._announced_key: str | None = None  # fingerprint of the change last announced
        self.runs = 0

    # -- crash recovery -------------------------------------------------------------------

    def restore(self, previous: dict[str, Any] | None) -> None:
        """Take over what a previous instance of the daemon was in the middle of."""
        if not previous:
            return
        pending = previous.get("restart_pending")
        if isinstance(pending, str) and pending:
            # Kept only if the copy still is that key (checked in run(): a copy that differs
            # goes through verify/install, which sets its own restart_pending).
            self.status.restart_pending = pending
            units = previous.get("agent_units")
            if isinstance(units, list) and all(isinstance(u, str) for u in units):
                self._restart_targets = list(units)
        for name in ("last_success_at", "last_sync_at", "last_restart_at"):
            value = previous.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                setattr(self.status, name, float(value))

    # -- one run --------------------------------------------------------------------------

    def run(self, batch: Batch) -> float | None:
        """Do what the batch needs; return seconds until a retry is due (None: no retry)."""
        self.runs += 1
        try:
            delay = self._run(batch)
        except Exception as exc:  # a bug or an unexpected OS error: report, retry later
            self._set_state("error", "unexpected_error", level="error",
                            message="unexpected error in the sync pipeline",
                            exit_code=ExitCode.INTERNAL_ERROR,
                            **describe_exc(exc, self.redactor))
            delay = self.backoff.next_delay()
        self.status.next_retry_in = delay
        self.status.circuit = self.circuit.state.value
        self.status.restart_failures = self.circuit.failures
        return delay

    def _run(self, batch: Batch) -> float | None:
        cfg = self.config
        previous_stat = self._key_stat
        # 1-2. Slurm's key and the copy.
        try:
            if batch.in_place:
                self._wait_for_quiet(cfg.key_path)
            key, copy = self._read_key_and_copy()
        except KeyFileError as exc:
            return self._key_invalid(exc)
        if copy is None:
            return None
        same_content = copy.exists and copy.sha256 == key.sha256
        if not same_content and not batch.in_place and "events" not in batch.vias \
                and not (previous_stat is not None and previous_stat == self._key_stat):
            # No event told us how the key was written (reconcile on NFS, lost events, start):
            # it may be an in-place writer at work. Re-read after a quiet period first. Not
            # when the key has the same size, mtime and inode as at the previous run's read
            # (a retry while Slurm has not reloaded): quiet that long already, and waiting
            # again would only add to the agent's outage once Slurm switches.
            self._wait_for_quiet(cfg.key_path)
            try:
                key, copy = self._read_key_and_copy()
            except KeyFileError as exc:
                return self._key_invalid(exc)
            if copy is None:
                return None
            same_content = copy.exists and copy.sha256 == key.sha256
        try:
            uid, gid = self.keys.owner_ids(cfg.copy_owner, cfg.copy_group, cfg.copy_path)
        except KeyFileError as exc:  # the slurm-web user was removed since the start
            self._set_state("error", exc.reason, level="error", message=exc.message,
                            hint=exc.hint, exit_code=exc.exit_code)
            return None
        same_meta = same_content and (copy.uid, copy.gid, copy.mode) == (uid, gid, cfg.copy_mode)

        if self.status.restart_pending and (
            not same_content or self.status.restart_pending != key.fingerprint
        ):
            # The pending restart was for a key that is no longer the copy's: the new key goes
            # through verify/install below and sets its own.
            self.status.restart_pending = None

        if same_meta and not self.status.restart_pending and not self._recheck_pending:
            # 6. Nothing to do: nothing done, nothing logged (only a transition back to sync).
            self._next_verify_at = 0.0
            self.backoff.reset()
            self._end_wait()
            if self.status.state != "in_sync":
                self._in_sync(quiet=self.status.state == "starting")
            return None

        if same_content and not same_meta:
            # Same key, wrong owner/mode (someone chmod'ed it): repair, no restart needed for
            # the content, but a copy readable by others is reported.
            self.keys.install(key, cfg.copy_path, owner=cfg.copy_owner, group=cfg.copy_group,
                              mode=cfg.copy_mode)
            self.status.last_sync_at = self.wall_clock()
            self.sink.log("warning", "copy_repaired", key_fingerprint=key.fingerprint,
                          owner=copy.owner, group=copy.group,
                          mode=None if copy.mode is None else f"{copy.mode:04o}",
                          wanted_mode=f"{cfg.copy_mode:04o}")
            self.sink.count("syncs_total")

        if not same_content:
            delay = self._verify_and_install(key, copy, batch)
            if delay is not None or not self.status.restart_pending:
                return delay

        if self.status.restart_pending:
            delay = self._restart_agent(key)
            if delay is not None:
                return delay
        if self._recheck_pending:
            return self._check_agent(key)
        if self.status.state != "in_sync":
            self._in_sync()
        return None

    # -- steps ----------------------------------------------------------------------------

    def _wait_for_quiet(self, path: Path) -> None:
        """Until size, mtime and inode stay unchanged for `quiet` (at most `quiet_cap`)."""
        cfg = self.config
        if cfg.quiet <= 0:
            return
        deadline = self.clock() + cfg.quiet_cap
        last = _stat_id(path)
        while True:
            self.sleep(cfg.quiet)
            now_id = _stat_id(path)
            if now_id == last:
                return
            if self.clock() >= deadline:
                raise KeyFileError(
                    KeyProblem.UNSTABLE, path,
                    f"key file {path} kept changing for {cfg.quiet_cap:g} s",
                    "an in-place writer is still at work; replace keys by renaming a new file "
                    "over the old one",
                )
            last = now_id

    def _read_key_and_copy(self) -> tuple[Any, Any]:
        """Read Slurm's key (KeyFileError when invalid) and describe the copy (None: refused)."""
        before = _stat_id(self.config.key_path)
        key = self.keys.read_key(self.config.key_path)
        # Remembered only when the file did not move while we read it.
        self._key_stat = before if before == _stat_id(self.config.key_path) else None
        self.redactor.add(key)
        self.status.key_fingerprint = key.fingerprint
        copy = self._copy_state()
        if copy is not None:
            self.status.copy_fingerprint = copy.sha256[:12] if copy.sha256 else None
        return key, copy

    def _copy_state(self) -> Any:
        cfg = self.config
        # A symlink at the copy, or at its directory, could make the install write elsewhere or
        # hand the agent someone else's file: refuse, leave everything as it is, report.
        try:
            dir_st = os.lstat(cfg.copy_dir)
        except FileNotFoundError:
            dir_st = None
        if dir_st is not None and not stat.S_ISDIR(dir_st.st_mode):
            self._set_state("copy_insecure", "copy_dir_not_directory", level="error",
                            message=f"{cfg.copy_dir} is not a directory (symlink?)",
                            exit_code=ExitCode.KEY_INSECURE)
            return None
        copy = self.keys.describe(cfg.copy_path)
        if copy.exists and (copy.is_symlink or not getattr(copy, "is_regular", True)):
            self._set_state("copy_insecure", "copy_not_regular_file", level="error",
                            message=f"{cfg.copy_path} is a symbolic link or not a regular "
                            "file: refusing to write through or over it",
                            exit_code=ExitCode.KEY_INSECURE)
            return None
        return copy

    def _verify_and_install(self, key: SecretBytes, copy: Any, batch: Batch) -> float | None:
        cfg = self.config
        if self._announced_key != key.fingerprint:
            self._announced_key = key.fingerprint
            # Not "in_sync" any more, so that the end of this sync is reported as such.
            self.status.state = "syncing"
            self.sink.log("info", "key_change_detected", via=batch.via,
                          key_fingerprint=key.fingerprint,
                          copy_fingerprint=copy.sha256[:12] if copy.sha256 else None)
            self.sink.count("detections_total", via=batch.via)
            self._next_verify_at = 0.0
            self.backoff.reset()
            self._end_wait()
        now = self.clock()
        if now < self._next_verify_at and not batch.vias & {"signal", "retry"}:
            # An unrelated event during a wait must not hammer slurmctld.
            return self._next_verify_at - now
        probe_usable = True
        if self._probing and not self._verify_due:
            outcome, delay = self._probe_step(key)
            if outcome == "wait":
                return delay
            probe_usable = outcome != "unusable"
        self._verify_due = False
        verdict = self._safe_verify(key)
        self.sink.count("checks_total", step="verify", result=verdict.reason)
        if not verdict.accepted:
            return self._not_accepted_yet(key, verdict, probe_usable)
        self.backoff.reset()
        self._next_verify_at = 0.0
        self._end_wait()
        self.sink.log("info", "verified", key_fingerprint=key.fingerprint, step="new_key",
                      **_safe_details(verdict))

        try:
            self.keys.install(key, cfg.copy_path, owner=cfg.copy_owner, group=cfg.copy_group,
                              mode=cfg.copy_mode)
        except KeyFileError as exc:
            delay = self.backoff.next_delay()
            self._set_state("error", exc.reason, level="error", message=exc.message,
                            hint=exc.hint, exit_code=exc.exit_code, retry_in=round(delay, 3))
            return delay
        self.status.copy_fingerprint = key.fingerprint
        self.status.last_sync_at = self.wall_clock()
        self.status.restart_pending = key.fingerprint
        self.status.agent_key = None  # the agent still runs the previous key until restarted
        self.sink.log("info", "synced", key_fingerprint=key.fingerprint, copy=str(cfg.copy_path),
                      previous_fingerprint=copy.sha256[:12] if copy.sha256 else None)
        self.sink.count("syncs_total")
        self.sink.persist()  # restart_pending must survive our own crash
        return None

    def _not_accepted_yet(self, key: SecretBytes, verdict: Verdict,
                          probe_usable: bool) -> float:
        """Slurm does not accept the new key (yet): report, then probe or back off."""
        self._wait_verdict = verdict
        if self.status.waiting_since is None:
            self.status.waiting_since = self.wall_clock()
        if self.probe is not None and probe_usable:
            self._probing = True
            # Probe at once: it tells whether the agent still serves (for `status`), and
            # notices a daemon that switched before the other.
            outcome, delay = self._probe_step(key)
            if outcome == "wait":
                return delay
            if outcome == "switched":
                self._verify_due = True  # a daemon reloaded meanwhile: verify again at once
                return 0.0
        delay = self.backoff.next_delay()
        self._next_verify_at = self.clock() + delay
        self._report_wait(key, verdict, delay)
        return delay

    def _probe_step(self, key: SecretBytes) -> tuple[str, float]:
        """One probe with the agent's copy: ("wait", delay) while Slurm did not switch,
        ("switched", 0) when a daemon newly refuses it, ("unusable", 0) without a probe."""
        assert self.probe is not None
        try:
            result = self.probe(frozenset(self._switched))
        except Exception as exc:  # a bug in the probe must not stop the sync: verify instead
            info = describe_exc(exc, self.redactor)
            self.sink.log("warning", "probe_error", **info)
            result = ProbeResult(usable=False)
        newly = result.refused - self._switched
        self._switched |= result.refused
        if self._switched:
            self.status.agent_key = "refused_by_" + sorted(self._switched)[0]
        elif result.usable and result.error is None and result.accepted:
            self.status.agent_key = AGENT_KEY_ACCEPTED
        else:
            self.status.agent_key = None
        self.sink.count("probes_total", result="unusable" if not result.usable else
                        "refused" if newly else "error" if result.error else "accepted")
        if newly:
            self.sink.log("info", "slurm_switched", daemons=sorted(newly),
                          key_fingerprint=key.fingerprint,
                          message="Slurm refuses the agent's copy now: verifying the new key")
            return "switched", 0.0
        if not result.usable:
            return "unusable", 0.0
        delay = self.config.probe_interval
        self._next_verify_at = self.clock() + delay
        if result.error is not None:
            # Slurm cannot be asked right now (a daemon restarting, slurmrestd down): keep
            # probing; whatever comes back first, old key accepted or refused, tells.
            self._set_state("verify_failed", result.error.reason, level="warning",
                            message=result.error.message or "could not ask Slurm",
                            exit_code=result.error.exit_code,
                            key_fingerprint=key.fingerprint, retry_in=round(delay, 3))
        elif self._wait_verdict is not None:
            self._report_wait(key, self._wait_verdict, delay)
        return "wait", delay

    def _report_wait(self, key: SecretBytes, verdict: Verdict, delay: float) -> None:
        if verdict.rejected:
            self._set_state("waiting_for_slurm", verdict.reason,
                            message="waiting for Slurm to reload the key",
                            exit_code=verdict.exit_code, key_fingerprint=key.fingerprint,
                            detail=verdict.message, agent_key=self.status.agent_key,
                            retry_in=round(delay, 3))
        else:
            self._set_state("verify_failed", verdict.reason, level="warning",
                            message=verdict.message or "could not verify the new key",
                            exit_code=verdict.exit_code, key_fingerprint=key.fingerprint,
                            retry_in=round(delay, 3))

    def _end_wait(self) -> None:
        self._probing = False
        self._verify_due = False
        self._switched = set()
        self._wait_verdict = None
        self.status.waiting_since = None

    def _safe_verify(self, key: SecretBytes) -> Verdict:
        try:
            return self.verifier(key)
        except Exception as exc:
            info = describe_exc(exc, self.redactor)
            return Verdict(False, "verify_error", ExitCode.INTERNAL_ERROR,
                           f"{info['error_type']}: {info['error']}")

    def _restart_agent(self, key: SecretBytes) -> float | None:
        cfg = self.config
        if self._restart_targets:
            # A previous attempt failed: that unit was in use when we decided to restart it
            # and our failed restart is why it is down now; keep at it (circuit permitting).
            units = list(self._restart_targets)
        else:
            try:
                units, _states = agent_units_in_use(self.systemctl, cfg.agent_units)
            except SystemctlError as exc:
                delay = self.restart_backoff.next_delay()
                self._set_state("restart_pending", "systemctl_failed", level="warning",
                                message=str(exc), retry_in=round(delay, 3))
                return delay
            self._restart_targets = list(units)
        self.status.agent_units = units
        if not units:
            # Nobody runs the agent: the copy is what it will read when started. Sync only.
            self.sink.log("info", "agent_not_running", key_fingerprint=key.fingerprint,
                          units=list(cfg.agent_units or ()) or "auto")
            self.status.restart_pending = None
            self._restart_targets = []
            self._recheck_pending = False
            self.sink.persist()
            return None
        if not self.circuit.allows():
            if self._circuit_key != key.fingerprint:
                # The failures were for another key; this one Slurm accepts and the agent's
                # current key it refuses: not restarting would be a sure outage. One trial.
                self.circuit.trial_now()
                self.sink.log("info", "circuit_trial", reason="new_key",
                              key_fingerprint=key.fingerprint)
            else:
                wait = self.circuit.seconds_until_trial()
                self._set_state("circuit_open", "restarts_keep_failing", level="error",
                                message="agent restarts keep failing: not restarting until "
                                f"the cool-down ends ({wait:.0f} s) or the key changes",
                                exit_code=ExitCode.CIRCUIT_OPEN, retry_in=round(wait, 3))
                return max(wait, 0.001)
        wait = self._next_restart_at - self.clock()
        if wait > 0:
            self._set_state("restart_pending", "restart_spacing", level="info",
                            message=f"previous restart less than {self.restart_spacing:g} s "
                            f"ago; next in {wait:.1f} s", retry_in=round(wait, 3))
            return wait
        for unit in units:
            self._next_restart_at = self.clock() + self.restart_spacing
            try:
                self.systemctl.restart(unit, timeout=cfg.restart_timeout)
                wait_active(self.systemctl, unit, timeout=cfg.restart_timeout,
                            clock=self.clock, sleep=self.sleep)
            except (SystemctlError, OSError) as exc:
                self.sink.count("restarts_total", result="failed")
                return self._restart_failed(key, unit, "restart", str(exc))
            self.sink.count("restarts_total", result="ok")
            self.status.last_restart_at = self.wall_clock()
            self.sink.log("info", "agent_restarted", unit=unit, key_fingerprint=key.fingerprint)
        self.status.restart_pending = None
        self._restart_targets = []
        self._recheck_pending = True
        self._check_after_restart = True
        self.sink.persist()
        return None

    def _restart_failed(self, key: SecretBytes, unit: str, step: str, error: str) -> float:
        """Count a failed restart in the circuit; report; return when to try again."""
        opened = self.circuit.record_failure()
        self._circuit_key = key.fingerprint
        self.status.circuit = self.circuit.state.value
        self.status.restart_failures = self.circuit.failures
        self.sink.log("error", "agent_restart_failed", unit=unit, step=step, error=error,
                      consecutive_failures=self.circuit.failures)
        if opened:
            wait = self.circuit.seconds_until_trial()
            self._set_state("circuit_open", "restarts_keep_failing", level="error",
                            message="agent restarts keep failing: stopped restarting until "
                            "the cool-down ends or the key changes",
                            exit_code=ExitCode.CIRCUIT_OPEN, unit=unit,
                            failures=self.circuit.failures,
                            cooldown=self.config.circuit_cooldown)
            return max(wait, 0.001)
        delay = max(self.restart_spacing, self.restart_backoff.next_delay())
        self._set_state("restart_pending", "restart_failed", level="warning", message=error,
                        exit_code=ExitCode.RESTART_PENDING, retry_in=round(delay, 3))
        return delay

    def _check_agent(self, key: SecretBytes) -> float | None:
        try:
            verdict = self.agent_check()
        except Exception as exc:
            info = describe_exc(exc, self.redactor)
            verdict = Verdict(False, "check_error", ExitCode.INTERNAL_ERROR,
                              f"{info['error_type']}: {info['error']}")
        self.sink.count("checks_total", step="agent", result=verdict.reason)
        after_restart, self._check_after_restart = self._check_after_restart, False
        if not verdict.accepted:
            self.status.agent_key = None
            if verdict.rejected:
                self.status.agent_key = ("refused_by_slurmdbd"
                                         if verdict.reason == "rejected_by_slurmdbd"
                                         else "refused_by_slurmctld")
            if after_restart:
                # The unit came back but does not work as the agent: that restart failed too.
                # Another restart would load the same copy: re-check with backoff instead.
                opened = self.circuit.record_failure()
                self._circuit_key = key.fingerprint
                self.sink.count("restarts_total", result="check_failed")
                self.sink.log("error", "agent_restart_failed", step="check",
                              error=verdict.message, reason=verdict.reason,
                              consecutive_failures=self.circuit.failures, circuit_opened=opened)
            delay = self.backoff.next_delay()
            self._set_state("agent_check_failed", verdict.reason, level="error",
                            message=verdict.message, exit_code=verdict.exit_code,
                            retry_in=round(delay, 3))
            return delay
        self._recheck_pending = False
        self.status.agent_key = AGENT_KEY_ACCEPTED
        was_open = self.circuit.state is not CircuitState.CLOSED
        self.circuit.record_success()
        self.restart_backoff.reset()
        self._circuit_key = None
        if was_open:
            self.sink.log("info", "circuit_closed", key_fingerprint=key.fingerprint)
        self.backoff.reset()
        self.sink.log("info", "verified", key_fingerprint=key.fingerprint, step="agent",
                      **_safe_details(verdict))
        self._in_sync()
        return None

    # -- state and reporting ----------------------------------------------------------------

    def _key_invalid(self, exc: KeyFileError) -> float | None:
        retry = self.config.quiet if exc.problem is KeyProblem.UNSTABLE else None
        if self._set_state("key_invalid", exc.reason, level="warning", message=exc.message,
                           hint=exc.hint, exit_code=exc.exit_code,
                           key=str(self.config.key_path)):
            self.sink.count("key_invalid_total", reason=exc.reason)
        self.status.key_fingerprint = None
        # The copy is left as it is: the agent keeps a key Slurm accepted until a valid one
        # comes. Events or the reconcile bring the next run; an unstable key is retried soon.
        return retry

    def _in_sync(self, *, quiet: bool = False) -> None:
        self.status.last_success_at = self.wall_clock()
        previous = self.status.state
        self.status.state, self.status.reason, self.status.message = "in_sync", "", ""
        self.status.exit_code = 0
        self._last_reported = ("in_sync", "")
        self._announced_key = None
        if not quiet:
            self.sink.log("info", "in_sync", key_fingerprint=self.status.key_fingerprint,
                          previous_state=previous)
        self.sink.persist()

    def _set_state(self, state: str, reason: str, *, level: str = "info", message: str = "",
                   exit_code: int = 0, **fields: Any) -> bool:
        """Update the status; log only a change of (state, reason). True when logged."""
        self.status.state, self.status.reason = state, reason
        self.status.message, self.status.exit_code = message, int(exit_code)
        if self._last_reported == (state, reason):
            return False
        self._last_reported = (state, reason)
        self.sink.log(level, state, reason=reason, message=message, exit_code=int(exit_code),
                      **fields)
        self.sink.persist()
        return True


def _stat_id(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _safe_details(verdict: Verdict) -> dict[str, Any]:
    keep = ("slurm", "cluster", "api", "accounting")
    return {k: verdict.details[k] for k in keep if k in verdict.details}
