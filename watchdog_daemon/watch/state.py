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


def pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
