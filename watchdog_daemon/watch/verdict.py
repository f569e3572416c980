"""What Slurm said about a key, as the sync pipeline takes it: `Verdict` and `ProbeResult`.

The pipeline is given three callables that answer with them (watch/verify.py makes the real
ones on top of check/; tests fake them): `Verifier` for a new key, `AgentCheck` for the check as
the agent, `Probe` for the agent's copy while Slurm has not reloaded the new key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from watchdog_daemon.keys.secret import SecretBytes


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


def _safe_details(verdict: Verdict) -> dict[str, Any]:
    keep = ("slurm", "cluster", "api", "accounting")
    return {k: verdict.details[k] for k in keep if k in verdict.details}
