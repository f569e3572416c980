"""Restart budget and circuit breaker for the agent restarts.

Both are pure state machines over an injected monotonic clock.

* RestartBudget: at most `limit` restarts in any sliding `window`. systemd refuses a unit that
  starts more than StartLimitBurst=5 times in StartLimitIntervalSec=10s (defaults) and counts our
  `systemctl restart` as well as the agent's own Restart= attempts; 3 per 10 minutes keeps us far
  from that limit and from flapping an agent that users are talking to.
* CircuitBreaker: `threshold` consecutive failed restarts open it: no restart is attempted, the
  daemon keeps watching, syncing and checking, and reports `circuit_open`. After `cooldown` one
  trial restart is allowed (half-open): success closes it, failure opens it again.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from enum import Enum

Clock = Callable[[], float]


class RestartBudget:
    def __init__(self, limit: int, window: float, *, clock: Clock = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._times: deque[float] = deque()

    def _expire(self) -> None:
        now = self._clock()
        while self._times and now - self._times[0] >= self.window:
            self._times.popleft()

    def available(self) -> bool:
        self._expire()
        return len(self._times) < self.limit

    def spend(self) -> None:
        self._expire()
        self._times.append(self._clock())

    def seconds_until_available(self) -> float:
        self._expire()
        if len(self._times) < self.limit:
            return 0.0
        return max(0.0, self._times[0] + self.window - self._clock())

    @property
    def used(self) -> int:
        self._expire()
        return len(self._times)


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
