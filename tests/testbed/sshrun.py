"""The testbed's SSH key pair and running commands on hosts over SSH."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from tests.testbed.errors import TestbedError
from tests.testbed.proc import run

KEY_NAME = "id_ed25519"


def ensure_keypair(state_dir: Path) -> Path:
    """Generate the testbed key once; later runs reuse it so inventories stay valid."""
    state_dir.mkdir(parents=True, exist_ok=True)
    key = state_dir / KEY_NAME
    if not (key.is_file() and key.with_suffix(".pub").is_file()):
        key.unlink(missing_ok=True)
        key.with_suffix(".pub").unlink(missing_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "slurmrestd-access-testbed",
             "-f", str(key)], what="generate the testbed SSH key")
    key.chmod(0o600)
    key.with_suffix(".pub").chmod(0o600)
    return key


def ssh_command(key: Path, address: str, command: str, *, connect_timeout: int = 5,
                user: str = "root") -> list[str]:
    return [
        "ssh",
        "-i", str(key),
        "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR",
        "-o", f"ConnectTimeout={connect_timeout}",
        f"{user}@{address}",
        "--",
        command,
    ]


def ssh(
    key: Path,
    address: str,
    command: str,
    *,
    input: bytes | None = None,
    timeout: float | None = 120,
    capture: bool = True,
    user: str = "root",
) -> subprocess.CompletedProcess[bytes]:
    """Run a shell command line on the host as user; never raises on a non-zero exit.

    With capture=False the command's output goes straight to this process's stdout/stderr.
    """
    try:
        return subprocess.run(
            ssh_command(key, address, command, user=user),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=capture,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        first = command.strip().splitlines()[0] if command.strip() else ""
        raise TestbedError(f"ssh {address} {first!r}...: no answer within {timeout} s") from exc


def port_open(address: str, port: int = 22, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_ssh(key: Path, address: str, deadline: float) -> bool:
    """True once `ssh true` works before the monotonic deadline."""
    while time.monotonic() < deadline:
        if port_open(address) and ssh(key, address, "true", timeout=15).returncode == 0:
            return True
        time.sleep(0.5)
    return False
