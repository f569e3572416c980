"""Which Slurm-web agent unit(s) to restart after the key copy changed.

Auto mode looks at both units the seed names and keeps those that are loaded, not masked and
running: an installed but stopped agent is not ours to start (someone stopped it), and none
running means "sync the copy only". A configured list is taken as it is but still filtered on
"running", for the same reason.
"""

from __future__ import annotations

from collections.abc import Sequence

from watchdog_daemon.systemctl import Systemctl, SystemctlError, UnitState
from watchdog_daemon.watchconfig import DEFAULT_AGENT_UNITS


def agent_units_in_use(systemctl: Systemctl, configured: Sequence[str] | None
                       ) -> tuple[list[str], list[UnitState]]:
    """(units to restart, every state looked at). SystemctlError propagates to the caller."""
    candidates = list(configured) if configured else list(DEFAULT_AGENT_UNITS)
    states: list[UnitState] = []
    chosen: list[str] = []
    for unit in candidates:
        try:
            state = systemctl.show(unit)
        except SystemctlError:
            if configured:
                raise
            # Auto mode: a unit systemctl cannot describe is not the one in use.
            continue
        states.append(state)
        if state.exists and not state.masked and state.running:
            chosen.append(unit)
    return chosen, states
