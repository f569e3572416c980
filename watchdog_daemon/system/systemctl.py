"""The two systemd operations the watchdog needs, behind a small interface tests can fake.

`systemctl` over a subprocess rather than D-Bus bindings: no extra dependency, the same code path
an administrator uses by hand, and every call has a timeout. As root (our unit runs as root),
systemctl talks to PID 1 over its private socket /run/systemd/private; that needs no capability
beyond being uid 0, which is why the unit can drop CAP_SYS_ADMIN and friends.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

SYSTEMCTL = "/usr/bin/systemctl"


@dataclass(frozen=True)
class UnitState:
    name: str
    load_state: str  # loaded | not-found | masked | bad-setting | error
    active_state: str  # active | reloading | inactive | failed | activating | deactivating
    unit_file_state: str  # enabled | disabled | masked | static | "" ...
    # When its main process last started (CLOCK_MONOTONIC, µs; None: never, or not asked).
    started_monotonic_us: int | None = None

    @property
    def exists(self) -> bool:
        return self.load_state not in ("not-found", "")

    @property
    def masked(self) -> bool:
        return self.load_state == "masked" or self.unit_file_state.startswith("masked")

    @property
    def running(self) -> bool:
        return self.active_state in ("active", "reloading", "activating")


class SystemctlError(Exception):
    """systemctl failed or timed out; the message is systemctl's own (it holds no secret)."""


class Systemctl(Protocol):
    def show(self, unit: str) -> UnitState: ...

    def restart(self, unit: str, *, timeout: float) -> None: ...


Runner = Callable[[list[str], float], "subprocess.CompletedProcess[str]"]


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False,
        # No stdin: systemctl must never wait on a password agent prompt.
        stdin=subprocess.DEVNULL,
    )


class SubprocessSystemctl:
    def __init__(self, *, systemctl: str | None = None, runner: Runner = _run,
                 show_timeout: float = 10.0) -> None:
        self.systemctl = systemctl or SYSTEMCTL
        self._runner = runner
        self.show_timeout = show_timeout

    def show(self, unit: str) -> UnitState:
        argv = [self.systemctl, "show", "--no-pager",
                "-p", "LoadState,ActiveState,UnitFileState,ExecMainStartTimestampMonotonic,"
                "ActiveEnterTimestampMonotonic", "--", unit]
        try:
            done = self._runner(argv, self.show_timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SystemctlError(f"systemctl show {unit}: {type(exc).__name__}") from None
        if done.returncode != 0:
            raise SystemctlError(f"systemctl show {unit}: {_last_line(done.stderr)}")
        values = dict(
            line.split("=", 1) for line in done.stdout.splitlines() if "=" in line
        )
        return UnitState(
            name=unit,
            load_state=values.get("LoadState", ""),
            active_state=values.get("ActiveState", ""),
            unit_file_state=values.get("UnitFileState", ""),
            started_monotonic_us=_start_time(values),
        )

    def restart(self, unit: str, *, timeout: float) -> None:
        # A unit that failed for good (e.g. an agent that kept exiting for want of its key hit
        # its start limit) is refused by `restart` until its failed state is reset.
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):  # restart says what failed
            self._runner([self.systemctl, "reset-failed", "--", unit], self.show_timeout)
        # --no-block is NOT used: we want systemctl to wait for the start job, so its exit
        # status says whether the agent came up (for Type=notify units: once it sent READY=1).
        argv = [self.systemctl, "restart", "--no-ask-password", "--", unit]
        try:
            done = self._runner(argv, timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SystemctlError(f"systemctl restart {unit}: {type(exc).__name__}") from None
        if done.returncode != 0:
            raise SystemctlError(f"systemctl restart {unit}: {_last_line(done.stderr)}")


def wait_active(systemctl: Systemctl, unit: str, *, timeout: float, poll: float = 0.2,
                clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> UnitState:
    """Poll until `unit` is active; raise SystemctlError when it failed or the time is up."""
    deadline = clock() + timeout
    while True:
        state = systemctl.show(unit)
        if state.active_state == "active":
            return state
        if state.active_state in ("failed", "inactive") or clock() >= deadline:
            raise SystemctlError(f"{unit} is {state.active_state or 'unknown'} after restart")
        sleep(poll)


def _start_time(values: dict[str, str]) -> int | None:
    """The main process's start (a unit without one, e.g. Type=oneshot: when it became active);
    systemd says 0 for never."""
    for name in ("ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic"):
        text = values.get(name, "")
        if text.isdigit() and int(text) > 0:
            return int(text)
    return None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "failed"
