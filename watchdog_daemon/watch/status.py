"""What the sync pipeline reports: its `Status` (what `status`, metrics and STATUS= show;
fingerprints only) and the `Sink` it reports to (log events, metric counters, the state file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from watchdog_daemon.watch.health import health


class Sink(Protocol):
    """Where the pipeline reports: log events, metric counters, state persistence."""

    def log(self, level: str, event: str, **fields: Any) -> None: ...

    def count(self, name: str, **labels: str) -> None: ...

    def persist(self) -> None: ...


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
    # The daemon's last proof that the agent can serve (watch/proof.py), and how old it may
    # be before `status` calls the daemon stuck.
    proof_at: float | None = None  # wall time
    proof_exit_code: int | None = None
    proof_reason: str = ""
    proof_message: str = ""
    proof_units: list[str] = field(default_factory=list)
    # True from a run that changed what the agent runs with until the next proof (taken within
    # a second): the last proof predates the change, so it says nothing about now.
    proof_pending: bool = False
    health_interval: float | None = None
    proof_max_age: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def health(self, now: float | None = None) -> tuple[int, str]:
        """(exit code of `status`, reason): 0 only when the agent can serve now."""
        return health(self.to_dict(), now)

    def line(self) -> str:
        """One line for systemd's STATUS=."""
        key = self.key_fingerprint or "-"
        code, why = self.health()
        if self.state == "in_sync" and code == 0:
            return f"in sync (key sha256:{key})"
        if why == "proof_pending":
            return f"{self.state.replace('_', ' ')} (key sha256:{key}); proving the agent serves"
        if self.state == "waiting_for_slurm":
            text = f"waiting for Slurm to reload the key (new key sha256:{key})"
            if code == 0:
                return text + "; agent serving on the previous key"
            return text + f"; AGENT NOT SERVING: {why.replace('_', ' ')}"
        if self.state == "in_sync":
            return f"in sync (key sha256:{key}); AGENT NOT SERVING: {self._why(why)}"
        return f"{self.state}: {self.reason or why} (key sha256:{key}; exit {code})"

    def _why(self, reason: str) -> str:
        if reason == self.proof_reason and self.proof_message:
            return self.proof_message
        return reason.replace("_", " ")
