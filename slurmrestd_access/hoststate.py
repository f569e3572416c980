"""Parse the output of the one-command survey of a host (see facts.HostState). Pure.

One remote command per host gathers every file, unit, user and version the deploy compares
against, so a re-run that changes nothing costs few round trips.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

from slurmrestd_access.hostpython import CANDIDATES
from watchdog_daemon.config.slurmrelease import VERSION_COMMANDS
from watchdog_daemon.system.agentunits import unit_in_use
from watchdog_daemon.system.hostsurvey import PLUGIN_DIRS


@dataclass(frozen=True)
class RemoteFile:
    path: str
    exists: bool
    kind: str = ""  # "regular file", "symbolic link", "directory", ...
    owner: str = ""
    group: str = ""
    mode: int = 0
    sha256: str | None = None
    links: int = 1  # a key with more than one name is never trusted (nor hashed)

    def matches(self, sha256: str | None, owner: str, group: str, mode: int) -> bool:
        return (
            self.exists
            and self.kind == "regular file"
            and self.links == 1
            and (sha256 is None or self.sha256 == sha256)
            and self.owner == owner
            and self.group == group
            and self.mode == mode
        )


@dataclass(frozen=True)
class UnitState:
    name: str
    load: str = "not-found"
    active: str = "inactive"
    unit_file: str = ""

    @property
    def exists(self) -> bool:
        return self.load not in ("not-found", "")

    @property
    def in_use(self) -> bool:
        return unit_in_use(self.load, self.active, self.unit_file)

    @property
    def states(self) -> tuple[str, str, str]:
        """(load, active, unit file): what agentunits' rule reads."""
        return self.load, self.active, self.unit_file


@dataclass
class HostState:
    python: str = ""
    # python3.X interpreters installed besides python3 ("3.11"), and /etc/os-release's ID and
    # ID_LIKE: which Python runs the tool when python3 is too old (hostpython.choose).
    pythons: list[str] = field(default_factory=list)
    os_ids: list[str] = field(default_factory=list)
    # First line of `sinfo -V` (or another Slurm binary's): the release preflight decides on.
    slurm_version: str = ""
    machine: str = ""
    tool_digest: str = ""
    tool_version: str = ""  # the release installed there ("" = none, or not known)
    jwt_plugin: str = ""  # path of Slurm's auth_jwt.so, "" when not installed
    uid: int | None = None  # who the commands run as: must be 0 (root, directly or by sudo)
    files: dict[str, RemoteFile] = field(default_factory=dict)
    units: dict[str, UnitState] = field(default_factory=dict)
    users: dict[str, bool] = field(default_factory=dict)
    groups: dict[str, bool] = field(default_factory=dict)

    def file(self, path: str) -> RemoteFile:
        return self.files.get(path, RemoteFile(path, exists=False))

    def unit(self, name: str) -> UnitState:
        return self.units.get(name, UnitState(name))


def survey_script(
    files: list[str], units: list[str], users: list[str], groups: list[str], tool_prefix: str,
    slurm_conf: str = "/etc/slurm/slurm.conf", keys: tuple[str, ...] = (), tool: str = "",
) -> str:
    """The shell script behind HostState; prints one tagged line per item.

    `keys`: the paths in `files` that hold key material, or lie in directories unprivileged
    accounts own (a configless host's copy of slurm.conf, in slurm's /run/slurm). The installed
    tool describes them (`key fingerprint`: never a symlink followed, no
    hash of a hard-linked file, FIFO or device opened non-blocking, at most 1 MiB read). Before
    the tool is installed (a host's first deploy), a bounded shell fallback: regular file, one
    link, read within 10 s."""
    q = shlex.quote
    lines = [
        "export LC_ALL=C",
        'echo "uid $(id -u)"',
        "echo \"python $(python3 -c 'import sys;print(\"%d.%d\"%sys.version_info[:2])' "
        "2>/dev/null)\"",
        'echo "machine $(uname -m)"',
        # Only when python3 is too old (no cost otherwise); each must really run.
        "printf pythons; python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' "
        "2>/dev/null || for v in " + " ".join(CANDIDATES) + "; do "
        '"python$v" -c "" >/dev/null 2>&1 && printf " %s" "$v"; done; echo',
        "echo \"os $( (. /etc/os-release 2>/dev/null; echo $ID $ID_LIKE) )\"",
        # sbin: slurmctld, slurmd, slurmdbd and slurmrestd live there.
        "for b in " + " ".join(VERSION_COMMANDS) + "; do "
        'v=$(PATH="$PATH:/usr/sbin:/sbin:/usr/local/sbin" "$b" -V 2>/dev/null | head -n1) '
        '&& [ -n "$v" ] && { echo "slurm $v"; break; }; done',
        f'echo "tool $(cat {q(tool_prefix + "/INSTALLED")} 2>/dev/null)"',
        # The release installed: its dist-info's name (slurmrestd_access-VERSION.dist-info).
        f"echo \"toolversion $(ls -d {q(tool_prefix)}/current/lib/python*/site-packages/"
        "slurmrestd_access-*.dist-info 2>/dev/null | head -n1 | "
        "sed 's/.*slurmrestd_access-//; s/[.]dist-info$//')\"",
        # Debian ships auth/jwt apart (slurm-wlm-jwt-plugin): without it every daemon reading
        # AuthAltTypes=auth/jwt dies at start.
        "d=$(sed -n 's/^[[:space:]]*[Pp][Ll][Uu][Gg][Ii][Nn][Dd][Ii][Rr][[:space:]]*=[[:space:]]*"
        f"//p' {q(slurm_conf)} 2>/dev/null | tail -n1 | tr ':' ' ')",
        f"for p in $d {' '.join(PLUGIN_DIRS)}; do if [ -e \"$p/auth_jwt.so\" ]; then "
        'echo "jwtplugin $p/auth_jwt.so"; break; fi; done',
    ]
    for path in files:
        shell = (
            f"if [ -e {q(path)} ] || [ -L {q(path)} ]; then "
            f"s=$(stat -c '%U|%G|%a|%F' {q(path)}); l=$(stat -c %h {q(path)}); "
            f"h=$( [ -f {q(path)} ] && [ ! -L {q(path)} ] && [ \"$l\" = 1 ] && timeout 10 "
            f"sh -c 'sha256sum < \"$1\"' _ {q(path)} | cut -c1-64); "
            f"printf 'file|%s|1|%s|%s|%s\\n' {q(path)} \"$s\" \"$h\" \"$l\"; "
            f"else printf 'file|%s|0\\n' {q(path)}; fi"
        )
        if path in keys and tool:
            # The tool only where there is something to describe: a Python start less per
            # absent path.
            shell = (f"if [ -x {q(tool)} ] && {{ [ -e {q(path)} ] || [ -L {q(path)} ]; }}; "
                     f"then printf 'keyjson|%s|' {q(path)}; "
                     f"{q(tool)} key fingerprint --json --path {q(path)} 2>/dev/null "
                     f"|| echo; else {shell}; fi")
        lines.append(shell)
    for user in users:
        lines.append(f"getent passwd {q(user)} >/dev/null && echo 'user {user} 1' "
                     f"|| echo 'user {user} 0'")
    for group in groups:
        lines.append(f"getent group {q(group)} >/dev/null && echo 'group {group} 1' "
                     f"|| echo 'group {group} 0'")
    if units:
        lines.append(
            "systemctl show -p Id,LoadState,ActiveState,UnitFileState "
            + " ".join(q(u) for u in units)
            + " | sed 's/^/unit /'"
        )
    return "\n".join(lines)


