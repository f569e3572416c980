"""`slurmrestd-access watch`: the long-running part that ties the pieces together.

Threads, and why each is safe:
* main thread: signals (flags only), health ticks of the event watcher (re-arm), the reconcile
  timer, systemd notifications. Never touches the key.
* one worker: takes triggers and runs the pipeline, one run at a time; a trigger during a run
  leaves the flag set, so it means exactly one more run.
* watchdog's observer threads: only `Trigger.fire` (a flag under a lock), inside a catch-all.
* optional metrics HTTP thread: reads counters.

WATCHDOG=1 is sent only while event watching works (or the key's directory is missing, which a
restart by systemd would not fix), the worker thread lives and is not stuck in one run, and the
reconcile loop has completed a pass recently. Otherwise systemd's WatchdogSec= restarts us.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from watchdog.observers import Observer

from watchdog_daemon.exitcodes import ExitCode
from watchdog_daemon.system.systemctl import SubprocessSystemctl, Systemctl
from watchdog_daemon.watch.config import WatchConfig
from watchdog_daemon.watch.events import KeyWatcher
from watchdog_daemon.watch.health import proof_age
from watchdog_daemon.watch.keystore import KeyStore, RealKeyStore
from watchdog_daemon.watch.log import EventLog, Redactor, describe_exc
from watchdog_daemon.watch.metrics import Metrics, MetricsServer
from watchdog_daemon.watch.pipeline import Pipeline
from watchdog_daemon.watch.proof import Proof, Prover
from watchdog_daemon.watch.sdnotify import Notifier
from watchdog_daemon.watch.state import process_start, read_state, write_state
from watchdog_daemon.watch.trigger import Trigger
from watchdog_daemon.watch.verdict import AgentCheck, Probe, Verifier
from watchdog_daemon.watch.wakeup import Wakeup

# Main-loop ticks in a row that end in an OSError (the journal's pipe gone, inotify or the
# wake-up pipe failing) before the daemon gives up: it then exits with IO_ERROR, which systemd
# restarts (a new process may get past it); until then each one is logged and retried.
MAX_LOOP_ERRORS = 30
# Least time between two proofs that the agent can serve (watch/proof.py): one is taken after
# every run that changed something, and runs can follow each other quickly while Slurm reloads.
PROOF_SPACING = 1.0
# The part of _proof_inputs() that a proof is about: the copy and the agent unit.
AGENT_SIDE = slice(0, 3)


class StartConfigError(Exception):
    """The configuration cannot be put to work at start (e.g. its metrics address): a restart
    would not help, fixing the configuration does (exit CONFIG_INVALID)."""


class WatchDaemon:
    def __init__(self, config: WatchConfig, *, keys: KeyStore | None = None,
                 verifier: Verifier | None = None, agent_check: AgentCheck | None = None,
                 probe: Probe | None = None, systemctl: Systemctl | None = None,
                 notifier: Notifier | None = None,
                 logger: Any = None, observer_factory: Callable[[], Any] = Observer,
                 tick: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 rand: Callable[[], float] | None = None) -> None:
        self.config = config
        self.tick = tick
        self.clock = clock
        self.keys = keys or RealKeyStore()
        self.notifier = notifier or Notifier()
        self.metrics = Metrics()
        self.redactor = Redactor()
        self.events = EventLog(self.redactor, logger)
        self.stop_event = threading.Event()
        self.first_run_done = threading.Event()
        self.trigger = Trigger(clock=clock)
        if verifier is None or agent_check is None:
            from watchdog_daemon.watch.verify import CheckVerifier

            checker = CheckVerifier(config)
            verifier = verifier or checker.verify_new_key
            agent_check = agent_check or checker.check_agent
            probe = probe or checker.probe_copy
        systemctl = systemctl or SubprocessSystemctl()
        self.pipeline = Pipeline(
            config, keys=self.keys, verifier=verifier, agent_check=agent_check, probe=probe,
            systemctl=systemctl, sink=self, redactor=self.redactor,
            clock=clock, sleep=self._sleep, rand=rand,
        )
        self.pipeline.status.health_interval = config.health_interval
        self.pipeline.status.proof_max_age = config.proof_max_age
        self.prover = Prover(systemctl=systemctl, configured_units=config.agent_units,
                             copy_path=config.copy_path, probe=probe, agent_check=agent_check,
                             clock=clock)
        self._next_proof_at = 0.0
        self._last_proof_at = -PROOF_SPACING
        self._stopped = False
        # Read at each scrape: a proof that grows old must show without a run to update it.
        self.metrics.live("agent_serving",
                          lambda: 1.0 if self.pipeline.status.health()[0] == 0 else 0.0)
        self.metrics.live("status_exit_code", lambda: float(self.pipeline.status.health()[0]))
        self.metrics.live("proof_age_seconds",
                          lambda: proof_age(self.pipeline.status.to_dict()))
        self._pid_start = process_start(os.getpid())
        self.watcher = KeyWatcher(config.key_path, self._on_change,
                                  observer_factory=observer_factory)
        self._worker: threading.Thread | None = None
        self._metrics_server: MetricsServer | None = None
        self._wake = Wakeup()
        self._hup = False
        self._term = False
        self._busy_since: float | None = None
        self._last_reconcile_done = clock()
        self._last_state_json = ""
        self._persist_lock = threading.Lock()
        self._persist_failed = False
        self.started_at = time.time()
        # A run may legitimately take this long (quiet cap, two checks of up to 3 timeouts
        # each, restarts); longer means stuck, and the systemd watchdog should restart us.
        self.max_run_seconds = (config.quiet_cap + 6 * config.check_timeout
                                + 2 * config.restart_timeout + 60.0)

    # -- Sink for the pipeline ---------------------------------------------------------------

    def log(self, level: str, event: str, **fields: Any) -> None:
        self.events.emit(level, event, **fields)

    def count(self, name: str, **labels: str) -> None:
        self.metrics.inc(name, **labels)

    def persist(self) -> None:
        status = self.pipeline.status
        status.circuit = self.pipeline.circuit.state.value
        self.metrics.set("in_sync", 1 if status.state == "in_sync" else 0)
        self.metrics.set("waiting_for_slurm", 1 if status.state == "waiting_for_slurm" else 0)
        self.metrics.set("circuit_open", 0 if self.pipeline.circuit.allows() else 1)
        self.metrics.set("restart_pending", 1 if status.restart_pending else 0)
        self.metrics.set("restart_failures", self.pipeline.circuit.failures)
        self.metrics.set("observer_healthy", 1 if self.watcher.healthy else 0)
        if status.last_success_at is not None:
            self.metrics.set("last_success_timestamp_seconds", status.last_success_at)
        if status.proof_at is not None:
            self.metrics.set("last_proof_timestamp_seconds", status.proof_at)
        state = self.snapshot()
        text = json.dumps(state, sort_keys=True, default=str)
        with self._persist_lock:
            if text == self._last_state_json:
                return
            try:
                write_state(self.config.state_file, state)
            except OSError as exc:
                if not self._persist_failed:
                    self._persist_failed = True
                    self.log("warning", "state_file_unwritable", path=str(self.config.state_file),
                             **describe_exc(exc, self.redactor))
                return
            self._persist_failed = False
            self._last_state_json = text
        self.notifier.status(status.line())

    def snapshot(self) -> dict[str, Any]:
        status = self.pipeline.status
        status.circuit = self.pipeline.circuit.state.value
        data = status.to_dict()
        code, reason = status.health()
        data.update(
            # None once stopped: `status` then says so instead of trusting an old in_sync.
            pid=None if self._stopped else os.getpid(),
            pid_start=None if self._stopped else self._pid_start,
            started_at=self.started_at,
            key_path=str(self.config.key_path),
            copy_path=str(self.config.copy_path),
            watching=self.watcher.state,
            restart_failures=self.pipeline.circuit.failures,
            # What `status` exits with (watchhealth): 0 only while the agent can be serving.
            agent_serving=code == 0,
            status_exit_code=code,
            status_reason=reason,
            status_line=status.line(),
        )
        data.pop("next_retry_in", None)  # changes every run: not worth a write
        return data

    # -- triggers ----------------------------------------------------------------------------

    def _on_change(self, via: str, in_place: bool) -> None:
        self.trigger.fire(via, in_place=in_place)

    def _sleep(self, seconds: float) -> None:
        self.stop_event.wait(seconds)

    def request_reconcile(self) -> None:
        self._hup = True
        self._wake.set()

    def request_stop(self) -> None:
        self.stop_event.set()
        self._wake.set()
        self.trigger.wake()

    # -- worker ------------------------------------------------------------------------------

    def _worker_loop(self) -> None:
        retry_at: float | None = None
        cfg = self.config
        while not self.stop_event.is_set():
            now = self.clock()
            wait = min(self.tick, max(0.0, self._next_proof_at - now))
            if retry_at is not None:
                wait = max(0.0, min(wait, retry_at - now))
            if not self.trigger.wait(wait):
                if retry_at is not None and self.clock() >= retry_at:
                    retry_at = None
                    self.trigger.fire("retry")
                elif self.first_run_done.is_set() and self.clock() >= self._next_proof_at:
                    self._prove()
                continue
            if self.stop_event.is_set():
                break
            # Coalesce a burst: wait until the events stop (longer for in-place writes).
            settle = cfg.coalesce
            if self.trigger.in_place_pending():
                settle = max(settle, cfg.quiet)
            if self.trigger.events_pending():
                self.trigger.settle(settle, cfg.quiet_cap, self.stop_event)
            batch = self.trigger.take()
            self._busy_since = self.clock()
            before = self._proof_inputs()
            try:
                delay = self.pipeline.run(batch)
            finally:
                self._busy_since = None
            if "reconcile" in batch.vias or "start" in batch.vias:
                self._last_reconcile_done = self.clock()
            retry_at = None if delay is None else self.clock() + delay
            after = self._proof_inputs()
            changed = after != before
            if after[AGENT_SIDE] != before[AGENT_SIDE]:
                # A new copy or a restarted agent: until the next proof, `status` must not read
                # the last one as about now. (Slurm's side, state and agent_key, is already
                # in what `status` reads without a proof.)
                self.pipeline.status.proof_pending = True
            self.persist()
            # The first proof before READY=1; another at once after a run that changed what
            # the agent runs with (a proof from before it says nothing about now).
            if not self.first_run_done.is_set() or self.clock() >= self._next_proof_at:
                self._prove()
            elif changed:
                # Soon, not at once when one was just taken: at most one per PROOF_SPACING.
                self._next_proof_at = min(self._next_proof_at,
                                          self._last_proof_at + PROOF_SPACING)
            if not self.first_run_done.is_set():
                self.first_run_done.set()
                self._wake.set()  # READY=1 now, not at the next tick

    def _proof_inputs(self) -> tuple[Any, ...]:
        status = self.pipeline.status
        return (status.restart_pending, status.last_restart_at, status.copy_fingerprint,
                status.state, status.agent_key)

    def _prove(self) -> None:
        """Take the proof that the agent can serve now (watch/proof.py) and report it."""
        self._last_proof_at = self.clock()
        self._next_proof_at = self._last_proof_at + self.config.health_interval
        try:
            proof = self.prover.prove()
        except Exception as exc:  # a bug or an unexpected OS error: no proof, said so
            info = describe_exc(exc, self.redactor)
            proof = Proof(False, "proof_error", int(ExitCode.INTERNAL_ERROR),
                          f"{info['error_type']}: {info['error']}")
        status = self.pipeline.status
        # Logged when it changes; a good first proof is in watch_started's line instead.
        changed = (proof.reason, proof.exit_code) != (status.proof_reason,
                                                      status.proof_exit_code) and (
            status.proof_at is not None or not proof.ok)
        status.proof_at = time.time()
        status.proof_pending = False
        status.proof_exit_code, status.proof_reason = proof.exit_code, proof.reason
        status.proof_message, status.proof_units = proof.message, list(proof.units)
        self.count("proofs_total", result=proof.reason)
        if changed:
            self.log("info" if proof.ok else "warning",
                     "agent_serving" if proof.ok else "agent_not_serving",
                     reason=proof.reason, message=proof.message, exit_code=proof.exit_code,
                     units=list(proof.units))
        self.persist()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        cfg = self.config
        for warning in cfg.warnings:
            self.log("warning", "config_deprecated", message=warning)
        removed = self.keys.remove_stale(cfg.copy_dir)
        if removed:
            self.log("warning", "stale_temp_removed", directory=str(cfg.copy_dir),
                     files=[p.name for p in removed])
        self.pipeline.restore(read_state(cfg.state_file))
        if self.watcher.arm() != "armed":
            self.log("warning", "watch_unavailable", directory=str(cfg.key_path.parent),
                     state=self.watcher.state,
                     message="watching by periodic reconcile only until the directory exists")
        if cfg.metrics is not None:
            host, port = cfg.metrics
            try:
                self._metrics_server = MetricsServer(self.metrics, host, port)
            except OSError as exc:
                raise StartConfigError(
                    f'metrics = "{host}:{port}" cannot be served: {exc.strerror or exc}') from None
            self._metrics_server.start()
        self.metrics.set("observer_healthy", 1 if self.watcher.healthy else 0)
        self._worker = threading.Thread(target=self._worker_loop, name="watch-pipeline",
                                        daemon=True)
        self._worker.start()
        self.trigger.fire("start")

    def healthy(self) -> bool:
        if not self.watcher.healthy:
            return False
        if self._worker is None or not self._worker.is_alive():
            return False
        busy = self._busy_since
        now = self.clock()
        if busy is not None and now - busy > self.max_run_seconds:
            return False
        limit = 3 * self.config.reconcile_interval + self.max_run_seconds
        return now - self._last_reconcile_done <= limit

    def loop(self) -> None:
        """Main-thread loop: health ticks, reconcile timer, systemd notifications."""
        cfg = self.config
        next_reconcile = self.clock() + cfg.reconcile_interval
        ready_sent = False
        next_ping = 0.0
        errors = 0
        while not self.stop_event.is_set():
            if self._term:
                with contextlib.suppress(OSError):
                    self.log("info", "stop_requested")
                self.request_stop()
                break
            try:
                wait, next_reconcile, ready_sent, next_ping = self._tick(
                    next_reconcile, ready_sent, next_ping)
                errors = 0
            except OSError as exc:
                # At runtime an I/O error is never a configuration problem: log, retry on the
                # next tick, and only after MAX_LOOP_ERRORS in a row exit (IO_ERROR, restarted
                # by systemd). No WATCHDOG=1 meanwhile.
                errors += 1
                with contextlib.suppress(Exception):
                    self.log("error", "runtime_io_error", attempt=errors,
                             gives_up_after=MAX_LOOP_ERRORS, **describe_exc(exc, self.redactor))
                if errors >= MAX_LOOP_ERRORS:
                    raise
                wait = self.tick
            self._wake.wait(wait)

    def _tick(self, next_reconcile: float, ready_sent: bool, next_ping: float
              ) -> tuple[float, float, bool, float]:
        """One pass of the main loop; returns how long to wait and the loop's updated timers."""
        cfg = self.config
        if self._hup:
            self._hup = False
            self.log("info", "reconcile_requested", via="signal")
            self.trigger.fire("signal")
        health = self.watcher.check()
        if health in ("dirty", "rearmed"):
            # Events may have been lost meanwhile: look at the key now.
            self.log("warning", "watch_recovered", result=health,
                     rearms=self.watcher.rearms,
                     handler_errors=self.watcher.handler.errors if self.watcher.handler
                     else 0)
            self.trigger.fire("rearm")
        elif health in ("dir_missing", "failed"):
            self.log("warning", "watch_unavailable", state=health,
                     directory=str(cfg.key_path.parent))
            self.metrics.set("observer_healthy", 0)
        now = self.clock()
        if now >= next_reconcile:
            next_reconcile = now + cfg.reconcile_interval
            self.trigger.fire("reconcile")
        if not ready_sent and self.first_run_done.is_set():
            ready_sent = True
            self.notifier.ready(self.pipeline.status.line())
            self.log("info", "watch_started", state=self.pipeline.status.state,
                     status_exit_code=self.pipeline.status.health()[0],
                     key_fingerprint=self.pipeline.status.key_fingerprint,
                     watching=self.watcher.state)
        interval = self.notifier.watchdog_interval
        if interval is not None and ready_sent and now >= next_ping and self.healthy():
            self.notifier.watchdog()
            next_ping = now + interval
        wait = self.tick if interval is None else min(self.tick, interval)
        return wait, next_reconcile, ready_sent, next_ping

    def shutdown(self, join_timeout: float = 15.0) -> None:
        self.request_stop()
        self._stopped = True
        self.notifier.stopping()
        if self._worker is not None:
            self._worker.join(join_timeout)
        self.watcher.stop()
        if self._metrics_server is not None:
            self._metrics_server.stop()
        # A run cut short (or a crash before this start) must leave no temp file behind.
        with contextlib.suppress(Exception):
            self.keys.remove_stale(self.config.copy_dir)
        with contextlib.suppress(OSError):  # e.g. the journal's pipe is what failed
            self.persist()
            self.log("info", "watch_stopped", state=self.pipeline.status.state)
        self.notifier.close()
        self._wake.close()

    def run(self, *, install_signals: bool = True) -> int:
        previous_wakeup_fd = None
        if install_signals:
            self._install_signals()
            previous_wakeup_fd = self._wake.wake_on_signals()
        self.start()
        try:
            self.loop()
        finally:
            if previous_wakeup_fd is not None:
                signal.set_wakeup_fd(previous_wakeup_fd)
            self.shutdown()
        return 0

    def _install_signals(self) -> None:
        # Handlers only set plain attributes: they run between bytecodes of the main thread,
        # which may hold the very lock an Event.set() would need. The kernel's write to the
        # wake-up pipe (set_wakeup_fd) ends the loop's wait, so the loop sees them at once.
        def on_term(signum: int, _frame: Any) -> None:
            self._term = True

        def on_hup(signum: int, _frame: Any) -> None:
            self._hup = True

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, on_hup)
