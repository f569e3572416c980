"""Steps 5 and 6 of the sync run: the agent unit(s) in use restarted, then checked as the agent.

Every new key Slurm accepts gets its restart: only FAILED restarts count (the unit does not come
back, or the check after it fails), and `circuit_threshold` of them in a row open the circuit
(watch/circuit.py); a new key still gets one trial restart. At most one restart per
`restart_spacing`. No agent unit in use: sync only. The order of the run, and why:
watch/pipeline.py.

`AgentRestartSteps` is a part of `Pipeline` (watch/pipeline.py) and works on its state, all set
in `Pipeline.__init__`: config, systemctl, agent_check, sink, status, circuit, the backoffs, the
clocks, `restart_spacing`, `_restart_targets`, `_next_restart_at`, `_circuit_key`,
`_recheck_pending` and `_check_after_restart`.
"""

from __future__ import annotations

from watchdog_daemon.exitcodes import ExitCode
from watchdog_daemon.keys.secret import SecretBytes
from watchdog_daemon.system.agentunits import agent_units_in_use
from watchdog_daemon.system.systemctl import SystemctlError, wait_active
from watchdog_daemon.watch.circuit import CircuitState
from watchdog_daemon.watch.health import AGENT_KEY_ACCEPTED
from watchdog_daemon.watch.log import describe_exc
from watchdog_daemon.watch.verdict import Verdict, _safe_details


class AgentRestartSteps:
    """Restart the agent unit(s) in use, count the failures in the circuit, check the agent."""

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
