"""The daemon's current state as a JSON file, for `slurmrestd-access status` and for itself.

Written atomically (temp file in the same directory, rename) so `status` never reads half a
file. It holds fingerprints, reasons and times: never key material. It also carries what the
daemon must remember across its own crash: the fingerprint of a copy installed whose agent
restart has not succeeded yet (`restart_pending`). It lives in /run (RuntimeDirectory, kept
across daemon restarts by RuntimeDirectoryPreserve=yes): a reboot restarts the agent anyway.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

STATE_VERSION = 1


def write_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    data = json.dumps({"version": STATE_VERSION, **state}, indent=2, sort_keys=True) + "\n"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        try:
            os.write(fd, data.encode())
            # 0644 despite UMask=0077: fingerprints and reasons only, readable by monitoring.
            os.fchmod(fd, 0o644)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_state(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def process_start(pid: int, proc: Path = Path("/proc")) -> int | None:
    """When process `pid` started, in clock ticks since boot (/proc/PID/stat, field 22); None
    when there is no such process. With the pid, it names one process: pids are reused."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or parentheses itself.
    fields = text[text.rfind(")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def pid_alive(pid: Any, start: Any = None, proc: Path = Path("/proc")) -> bool:
    """Whether the process that wrote the state still runs: its pid exists AND started when the
    state says (a dead daemon's pid given to another process is not the daemon)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if not isinstance(start, int) or isinstance(start, bool):
        return False
    return process_start(pid, proc) == start
