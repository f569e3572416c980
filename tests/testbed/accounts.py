"""The unprivileged accounts of every testbed host and admin's sudo rule.

Every host has `admin` (SSH with the testbed key, a password, sudo by one of two rules) and
`nosudo` (SSH with the testbed key, no sudo rights at all), as most HPC sites want deploys to run:
as an administrator's own account with sudo, not as root over SSH. The accounts themselves are in
the cached base (basecache); what changes per boot or per test (admin's password, the rule) is
set at `up` over SSH as root, and the rule can be switched at run time.

Rendering is pure; the password file's I/O is kept to the two functions at the end.
"""

from __future__ import annotations

import os
import secrets
import shlex
import stat
from pathlib import Path

from tests.testbed.errors import TestbedError

ADMIN_USER = "admin"
NOSUDO_USER = "nosudo"
ACCOUNTS = (ADMIN_USER, NOSUDO_USER)

NOPASSWD = "nopasswd"
PASSWORD = "password"
SUDO_MODES = (NOPASSWD, PASSWORD)
DEFAULT_SUDO_MODE = NOPASSWD

# No dot in the name: sudo skips files in /etc/sudoers.d whose name has one, which is what makes
# the temporary file below harmless until it is checked and renamed.
SUDOERS_PATH = "/etc/sudoers.d/testbed-admin"
_SUDOERS_TMP = "/etc/sudoers.d/.testbed-admin.tmp"
MODE_MARKER = "# testbed sudo mode: "

# Beside the testbed's SSH key on the workstation (.testbed/), readable by root only.
PASSWORD_FILE_NAME = "admin-sudo-password"

_RULES = {
    NOPASSWD: f"{ADMIN_USER} ALL=(ALL) NOPASSWD: ALL",
    PASSWORD: f"{ADMIN_USER} ALL=(ALL) ALL",
}


def check_mode(mode: str) -> str:
    if mode not in SUDO_MODES:
        raise TestbedError(f"sudo mode must be one of {', '.join(SUDO_MODES)}, not {mode!r}")
    return mode


def sudoers(mode: str) -> str:
    """admin's rule. Only admin's own Defaults: the distribution's /etc/sudoers stays as it is."""
    check_mode(mode)
    return (
        f"{MODE_MARKER}{mode}\n"
        "# Written by the testbed (tests/testbed/accounts.py); switch with\n"
        "# `python -m tests.testbed sudo-mode TOPOLOGY|HOST nopasswd|password|default`.\n"
        # Never reuse an earlier authentication: each command must show whether it works alone
        # (a cached credential would hide a step that forgot the password).
        f"Defaults:{ADMIN_USER} timestamp_timeout=0\n"
        # pyinfra's commands have no terminal.
        f"Defaults:{ADMIN_USER} !requiretty\n"
        f"{_RULES[mode]}\n"
    )


def mode_of(sudoers_text: str) -> str | None:
    """The mode a sudoers file written by sudoers() names, None for anything else."""
    first = sudoers_text.splitlines()[0] if sudoers_text else ""
    mode = first.removeprefix(MODE_MARKER) if first.startswith(MODE_MARKER) else None
    return mode if mode in SUDO_MODES else None


def apply_script(mode: str, set_password: bool) -> str:
    """Shell script run as root on a host: install admin's rule (checked by `visudo -cf` before
    it takes effect) and, with set_password, set admin's password read from standard input in
    chpasswd's `user:password` form (so it is never in any command line)."""
    text = sudoers(mode)
    lines = [
        "set -eu",
        f"printf %s {shlex.quote(text)} > {_SUDOERS_TMP}",
        f"chmod 0440 {_SUDOERS_TMP}",
        f"visudo -cqf {_SUDOERS_TMP} || {{ visudo -cf {_SUDOERS_TMP}; rm -f {_SUDOERS_TMP}; "
        "exit 1; }",
        f"mv -f {_SUDOERS_TMP} {SUDOERS_PATH}",
    ]
    if set_password:
        lines.append("chpasswd")
    return "\n".join(lines) + "\n"


def chpasswd_input(password: str) -> bytes:
    return f"{ADMIN_USER}:{password}\n".encode()


def new_password() -> str:
    # URL-safe characters only: no ':' or newline, which chpasswd's input could not carry.
    return secrets.token_urlsafe(18)


def ensure_password_file(path: Path) -> tuple[str, bool]:
    """admin's password, generated into path (0600, root's) when missing; (password, created).

    Stable per workstation, like the testbed's SSH key: hosts kept up and several topologies up
    at once all keep working with the one file, and `up` sets it on every host it brings up.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return read_password(path), False
    except FileNotFoundError:
        pass
    password = new_password()
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    # Created 0600 from the start: never readable by anyone else, not even for a moment.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    os.replace(tmp, path)
    return password, True


def read_password(path: Path) -> str:
    """The password from its file, refused if anyone but its owner could read it."""
    mode = stat.S_IMODE(path.stat().st_mode)  # FileNotFoundError passes through
    if mode & 0o077:
        raise TestbedError(
            f"{path} is readable by others (mode {mode:04o}): remove it, and "
            "`python -m tests.testbed up TOPOLOGY` writes a new one (0600)"
        )
    password = path.read_text().strip()
    if not password or ":" in password or "\n" in password:
        raise TestbedError(f"{path} does not hold a usable password: remove it and run `up` again")
    return password
