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
4. Install atomically (keywrite.install_key_atomically: temp file in the copy's directory, owner
   and mode set before rename, fsync, rename, fsync directory). Remember `restart_pending` (also
   in the state file, so a crash between install and restart still restarts the agent).
5. Restart the agent unit(s) in use (agentunits), always for a new key Slurm accepts: there is
   no budget on restarts that work. Only FAILED restarts (the unit does not come back, or the
   check after it fails) count, and `circuit_threshold` of them in a row open the circuit; a
   new key still gets one trial restart at once. At most one restart per `restart_spacing`.
   No agent unit in use: sync only.
6. Check as the agent would (agent.ini + the copy). Success: in sync.

Where the steps live: the run and steps 1-2 here; 3-4, the new key verified by Slurm and
installed, in watch/newkey.py; 5-6, the agent restarted and checked, in watch/agentrestart.py.
Pipeline takes those in as mixins: they share its state, all set in `Pipeline.__init__`. What the
pipeline is given: watch/keystore.py (the key files), watch/verdict.py (Slurm's answers); what it
reports: watch/status.py.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from watchdog_daemon.exitcodes import ExitCode
from watchdog_daemon.keys.keyfile import KeyFileError, KeyProblem
from watchdog_daemon.system.systemctl import Systemctl
from watchdog_daemon.watch.agentrestart import AgentRestartSteps
from watchdog_daemon.watch.backoff import Backoff
from watchdog_daemon.watch.circuit import CircuitBreaker
from watchdog_daemon.watch.config import WatchConfig
from watchdog_daemon.watch.keystore import KeyStore
from watchdog_daemon.watch.log import Redactor, describe_exc
from watchdog_daemon.watch.newkey import NewKeySteps
from watchdog_daemon.watch.status import Sink, Status
from watchdog_daemon.watch.trigger import Batch
from watchdog_daemon.watch.verdict import AgentCheck, Probe, Verdict, Verifier


def _default_sleep(seconds: float) -> None:
    time.sleep(seconds)


class Pipeline(NewKeySteps, AgentRestartSteps):
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

    # -- steps 1-2: Slurm's key and the copy ----------------------------------------------

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
