"""A wake-up for the daemon's main loop that signals can use too (a self-pipe).

A Python signal handler runs between bytecodes of the main thread, possibly while it holds the
lock inside a threading.Event, so a handler must not call Event.set(). The kernel writes to
this pipe for us instead (signal.set_wakeup_fd): SIGTERM and SIGHUP end the loop's wait at
once rather than at the next tick, and so does a worker thread that has news (first run done).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal


class Wakeup:
    def __init__(self) -> None:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def set(self) -> None:
        """Wake the waiter (from any thread). Never blocks: a full pipe already means awake."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._write, b"\0")

    def wait(self, timeout: float) -> bool:
        """Sleep until woken or `timeout` seconds pass; True when woken. Consumes the wake-up."""
        ready, _, _ = select.select([self._read], [], [], max(0.0, timeout))
        if not ready:
            return False
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 512):
                pass
        return True

    def wake_on_signals(self) -> int:
        """Main thread only: every signal also wakes the waiter. Returns the previous fd."""
        return signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)

    def close(self) -> None:
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)
