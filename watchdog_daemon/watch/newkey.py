"""Steps 3 and 4 of the sync run: a new key verified by Slurm first, then installed as the copy.

While Slurm refuses the new key (it has not reloaded it yet), the agent keeps running on its
copy: probe with that copy every `probe_interval` rather than asking again with the new key; the
copy's first refusal means a daemon switched, and the new key is verified at once. Without a
usable probe: verify again with backoff. The order of the run, and why: watch/pipeline.py.

`NewKeySteps` is a part of `Pipeline` (watch/pipeline.py) and works on its state, all set in
`Pipeline.__init__`: config, keys, verifier, probe, sink, status, backoff, the clocks, and the
wait's `_probing`, `_verify_due`, `_switched`, `_wait_verdict`, `_next_verify_at` and
`_announced_key`.
"""

from __future__ import annotations

from typing import Any

from watchdog_daemon.exitcodes import ExitCode
from watchdog_daemon.keys.keyfile import KeyFileError
from watchdog_daemon.keys.secret import SecretBytes
from watchdog_daemon.watch.health import AGENT_KEY_ACCEPTED
from watchdog_daemon.watch.log import describe_exc
from watchdog_daemon.watch.trigger import Batch
from watchdog_daemon.watch.verdict import ProbeResult, Verdict, _safe_details


class NewKeySteps:
    """Verify a new key, wait for Slurm to reload it (probing with the copy), install it."""

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
