"""Checks on the slurmrestd host before the deploy changes anything.

The drop-in (config/dropin.py) replaces the vendor unit's ExecStart= and Environment= but not its
`EnvironmentFile=-/etc/default/slurmrestd` (Debian) / `/etc/sysconfig/slurmrestd` (RHEL), so
what these files set still reaches slurmrestd:

* `SLURMRESTD_LISTEN` (read by slurmrestd itself since 24.05) adds listeners: the drop-in's
  socket repeated there makes slurmrestd fail to start (Slurm's rest_quickstart); any other
  address would make it listen there too, e.g. on TCP without TLS. Both are refused: comment the
  line out.
* `SLURMRESTD_OPTIONS` is expanded on the drop-in's command line: an `-a` (authentication
  plugins) would fight the drop-in's `-a rest_auth/jwt`, and a listen address (a positional
  argument) adds a listener as above. Both are refused; `-u`/`-g` are only warned about
  (with DynamicUser=yes slurmrestd is not root and cannot switch users).

It also refuses a Slurm older than Slurm-web's agent can use (config/slurmrelease.py), unless told
`--allow-unsupported-slurm`. (The deploy decides that on every host from its own survey, before
it asks the tool for a plan: `plan` does not decide it again.) On the agent's host, it refuses a
Slurm-web release that cannot work with this Slurm (config/slurmweb.py: the REST API versions
the release asks for, none of which this Slurm serves), or that cannot be known at all.

Pure functions take text; `run_preflight` gathers it from the host.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import asdict, dataclass

from watchdog_daemon.config import slurmrelease, slurmweb
from watchdog_daemon.config.dropin import DEFAULT_SOCKET

ERROR = "error"
WARNING = "warning"

ENV_FILES = ("/etc/default/slurmrestd", "/etc/sysconfig/slurmrestd")
UNIT_DIRS = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
)
SYSTEMCTL_TIMEOUT = 15

_ASSIGN_RE = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)")
# slurmrestd options that take their argument in the next word.
_OPTS_WITH_ARG = {"-a", "-d", "-f", "-g", "-s", "-t", "-u", "--max-connections"}


@dataclass(frozen=True)
class Finding:
    level: str  # ERROR stops the deploy, WARNING is reported
    message: str
    hint: str
    file: str | None = None
    line: int | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class EnvValue:
    value: str
    line: int


def parse_env_file(text: str) -> tuple[dict[str, EnvValue], list[int]]:
    """Parse a shell-style environment file: `KEY=value`, quotes, `#` comments, `export`.

    Returns the variables (the last assignment wins, as for both the shell and systemd) and
    the numbers of the lines that could not be parsed (e.g. an unbalanced quote).
    """
    values: dict[str, EnvValue] = {}
    bad: list[int] = []
    lines = text.splitlines()
    n = 0
    while n < len(lines):
        lineno = n + 1
        line = lines[n]
        # Backslash-newline joins lines in both the shell and systemd.
        while line.endswith("\\") and n + 1 < len(lines):
            n += 1
            line = line[:-1] + lines[n]
        n += 1
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        m = _ASSIGN_RE.fullmatch(line)
        if not m:
            bad.append(lineno)
            continue
        try:
            words = shlex.split(m.group(2), comments=True, posix=True)
        except ValueError:
            bad.append(lineno)
            continue
        values[m.group(1)] = EnvValue(" ".join(words), lineno)
    return values, bad


def _same_socket(spec: str, socket_path: str) -> bool:
    if not spec.startswith("unix:"):
        return False
    path = re.sub(r"^/+", "/", spec[len("unix:") :])
    return os.path.normpath(path) == os.path.normpath(socket_path)


def check_env_text(text: str, path: str, socket_path: str = DEFAULT_SOCKET) -> list[Finding]:
    """Findings for one environment file's text (see the module docstring for the rules)."""
    values, bad = parse_env_file(text)
    findings = [
        Finding(
            WARNING,
            f"{path} line {n} cannot be parsed; it was not checked",
            "fix the quoting of that line",
            path,
            n,
        )
        for n in bad
    ]
    listen = values.get("SLURMRESTD_LISTEN")
    if listen and listen.value.strip():
        specs = [s.strip() for s in listen.value.split(",") if s.strip()]
        hint = (
            f"comment out SLURMRESTD_LISTEN in {path} line {listen.line}:"
            " the drop-in already gives slurmrestd its socket"
        )
        if any(_same_socket(s, socket_path) for s in specs):
            findings.append(
                Finding(
                    ERROR,
                    f"SLURMRESTD_LISTEN in {path} repeats the socket unix:{socket_path}:"
                    " slurmrestd fails to start when a socket is given twice",
                    hint,
                    path,
                    listen.line,
                )
            )
        else:
            findings.append(
                Finding(
                    ERROR,
                    f"SLURMRESTD_LISTEN in {path} makes slurmrestd also listen on"
                    f" {', '.join(specs)} (besides the drop-in's unix socket; TCP would be"
                    " unencrypted)",
                    hint,
                    path,
                    listen.line,
                )
            )
    options = values.get("SLURMRESTD_OPTIONS")
    if options and options.value.strip():
        findings.extend(_check_options(options, path))
    auth_types = values.get("SLURMRESTD_AUTH_TYPES")
    if auth_types and auth_types.value.strip():
        findings.append(
            Finding(
                WARNING,
                f"SLURMRESTD_AUTH_TYPES is set in {path}; the drop-in passes -a rest_auth/jwt",
                f"remove SLURMRESTD_AUTH_TYPES from {path} line {auth_types.line}",
                path,
                auth_types.line,
            )
        )
    return findings


