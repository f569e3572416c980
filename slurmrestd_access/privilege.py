"""Root on every host: as the SSH user, or through sudo (`--sudo`, `_sudo` in host data).

pyinfra adds sudo to the commands of operations and facts by itself. It does not for commands a
FunctionCommand runs (the key's transfer, the rotation driving its cluster's other hosts): those
take the host's own privilege arguments from `arguments`, the same that pyinfra would apply.

Each host's first command, the survey, runs through `run_as_root`, which proves in that same
command that sudo works: a site whose SSH user may not become root gets one clear error on the
first step, with nothing changed, instead of pyinfra's failed fact or its password prompt where
nobody can answer it. Reading what sudo answered is pure (`classify_probe`,
`classify_sudo_failure`).
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

PASSWORD_LINES = ("a password is required", "interactive authentication is required")
BAD_PASSWORD_HINTS = ("incorrect password", "sorry, try again", "authentication failed",
                      "no password was provided")
DOCS = "docs/sudo.md"


@dataclass(frozen=True)
class Probe:
    kind: str  # "ok" | "password" | "missing" | "refused"
    user: str
    said: str


def classify_probe(lines: list[str]) -> Probe:
    """What `sudo -n` said (see sudo_wrapped), run as the SSH user."""
    rc, user, said = None, "", []
    for line in lines:
        if line.startswith("rc="):
            rc = int(line[3:]) if line[3:].isdigit() else 1
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


def classify_sudo_failure(host: str, who: str, stderr: list[str]) -> str:
    """The error for a command that failed through pyinfra's sudo with a password."""
    said = " ".join(line.strip() for line in stderr if line.strip())[-300:]
    if any(h in said.lower() for h in BAD_PASSWORD_HINTS):
        return (f"sudo on {host} did not accept the password given for {who} ({said}): check "
                "_sudo_password in the host's data, or the password typed")
    if "not found" in said and "sudo" in said:
        return probe_error(host, Probe("missing", who, said), True, True) or said
    if said:
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


def sudo_wrapped(script: str) -> str:
    """`script` through `sudo -n`, run as the SSH user: its stdout as is, then sudo's (and the
    script's) stderr prefixed `said: `, `user=` and `rc=` (see classify_probe). The prefix keeps
    pyinfra's connector from taking "sudo: a password is required" for its cue to prompt."""
    # fd 3: this shell's stdout, for the script's own; only stderr goes to the capture.
    return (f'echo "user=$(id -un)"; exec 3>&1; '
            f"err=$(LC_ALL=C sudo -H -n sh -c {shlex.quote(script)} 2>&1 1>&3 3>&-); "
            'rc=$?; exec 3>&-; printf "%s\\n" "$err" | sed "s/^/said: /"; echo "rc=$rc"')


def run_as_root(state: Any, host: Any, script: str,
                timeout: int = 120) -> tuple[list[str], str | None]:
    """Run a read-only script as root on `host`: (its stdout lines, None) or ([], the error).

    It is each host's first command, so it proves root at no extra cost: as root, directly;
    through sudo without a password, by `sudo -n` in the same command (a refusal comes back as
    data, never as pyinfra's password prompt where nobody can answer it); with a password, by
    pyinfra's own sudo (askpass). Only sudo asking for a password nobody gave, on a terminal,
    costs a second command: pyinfra's prompt, on this first step.
    """
    from pyinfra.api import StringCommand

    args = arguments(state, host)
    who = str(host.data.get("ssh_user") or "the SSH user")
    if args.get("_sudo") and args.get("_sudo_user") not in (None, "", "root"):
        return [], (f"sudo on {host.name} is set to become {args['_sudo_user']!r}: the deploy's "
                    "commands must run as root; remove _sudo_user (or --sudo-user)")
    password = bool(args.get("_sudo_password")
                    or host.connector_data.get("prompted_sudo_password"))
    try:
        if args.get("_sudo") and not password:
            _ok, output = host.run_shell_command(StringCommand(sudo_wrapped(script)),
                                                 print_output=False, _timeout=timeout)
            lines = list(output.stdout_lines)
            probe = classify_probe(lines)
            error = probe_error(host.name, probe, False, sys.stdin.isatty())
            if error:
                return [], error
            if probe.kind == "ok":
                return [line for line in lines if not line.startswith(_PROBE_TAGS)], None
            who = probe.user or who  # a password, asked on the terminal by pyinfra now
        ok, output = host.run_shell_command(StringCommand(script), print_output=False,
                                            _timeout=timeout, **args)
    except Exception as exc:
        return [], f"cannot run the survey on {host.name}: {exc}"
    if ok:
        return list(output.stdout_lines), None
    stderr = list(output.stderr_lines)
    if args.get("_sudo"):
        return [], classify_sudo_failure(host.name, who, stderr)
    said = " ".join(line.strip() for line in stderr if line.strip())[-300:]
    return [], f"the survey failed on {host.name}: {said or 'no answer (connection lost?)'}"


_PROBE_TAGS = ("said: ", "user=", "rc=")
