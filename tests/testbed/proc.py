"""Run machine-side commands, turning failures into TestbedError with the command's own words."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

from tests.testbed.errors import TestbedError


def run(
    cmd: Sequence[str],
    *,
    what: str,
    input: bytes | None = None,
    timeout: float | None = None,
    check: bool = True,
    quiet: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run cmd; on failure raise TestbedError naming `what` and the tail of its output."""
    try:
        res = subprocess.run(
            list(cmd),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE if quiet else None,
            stderr=subprocess.PIPE if quiet else None,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise TestbedError(f"{what}: {cmd[0]} not found ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise TestbedError(f"{what}: timed out after {timeout} s: {' '.join(cmd)}") from exc
    if check and res.returncode != 0:
        tail = _tail((res.stderr or b"") + (res.stdout or b""))
        raise TestbedError(f"{what} failed (exit {res.returncode}): {' '.join(cmd)}\n{tail}")
    return res


def _tail(output: bytes, lines: int = 15) -> str:
    text = output.decode("utf-8", "replace").strip().splitlines()
    return "\n".join(text[-lines:])


def say(message: str) -> None:
    """Progress goes to stderr so stdout carries only the inventory path."""
    print(message, file=sys.stderr, flush=True)
