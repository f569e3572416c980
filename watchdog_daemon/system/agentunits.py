"""Which Slurm-web agent unit is "in use": the one rule the deploy, the rotation, the report and
the watchdog share.

A unit is in use when it is installed, not masked, and enabled or running. Enabled-but-failed
counts: Slurm-web's agent exits at start when its key copy is missing or unreadable, so on a
fresh host (or after a bad rotation) the agent that must be restarted once the copy is right is
exactly such a unit. Installed, disabled and stopped does not: someone stopped it on purpose, and
it is not ours to start. A configured unit goes through the same rule (it must exist).

`unit_in_use` and `choose` are pure; `agent_units_in_use` asks systemctl (the watchdog and the
`agent restart` command); the deploy and the report apply `choose` to their survey.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from watchdog_daemon.system.systemctl import Systemctl, SystemctlError, UnitState, wait_active

AGENT_UNITS: tuple[str, ...] = ("slurm-web-agent.service", "slurm-web-agent-uwsgi.service")

_RUNNING = ("active", "activating", "reloading")
_ENABLED = ("enabled", "enabled-runtime")


def unit_in_use(load_state: str, active_state: str, unit_file_state: str) -> bool:
    """The rule, on systemd's LoadState, ActiveState and UnitFileState."""
    installed = load_state not in ("not-found", "")
    masked = load_state == "masked" or unit_file_state.startswith("masked")
    return installed and not masked and (active_state in _RUNNING
                                         or unit_file_state in _ENABLED)


def candidates(configured: Sequence[str] | str | None) -> list[str]:
    """The units to look at: the configured one(s), else both of Slurm-web's."""
    if isinstance(configured, str):
        return [configured]
    return list(configured) if configured else list(AGENT_UNITS)


def choose(configured: Sequence[str] | str | None,
           describe: Callable[[str], tuple[str, str, str] | None]) -> list[str]:
    """The units in use among the candidates; `describe(unit)` gives (load, active, unit file)
    states, or None when it cannot say (then it is not in use)."""
    chosen = []
    for unit in candidates(configured):
        states = describe(unit)
        if states is not None and unit_in_use(*states):
            chosen.append(unit)
    return chosen


def agent_units_in_use(systemctl: Systemctl, configured: Sequence[str] | None
                       ) -> tuple[list[str], list[UnitState]]:
    """(units to restart, every state looked at), asking systemctl.

    SystemctlError propagates for a configured unit; in auto mode a unit systemctl cannot
    describe is not the one in use.
    """
    states: list[UnitState] = []

    def describe(unit: str) -> tuple[str, str, str] | None:
        try:
            state = systemctl.show(unit)
        except SystemctlError:
            if configured:
                raise
            return None
        states.append(state)
        return state.load_state, state.active_state, state.unit_file_state

    return choose(configured, describe), states


def restart_agent_units(systemctl: Systemctl, configured: Sequence[str] | None, *,
                        timeout: float) -> dict[str, Any]:
    """Restart the units in use and wait until each is active; a report for `agent restart`."""
    units, _states = agent_units_in_use(systemctl, configured)
    restarted = []
    for unit in units:
        systemctl.restart(unit, timeout=timeout)
        wait_active(systemctl, unit, timeout=timeout)
        restarted.append(unit)
    return {"units": units, "restarted": restarted}


__all__ = [
    "AGENT_UNITS",
    "agent_units_in_use",
    "candidates",
    "choose",
    "restart_agent_units",
    "unit_in_use",
]
