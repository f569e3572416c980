"""Circuit breaker for the agent restarts that fail.

A pure state machine over an injected monotonic clock.

A restart counts as failed when the unit does not come back (systemctl fails, or the unit is not
active afterwards) or when the check as the agent, right after it, fails. `threshold`
consecutive failures open the circuit: no restart is attempted, the daemon keeps watching,
syncing and checking, and reports `circuit_open`. After `cooldown` one trial restart is allowed
(half-open): success closes it, failure opens it again.

There is deliberately no budget on restarts that SUCCEED: each one follows a key that Slurm has
just been proven to accept, and once Slurm accepts only that key an agent left unrestarted is
broken, not spared (issue 10). Restarts cannot storm either: each needs Slurm to reload a new key
first, and a minimum spacing of a few seconds (`restart_spacing`) keeps us well inside systemd's
StartLimitBurst=5 per StartLimitIntervalSec=10s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum

Clock = Callable[[], float]


class CircuitState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(self, threshold: int, cooldown: float, *, clock: Clock = time.monotonic) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self.failures = 0
        self._opened_at: float | None = None

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._clock() - self._opened_at >= self.cooldown:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    def allows(self) -> bool:
        return self.state is not CircuitState.OPEN

    def seconds_until_trial(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown - self._clock())

    def trial_now(self) -> None:
        """Allow one trial at once (half-open), before the cool-down ends.

        For a NEW key Slurm accepts: the old copy is refused by then, so an agent left as it is
        is certainly broken, while a restart may work (the failures were for another key)."""
        if self._opened_at is not None:
            self._opened_at = self._clock() - self.cooldown

    def record_success(self) -> None:
        self.failures = 0
        self._opened_at = None

    def record_failure(self) -> bool:
        """Count a failed restart; return True when this failure opened (or re-opened) it."""
        self.failures += 1
        was = self.state
        if was is CircuitState.HALF_OPEN or (
            was is CircuitState.CLOSED and self.failures >= self.threshold
        ):
            self._opened_at = self._clock()
            return True
        return False
