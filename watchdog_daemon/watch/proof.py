"""The watchdog's proof that the agent can serve now, taken every `health_interval`.

The sync pipeline knows whether the copy is Slurm's key; that alone says nothing about the agent:
its unit may have been stopped, slurmrestd may be down, or slurmctld may have moved to another
key without the file changing here (restored from a backup made on another host). So, once at
start-up (before READY=1), after every run that changed something, and every `health_interval`
seconds, the daemon looks again:

1. the agent unit(s) in use (system/agentunits.py's rule) are active, and were started after
   the copy they serve was last written (its mtime: a repair of owner or mode is done in place
   and keeps it), so they run with the copy's key, not an older one;
2. a token signed with the agent's copy is accepted by slurmctld, and by slurmdbd where
   accounting uses it: the cheap probe (two `/diag` calls, no discovery, no decoy) once an API
   version is known, the check as the agent otherwise.

`Proof` is what `status` and the metrics read (through watch/health.py). The decisions are pure
(`unit_proof`, `slurm_proof_from_probe`, `slurm_proof_from_verdict`); `Prover` asks systemctl,
the file system and Slurm.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from watchdog_daemon.exitcodes import ExitCode
from watchdog_daemon.system.agentunits import candidates, choose
from watchdog_daemon.system.systemctl import Systemctl, SystemctlError, UnitState
from watchdog_daemon.watch.verdict import AgentCheck, Probe, ProbeResult, Verdict

PROOF_OK = "ok"


@dataclass(frozen=True)
class Proof:
    """What the last look found: ok, or the first reason the agent cannot serve."""

    ok: bool
    reason: str  # "ok", "agent_unit_not_active", "refused_by_slurmdbd", "socket_missing", ...
    exit_code: int
    message: str = ""
    units: tuple[str, ...] = ()


def started_after(unit_start_monotonic_us: int | None, copy_mtime: float, *,
                  now_wall: float, now_monotonic: float) -> bool:
    """Whether a unit started (systemd's CLOCK_MONOTONIC, in µs) at or after the copy was
    written (its mtime, wall clock). Unknown start time: False (cannot be shown to be)."""
    if not unit_start_monotonic_us:
        return False
    copy_monotonic = now_monotonic - (now_wall - copy_mtime)
    return unit_start_monotonic_us / 1e6 >= copy_monotonic


def unit_proof(configured: Sequence[str] | None, units: Sequence[str],
               states: Sequence[UnitState], copy_mtime: float | None, *,
               now_wall: float, now_monotonic: float) -> Proof | None:
    """None when every agent unit in use is active and started after the copy; else why not."""
    if not units:
        looked = ", ".join(candidates(configured))
        return Proof(False, "agent_not_in_use", int(ExitCode.AGENT_NOT_ACTIVE),
                     f"no Slurm-web agent unit is enabled or running (looked at {looked}): "
                     "the dashboard has no agent", ())
    by_name = {s.name: s for s in states}
    for unit in units:
        state = by_name.get(unit)
        active = state.active_state if state is not None else "unknown"
        if active != "active":
            return Proof(False, "agent_unit_not_active", int(ExitCode.AGENT_NOT_ACTIVE),
                         f"{unit} is {active or 'unknown'}: start it "
                         f"(systemctl start {unit}; journalctl -u {unit} says why it stopped)",
                         tuple(units))
    for unit in units:
        state = by_name[unit]
        if copy_mtime is not None and not started_after(
                state.started_monotonic_us, copy_mtime, now_wall=now_wall,
                now_monotonic=now_monotonic):
            return Proof(False, "agent_started_before_copy", int(ExitCode.RESTART_PENDING),
                         f"{unit} was started before its key copy was last written: it may "
                         f"run an older key (systemctl restart {unit})", tuple(units))
    return None


def slurm_proof_from_probe(result: ProbeResult, units: Sequence[str]) -> Proof | None:
    """The probe's answer as a proof; None when it could not ask (then the check decides)."""
    if not result.usable:
        return None
    if "slurmctld" in result.refused:
        return Proof(False, "refused_by_slurmctld", int(ExitCode.REJECTED_BY_SLURMCTLD),
                     "slurmctld refuses a token signed with the agent's copy", tuple(units))
    if "slurmdbd" in result.refused:
        return Proof(False, "refused_by_slurmdbd", int(ExitCode.REJECTED_BY_SLURMDBD),
                     "slurmdbd refuses a token signed with the agent's copy", tuple(units))
    if result.error is not None:
        return slurm_proof_from_verdict(result.error, units)
    if not result.accepted:
        return None
    return Proof(True, PROOF_OK, 0, "", tuple(units))


_REFUSED = {"rejected_by_slurmctld": "refused_by_slurmctld",
            "rejected_by_slurmdbd": "refused_by_slurmdbd"}


def slurm_proof_from_verdict(verdict: Verdict, units: Sequence[str]) -> Proof:
    if verdict.accepted:
        return Proof(True, PROOF_OK, 0, "", tuple(units))
    code = verdict.exit_code if verdict.exit_code else int(ExitCode.INTERNAL_ERROR)
    return Proof(False, _REFUSED.get(verdict.reason, verdict.reason), int(code),
                 verdict.message, tuple(units))


def copy_mtime(path: Path) -> float | None:
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return None


class Prover:
    """Takes the proof on the host: systemctl, the copy's mtime, Slurm (probe, else check)."""

    def __init__(self, *, systemctl: Systemctl, configured_units: Sequence[str] | None,
                 copy_path: Path, probe: Probe | None, agent_check: AgentCheck,
                 wall_clock: Callable[[], float] = time.time,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.systemctl = systemctl
        self.configured_units = configured_units
        self.copy_path = copy_path
        self.probe = probe
        self.agent_check = agent_check
        self.wall_clock = wall_clock
        self.clock = clock

    def prove(self) -> Proof:
        states: list[UnitState] = []
        errors: list[str] = []

        def describe(unit: str) -> tuple[str, str, str] | None:
            try:
                state = self.systemctl.show(unit)
            except SystemctlError as exc:
                errors.append(str(exc))
                return None
            states.append(state)
            return state.load_state, state.active_state, state.unit_file_state

        units = choose(self.configured_units, describe)
        if errors and not units:
            # Not "no agent": systemctl could not say.
            return Proof(False, "systemctl_failed", int(ExitCode.INTERNAL_ERROR),
                         f"cannot tell whether the agent runs: {errors[0]}")
        problem = unit_proof(self.configured_units, units, states, copy_mtime(self.copy_path),
                             now_wall=self.wall_clock(), now_monotonic=self.clock())
        if problem is not None:
            return problem
        if self.probe is not None:
            proof = slurm_proof_from_probe(self.probe(frozenset()), units)
            if proof is not None:
                return proof
        return slurm_proof_from_verdict(self.agent_check(), units)
