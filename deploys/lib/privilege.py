"""Root on every host: as the SSH user, or through sudo (`--sudo`, `_sudo` in host data).

pyinfra adds sudo to the commands of operations and facts by itself. It does not for commands a
FunctionCommand runs (the key's transfer, the rotation driving its cluster's other hosts): those
take the host's own privilege arguments from `arguments`, the same that pyinfra would apply.

Before the first command that needs root, `ensure_root` proves that sudo works, so that a site
whose SSH user may not become root gets one clear error on the first step, with nothing
changed, instead of pyinfra's failed fact or its password prompt where nobody can answer it.
The classification of what sudo answered is pure (`classify_probe`, `classify_sudo_run`).
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from typing import Any

from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS, pop_global_arguments

# pyinfra's privilege arguments (sudo, su, doas, dzdo), as this pyinfra version knows them.
_PRIVILEGE_PREFIXES = ("_sudo", "_use_sudo", "_preserve_sudo", "_su_", "_use_su", "_preserve_su",
                       "_doas", "_dzdo")
PRIVILEGE_KEYS = tuple(k for k in CONNECTOR_ARGUMENT_KEYS if k.startswith(_PRIVILEGE_PREFIXES))

# Run as the SSH user, never under sudo. sudo's own lines are prefixed so that pyinfra's connector
# does not take "sudo: a password is required" for its cue to prompt for a password.
PROBE = ('out=$(LC_ALL=C sudo -n true 2>&1); rc=$?; echo "rc=$rc"; '
         'printf "%s\\n" "$out" | sed "s/^/said: /"; echo "user=$(id -un)"')
SUDO_RUN_MARK = "__slurmrestd_access_uid="

PASSWORD_LINES = ("a password is required", "interactive authentication is required")
REFUSED_HINTS = ("not in the sudoers file", "is not allowed to", "may not run sudo",
                 "not allowed to execute", "is not in the sudoers")
BAD_PASSWORD_HINTS = ("incorrect password", "sorry, try again", "authentication failed",
                      "no password was provided")
DOCS = "docs/sudo.md"


class PrivilegeError(RuntimeError):
    pass


@dataclass(frozen=True)
class Probe:
    kind: str  # "ok" | "password" | "missing" | "refused"
    user: str
    said: str


def classify_probe(lines: list[str]) -> Probe:
    """What `sudo -n true` said, run as the SSH user."""
    rc, user, said = None, "", []
    for line in lines:
        if line.startswith("rc="):
            rc = int(line[3:] or 1)
        elif line.startswith("user="):
            user = line[5:]
        elif line.startswith("said: "):
            said.append(line[6:].strip())
    text = " ".join(s for s in said if s)
    if rc == 0:
        return Probe("ok", user, text)
    if rc == 127 or ("not found" in text and "sudo" in text):
        return Probe("missing", user, text)
    if any(p in text.lower() for p in PASSWORD_LINES):
        return Probe("password", user, text)
    return Probe("refused", user, text)


def probe_error(host: str, probe: Probe, password_given: bool, interactive: bool) -> str | None:
    """The error for this probe, or None when the deploy can go on through sudo."""
    who = probe.user or "the SSH user"
    if probe.kind == "ok":
        return None
    if probe.kind == "missing":
        return (f"sudo is not installed on {host}, so {who} cannot become root: install it "
                f"(apt install sudo / dnf install sudo), or log in as root (see {DOCS})")
    if probe.kind == "password":
        if password_given or interactive:
            return None
        return (f"sudo on {host} asks {who} for a password and none was given: add "
                "--same-sudo-password (asks once), set _sudo_password in the host's data, or "
                f"grant {who} NOPASSWD (see {DOCS}). If {who} may not use sudo at all, that "
                "must be granted first")
    return refused(host, who, probe.said)


def refused(host: str, who: str, said: str) -> str:
    return (f"{who} may not become root with sudo on {host} (sudo said: {said or 'nothing'}): "
            f"grant it in /etc/sudoers.d/ (see {DOCS}), or log in as root")


def classify_sudo_run(host: str, who: str, ok: bool, stdout: list[str],
                      stderr: list[str]) -> str | None:
    """The error for `id -u` run through pyinfra's sudo (with a password), or None: root."""
    uid = next((line[len(SUDO_RUN_MARK):] for line in stdout if line.startswith(SUDO_RUN_MARK)),
               None)
    said = " ".join(line.strip() for line in stderr if line.strip())[-300:]
    if ok and uid is not None:
        return not_root(host, int(uid)) if uid.strip() != "0" else None
    if any(h in said.lower() for h in BAD_PASSWORD_HINTS):
        return (f"sudo on {host} did not accept the password given for {who} ({said}): check "
                "_sudo_password in the host's data, or the password typed")
    if any(h in said.lower() for h in REFUSED_HINTS) or said:
        return refused(host, who, said)
    return f"sudo on {host} gave no answer (the connection was lost, or sudo timed out)"


def not_root(host: str, uid: int | None) -> str | None:
    """The deploy's commands must run as root: None when they do."""
    if uid is None or uid == 0:
        return None
    return (f"commands on {host} run as uid {uid}, not as root: log in as root, or use sudo: "
            f"pyinfra's --sudo, or _sudo=True in the host's data (see {DOCS}); with _sudo_user, "
            "it must be root")


# ------------------------------------------------------------------------------------- I/O


def arguments(state: Any, host: Any) -> dict:
    """The privilege arguments pyinfra applies to this host's commands (CLI, then host data)."""
    found, _keys = pop_global_arguments(state, host, {})
    return {k: found[k] for k in PRIVILEGE_KEYS if k in found}  # type: ignore[literal-required]


_proven: dict[str, str | None] = {}


def ensure_root(state: Any, host: Any) -> str | None:
    """Once per host and run: None when this host's commands can run as root, else the error.

    Without sudo, nothing is run here (the survey reports the uid, see `not_root`). With sudo,
    one command as the SSH user; when sudo asks for a password, one more through sudo.
    """
    if host.name in _proven:
        return _proven[host.name]
    args = arguments(state, host)
    error = None
    if args.get("_sudo"):
        error = _probe(host, args)
    _proven[host.name] = error
    return error


def _probe(host: Any, args: dict) -> str | None:
    from pyinfra.api import StringCommand

    try:
        _ok, output = host.run_shell_command(StringCommand("sh", "-c", shlex.quote(PROBE)),
                                             print_output=False, _timeout=60)
    except Exception as exc:
        return f"cannot reach {host.name} to test sudo: {exc}"
    probe = classify_probe(list(output.stdout_lines))
    password_given = bool(args.get("_sudo_password")
                          or host.connector_data.get("prompted_sudo_password"))
    error = probe_error(host.name, probe, password_given, sys.stdin.isatty())
    if error or probe.kind != "password":
        return error
    # A password: prove it (and the rights behind it) once, through pyinfra's own sudo. When
    # none was given and a terminal is there, pyinfra asks for it now, on this first step.
    try:
        ok, output = host.run_shell_command(
            StringCommand("sh", "-c", shlex.quote(f"echo {SUDO_RUN_MARK}$(id -u)")),
            print_output=False, _timeout=60, **args)
    except Exception as exc:
        return f"cannot run sudo on {host.name}: {exc}"
    return classify_sudo_run(host.name, probe.user or "the SSH user", ok,
                             list(output.stdout_lines), list(output.stderr_lines))