def _check_options(options: EnvValue, path: str) -> list[Finding]:
    findings: list[Finding] = []
    where = f"SLURMRESTD_OPTIONS in {path} line {options.line}"
    try:
        words = shlex.split(options.value)
    except ValueError:
        return [Finding(WARNING, f"{where} cannot be split into words", "fix its quoting", path)]
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word in _OPTS_WITH_ARG:
            i += 1  # skip its argument
        if word == "-a" or (word.startswith("-a") and not word.startswith("--")):
            findings.append(
                Finding(
                    ERROR,
                    f"{where} sets authentication plugins (-a), which conflicts with the"
                    " drop-in's -a rest_auth/jwt",
                    f"remove -a ... from SLURMRESTD_OPTIONS in {path}",
                    path,
                    options.line,
                )
            )
        elif word.startswith("--auth"):
            findings.append(
                Finding(
                    ERROR,
                    f"{where} sets authentication ({word.split('=')[0]}), which conflicts with"
                    " the drop-in's -a rest_auth/jwt",
                    f"remove it from SLURMRESTD_OPTIONS in {path}",
                    path,
                    options.line,
                )
            )
        elif word in ("-u", "-g") or re.fullmatch(r"-[ug].+", word):
            findings.append(
                Finding(
                    WARNING,
                    f"{where} asks slurmrestd to switch user/group ({word[:2]}); with"
                    " DynamicUser=yes it does not run as root and may fail to start",
                    f"remove -u/-g from SLURMRESTD_OPTIONS in {path}",
                    path,
                    options.line,
                )
            )
        elif not word.startswith("-"):
            findings.append(
                Finding(
                    ERROR,
                    f"{where} contains a listen address ({word}): slurmrestd would listen"
                    " there too, or fail if it is the drop-in's socket",
                    f"remove {word} from SLURMRESTD_OPTIONS in {path}",
                    path,
                    options.line,
                )
            )
    return findings


def check_unit(unit: str, *, unit_dirs: tuple[str, ...] = UNIT_DIRS) -> Finding | None:
    """None when the unit is installed, else the finding that says how to fix it."""
    found = _unit_file(unit, unit_dirs)
    if found is None and _systemctl_knows(unit):
        return None
    if found is None:
        return Finding(
            ERROR,
            f"{unit} is not installed: install the slurmrestd package",
            "Debian/Ubuntu: apt install slurmrestd; RHEL: dnf install slurm-slurmrestd",
        )
    if os.path.realpath(found) == os.devnull:
        return Finding(
            ERROR,
            f"{unit} is masked ({found} -> /dev/null)",
            f"systemctl unmask {unit}",
            found,
        )
    return None


def _unit_file(unit: str, unit_dirs: tuple[str, ...]) -> str | None:
    for directory in unit_dirs:
        candidate = os.path.join(directory, unit)
        if os.path.lexists(candidate):
            return candidate
    return None


def _systemctl_knows(unit: str) -> bool:
    """Ask systemd when no unit file was found in the usual directories (e.g. a generator)."""
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return False
    try:
        proc = subprocess.run(
            [systemctl, "cat", "--", unit],
            capture_output=True,
            timeout=SYSTEMCTL_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def run_preflight(
    *,
    unit: str = "slurmrestd.service",
    socket_path: str = DEFAULT_SOCKET,
    env_files: tuple[str, ...] = ENV_FILES,
    unit_dirs: tuple[str, ...] = UNIT_DIRS,
) -> list[Finding]:
    """All findings for this host; any ERROR means the deploy must not go on."""
    findings: list[Finding] = []
    unit_finding = check_unit(unit, unit_dirs=unit_dirs)
    if unit_finding is not None:
        findings.append(unit_finding)
    for path in env_files:
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as fh:
                text = fh.read()
        except FileNotFoundError:
            continue
        except OSError as exc:
            findings.append(
                Finding(
                    ERROR,
                    f"{path} cannot be read ({exc.strerror}); it may set SLURMRESTD_LISTEN",
                    "run the preflight as root",
                    path,
                )
            )
            continue
        findings.extend(check_env_text(text, path, socket_path))
    return findings


def release_finding(version_text: str | None, allow_unsupported: bool = False) -> Finding | None:
    """An ERROR when this Slurm is older than Slurm-web's agent can use (slurmrelease.decide)."""
    verdict = slurmrelease.decide(version_text, allow_unsupported)
    if verdict.ok:
        return None
    return Finding(ERROR, verdict.message, verdict.hint)


def slurmweb_finding(release: slurmweb.AgentRelease | None, error: slurmweb.ReleaseError | None,
                     api_versions: tuple[str, ...], version_text: str | None,
                     allow_unsupported: bool = False) -> Finding | None:
    """An ERROR when the agent's release is not known, or cannot work with this Slurm."""
    if release is None:
        assert error is not None
        return Finding(ERROR, error.message, error.hint)
    slurm = slurmrelease.parse_release(version_text) if version_text else None
    verdict = slurmweb.pairing(release, api_versions, slurm)
    if verdict.ok or allow_unsupported:
        return None
    return Finding(ERROR, verdict.message + ". Nothing was changed", verdict.hint)


def failed(findings: list[Finding]) -> bool:
    return any(f.level == ERROR for f in findings)
