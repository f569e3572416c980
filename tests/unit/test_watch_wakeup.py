"""The main loop wakes at once for READY, SIGTERM and SIGHUP, not at its next tick.

systemd waits for READY=1 (Type=notify) in `systemctl start`, and the deploy waits for that
start: a loop that only looked once per tick made every start and stop a second slower.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from tests.unit.test_watch_support import make_harness, wait_for
from watchdog_daemon.watch.wakeup import Wakeup


def test_wait_times_out_when_nobody_wakes_it() -> None:
    wake = Wakeup()
    try:
        started = time.monotonic()
        assert wake.wait(0.05) is False
        assert time.monotonic() - started >= 0.04
    finally:
        wake.close()


def test_set_from_another_thread_ends_the_wait_at_once() -> None:
    wake = Wakeup()
    try:
        threading.Timer(0.05, wake.set).start()
        started = time.monotonic()
        assert wake.wait(10) is True
        assert time.monotonic() - started < 2
        # The wake-up is consumed: the next wait sleeps again.
        assert wake.wait(0.01) is False
    finally:
        wake.close()


def test_many_wakeups_never_block_the_waker() -> None:
    wake = Wakeup()
    try:
        for _ in range(200_000):  # far beyond a pipe's buffer
            wake.set()
        assert wake.wait(0) is True
        assert wake.wait(0) is False
    finally:
        wake.close()


def test_a_signal_ends_the_wait_at_once() -> None:
    wake = Wakeup()
    seen: list[int] = []
    previous_handler = signal.signal(signal.SIGUSR1, lambda signum, _frame: seen.append(signum))
    previous_fd = wake.wake_on_signals()
    try:
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        started = time.monotonic()
        assert wake.wait(10) is True
        assert time.monotonic() - started < 2
        assert wait_for(lambda: seen == [signal.SIGUSR1], timeout=2)
    finally:
        signal.set_wakeup_fd(previous_fd)
        signal.signal(signal.SIGUSR1, previous_handler)
        wake.close()


def test_ready_and_stop_do_not_wait_for_the_next_tick(tmp_path: Path) -> None:
    harness = make_harness(tmp_path)
    harness.tick = 30.0  # a loop waiting for its tick would be 30 s late for both
    try:
        harness.start()
        assert wait_for(lambda: harness.log.events("watch_started"), timeout=3)
    finally:
        started = time.monotonic()
        harness.stop()
        stop_seconds = time.monotonic() - started
    assert harness.thread is not None and not harness.thread.is_alive()
    assert stop_seconds < 3
