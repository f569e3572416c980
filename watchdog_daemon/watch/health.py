"""Can the agent be serving? One answer for `status`, the STATUS= line and the metrics. Pure.

Works on the daemon's state as written to its state file (a mapping), so that `status` and the
daemon itself read the same facts the same way. 0 only when the agent can be serving:

* in sync (the copy is Slurm's key, the agent was restarted with it and checked);
* waiting for Slurm to reload a new key while Slurm still accepts the copy the agent runs with
  (the last probe said so; the daemon probes every `probe_interval` while it waits).

Everything else is non-zero, most specific first: the circuit is open (restarts keep failing),
a restart is pending (the agent runs an older key than the copy), Slurm refuses the agent's
copy while the new key is not accepted yet (30/31), the last check failed (its own code), the
daemon has not finished its first look (50).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from watchdog_daemon.exitcodes import ExitCode

# Status.agent_key values: what Slurm said to a token signed with the agent's copy.
AGENT_KEY_ACCEPTED = "accepted"
REFUSED_BY = {"slurmctld": ExitCode.REJECTED_BY_SLURMCTLD,
              "slurmdbd": ExitCode.REJECTED_BY_SLURMDBD}


def health(state: Mapping[str, Any]) -> tuple[int, str]:
    """(exit code, reason) of the agent's situation as the watchdog sees it."""
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


def serving(state: Mapping[str, Any]) -> bool:
    return health(state)[0] == 0
