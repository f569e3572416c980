"""Can the agent serve now? One answer for `status`, the STATUS= line and the metrics. Pure.

Works on the daemon's state as written to its state file (a mapping), so that `status` and the
daemon itself read the same facts the same way, at the time they are read. Two layers:

`sync_health`, the sync pipeline's view, is 0 when the copy is in step:

* in sync (the copy is Slurm's key, nothing pending);
* waiting for Slurm to reload a new key while Slurm still accepts the copy the agent runs with
  (the last probe said so; the daemon probes every `probe_interval` while it waits).

Otherwise non-zero, most specific first: the circuit is open (restarts keep failing), a restart
is pending (the agent runs an older key than the copy), Slurm refuses the agent's copy while
the new key is not accepted yet (30/31), the last check failed (its own code), the daemon has
not finished its first look (50).

`health` is 0 only when that holds AND the daemon's last proof (watch/proof.py) is recent and
good: within `proof_max_age` seconds, the agent unit in use was active and started after the
copy was written, and Slurm accepted a token signed with the copy. A proof that failed gives its
own code (54 for the unit, 51 for a unit older than its copy, 30/31 for a refusal, 20-33 for
slurmrestd or a daemon out of reach); no proof yet is 50, and so is a proof taken before the
copy or the agent last changed (`proof_pending`: the next one follows within a second); a proof
too old (the daemon is stuck) is 55.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from watchdog_daemon.exitcodes import ExitCode

# Status.agent_key values: what Slurm said to a token signed with the agent's copy.
AGENT_KEY_ACCEPTED = "accepted"
REFUSED_BY = {"slurmctld": ExitCode.REJECTED_BY_SLURMCTLD,
              "slurmdbd": ExitCode.REJECTED_BY_SLURMDBD}


def sync_health(state: Mapping[str, Any]) -> tuple[int, str]:
    """(exit code, reason) of the copy's situation as the sync pipeline sees it."""
    name = state.get("state")
    if state.get("circuit") == "open":
        return int(ExitCode.CIRCUIT_OPEN), "circuit_open"
    if state.get("restart_pending"):
        return int(ExitCode.RESTART_PENDING), "restart_pending"
    if name == "in_sync":
        return int(ExitCode.OK), "in_sync"
    if name in (None, "starting", "syncing"):
        return int(ExitCode.WATCH_NOT_READY), "not_ready"
    agent_key = state.get("agent_key")
    if name == "waiting_for_slurm":
        if agent_key == AGENT_KEY_ACCEPTED:
            return int(ExitCode.OK), "waiting_for_slurm_agent_serving"
        if isinstance(agent_key, str) and agent_key.startswith("refused_by_"):
            daemon = agent_key[len("refused_by_"):]
            return int(REFUSED_BY.get(daemon, ExitCode.REJECTED_BY_SLURMCTLD)), agent_key
    code = state.get("exit_code")
    reason = state.get("reason") or str(name)
    if isinstance(code, int) and not isinstance(code, bool) and code > 0:
        return code, str(reason)
    return int(ExitCode.INTERNAL_ERROR), str(reason)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def proof_health(state: Mapping[str, Any], now: float) -> tuple[int, str] | None:
    """None when the last proof is recent and good; else (exit code, reason)."""
    at = state.get("proof_at")
    if not _number(at):
        return int(ExitCode.WATCH_NOT_READY), "not_proven_yet"
    if state.get("proof_pending") is True:
        return int(ExitCode.WATCH_NOT_READY), "proof_pending"
    max_age = state.get("proof_max_age")
    if not _number(max_age) or now - at > max_age:
        return int(ExitCode.PROOF_TOO_OLD), "proof_too_old"
    code = state.get("proof_exit_code")
    if code == 0 and not isinstance(code, bool):
        return None
    reason = str(state.get("proof_reason") or "proof_failed")
    if _number(code) and int(code) > 0:
        return int(code), reason
    return int(ExitCode.INTERNAL_ERROR), reason


def health(state: Mapping[str, Any], now: float | None = None) -> tuple[int, str]:
    """(exit code, reason) of `status` at wall time `now` (default: the present)."""
    code, reason = sync_health(state)
    if code != 0:
        return code, reason
    proof = proof_health(state, time.time() if now is None else now)
    return proof if proof is not None else (code, reason)


def proof_age(state: Mapping[str, Any], now: float | None = None) -> float | None:
    at = state.get("proof_at")
    if not _number(at):
        return None
    return max(0.0, (time.time() if now is None else now) - float(at))


def serving(state: Mapping[str, Any]) -> bool:
    return health(state)[0] == 0
