"""The hand-off between everything that notices a change and the single pipeline worker.

Event handlers, the reconcile timer, SIGHUP and the retry timer only call `fire()`: it sets a flag
under a lock and can neither block nor fail in a way that matters. The worker takes everything
pending at once, so any number of fires during a run means exactly one more run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Batch:
    vias: frozenset[str]  # events | reconcile | start | signal | rearm | retry
    in_place: bool  # some change may be an in-place write: wait for quiet before reading

    @property
    def via(self) -> str:
        """The most telling source, for the `key_change_detected via=` field."""
        for name in ("events", "rearm", "signal", "start", "reconcile", "retry"):
            if name in self.vias:
                return name
        return next(iter(sorted(self.vias)), "unknown")


class Trigger:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._vias: set[str] = set()
        self._in_place = False
        self._last_fire = float("-inf")
        self.fired = 0  # total, for tests and metrics
        self._stopping = False

    def fire(self, via: str, *, in_place: bool = False) -> None:
        with self._cond:
            self._vias.add(via)
            self._in_place = self._in_place or in_place
            self._last_fire = self._clock()
            self.fired += 1
            self._cond.notify_all()

    @property
    def pending(self) -> bool:
        with self._cond:
            return bool(self._vias)

    def wait(self, timeout: float | None) -> bool:
        """Block until something is pending (True) or the timeout passed (False)."""
        with self._cond:
            self._cond.wait_for(lambda: bool(self._vias) or self._stopping, timeout)
            return bool(self._vias)

    def settle(self, quiet_for: float, cap: float, stop: threading.Event) -> None:
        """Wait until no fire came for `quiet_for` seconds (at most `cap` in total).

        A burst of events (a tool renaming twice, an editor writing in chunks) thus becomes one
        run that sees the final content.
        """
        if quiet_for <= 0:
            return
        start = self._clock()
        with self._cond:
            while not stop.is_set():
                now = self._clock()
                remaining = min(self._last_fire + quiet_for - now, start + cap - now)
                if remaining <= 0:
                    return
                # Woken early by a new fire, which moves _last_fire and so the deadline.
                # (short slices so a stop request is honoured within 50 ms)
                self._cond.wait(min(remaining, 0.05))

    def events_pending(self) -> bool:
        with self._cond:
            return "events" in self._vias

    def in_place_pending(self) -> bool:
        with self._cond:
            return self._in_place

    def take(self) -> Batch:
        with self._cond:
            batch = Batch(frozenset(self._vias), self._in_place)
            self._vias.clear()
            self._in_place = False
            return batch

    def wake(self) -> None:
        """Stop: waiters return now, and every later wait returns at once."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
