"""Capped exponential backoff with full jitter, for "Slurm does not accept the new key yet".

Pure: the random source is injected so tests are deterministic. "Equal jitter" (uniform between
half the step and the step) keeps many agent hosts of one cluster from polling slurmctld in
lock-step after a rotation, while never waiting longer than the cap.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    def __init__(self, base: float, cap: float, *, rand: Callable[[], float] | None = None) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._rand = rand if rand is not None else random.random
        self.attempts = 0

    def next_delay(self) -> float:
        """The wait before the next attempt; each call counts one failed attempt."""
        # min() before the power would overflow for a daemon that waits for months.
        step = min(self.cap, self.base * (2 ** min(self.attempts, 32)))
        self.attempts += 1
        return step / 2 + self._rand() * step / 2

    def reset(self) -> None:
        self.attempts = 0