def _from_fingerprint(path: str, text: str) -> RemoteFile:
    """A key file as the tool's `key fingerprint --json` describes it. No answer (a broken
    tool) reads as a file that matches nothing: the deploy acts, and the tool then says why."""
    try:
        data = json.loads(text)
    except ValueError:
        return RemoteFile(path, True, kind="unknown", links=0)
    if not isinstance(data, dict) or not data.get("exists"):
        return RemoteFile(path, exists=False)
    kind = ("symbolic link" if data.get("is_symlink")
            else "regular file" if data.get("is_regular") else "not a regular file")
    mode = data.get("mode")
    links = data.get("links")
    return RemoteFile(
        path, True, kind=kind, owner=str(data.get("owner") or data.get("uid")),
        group=str(data.get("group") or data.get("gid")),
        mode=int(mode, 8) if isinstance(mode, str) and mode.isdigit() else 0,
        sha256=data.get("sha256") or None, links=links if isinstance(links, int) else 1,
    )


def parse_survey(lines: list[str]) -> HostState:
    state = HostState()
    unit: dict[str, str] = {}

    def flush_unit() -> None:
        if "Id" in unit:
            state.units[unit["Id"]] = UnitState(
                unit["Id"],
                load=unit.get("LoadState", ""),
                active=unit.get("ActiveState", ""),
                unit_file=unit.get("UnitFileState", ""),
            )
        unit.clear()

    for line in lines:
        if line.startswith("unit "):
            key, _, value = line[5:].partition("=")
            if key == "Id" and "Id" in unit:
                flush_unit()
            unit[key] = value
        elif line.startswith("file|"):
            parts = line.split("|")
            path, exists = parts[1], parts[2] == "1"
            if not exists or len(parts) < 8:
                state.files[path] = RemoteFile(path, exists=False)
                continue
            owner, group, mode, kind, sha = parts[3:8]
            links = parts[8] if len(parts) > 8 else "1"
            state.files[path] = RemoteFile(
                path, True, kind=kind, owner=owner, group=group, mode=int(mode, 8),
                sha256=sha or None, links=int(links) if links.isdigit() else 0,
            )
        elif line.startswith("keyjson|"):
            _, path, text = line.split("|", 2)
            state.files[path] = _from_fingerprint(path, text)
        elif line.startswith(("user ", "group ")):
            tag, name, flag = line.split()
            (state.users if tag == "user" else state.groups)[name] = flag == "1"
        elif line.startswith("python "):
            state.python = line[7:].strip()
        elif line.startswith("pythons"):
            state.pythons = line[len("pythons"):].split()
        elif line.startswith("os "):
            state.os_ids = line[3:].split()
        elif line.startswith("slurm "):
            state.slurm_version = line[6:].strip()
        elif line.startswith("machine "):
            state.machine = line[8:].strip()
        elif line.startswith("jwtplugin "):
            state.jwt_plugin = line[10:].strip()
        elif line.startswith("tool "):
            state.tool_digest = line[5:].strip()
        elif line.startswith("toolversion "):
            state.tool_version = line[12:].strip()
        elif line.startswith("uid ") and line[4:].strip().isdigit():
            state.uid = int(line[4:])
    flush_unit()
    return state
