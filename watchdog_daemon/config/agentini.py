"""Merge the `[slurmrestd]` settings of this mode into the Slurm-web agent's agent.ini.

Pure `merge_agent_ini` plus `apply_agent_ini` for the file I/O. The agent reads agent.ini with
configparser (extended interpolation) through its settings loader, so this module follows them
(not a looser "ini" idea), and refuses to write a file the agent would refuse to start with
(`agentconf.agent_ini_problems`: unknown sections or keys, `[DEFAULT]` keys, `$`, bad types):

* `key = value` or `key: value`, split at the first `=` or `:`; keys are case-insensitive
  (lower-cased), section names are case-sensitive;
* whole-line comments start with `#` or `;` (after optional indentation); there are no inline
  comments (`uri = x # y` has the value `x # y`);
* a line indented deeper than its option continues that option's value;
* strict mode: a section or an option given twice, a setting before any section or a line that
  is none of these is an error that stops the agent, so it is refused here too.

Only the lines of the managed keys are rewritten (value only: the admin's key spelling and
`key = value` / `key=value` style stay); every other section, key, comment and blank line is
kept byte for byte, line endings included. Missing keys are added after the last option of
`[slurmrestd]`, a missing section at the end of the file. The deprecated `socket` key is turned
into `uri` in place (or removed when `uri` is already there), with a warning.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from watchdog_daemon.config.agentconf import agent_ini_problems, option_lines
from watchdog_daemon.config.atomicwrite import (
    ChangeError,
    MergeResult,
    apply_change,
)
from watchdog_daemon.exitcodes import ExitCode

if TYPE_CHECKING:
    from watchdog_daemon.config.slurmweb import AgentRelease

SECTION = "slurmrestd"
MANAGED = ("uri", "auth", "jwt_mode", "jwt_key", "jwt_user", "jwt_lifespan")
DEPRECATED = "socket"
DEFAULT_SECTION = "DEFAULT"
MISSING_CLUSTER_HINT = "add `[service]\ncluster = <name>`"

_SECTION_RE = re.compile(r"\[(?P<header>.+)\]")  # configparser.SECTCRE
_OPTION_RE = re.compile(r"(?P<option>.*?)\s*(?P<vi>=|:)\s*(?P<value>.*)$")  # OPTCRE
_LINE_RE = re.compile(r"[^\n]*\n|[^\n]+\Z")


class ConfigError(ChangeError):
    """agent.ini is incomplete (CONFIG_INVALID) or cannot be parsed (IniParseError)."""

    reason = "config_invalid"
    exit_code = ExitCode.CONFIG_INVALID


class AgentIniMissingError(ConfigError):
    reason = "file_missing"


class IniParseError(ConfigError):
    # exitcodes.py: a file that cannot be merged safely (parse error) is CHANGE_REFUSED.
    reason = "parse_error"
    exit_code = ExitCode.CHANGE_REFUSED


@dataclass
class _Line:
    content: str
    eol: str


@dataclass
class _Option:
    key: str  # lower-cased, as configparser sees it
    first: int
    last: int  # last continuation line
    offset: int  # indentation of the line (match offsets are relative to it)
    match: re.Match[str]

    @property
    def value(self) -> str:
        return self.match.group("value").strip()


@dataclass
class _Section:
    name: str
    header: int
    options: dict[str, _Option] = field(default_factory=dict)


def _split_lines(text: str) -> list[_Line]:
    out = []
    for raw in _LINE_RE.findall(text):
        if raw.endswith("\r\n"):
            out.append(_Line(raw[:-2], "\r\n"))
        elif raw.endswith("\n"):
            out.append(_Line(raw[:-1], "\n"))
        else:
            out.append(_Line(raw, ""))
    return out


def _parse(lines: list[_Line]) -> dict[str, _Section]:
    sections: dict[str, _Section] = {}
    current: _Section | None = None
    option: _Option | None = None
    option_indent = 0
    for n, line in enumerate(lines):
        lineno = n + 1
        stripped = line.content.strip()
        if not stripped:
            continue  # a blank line does not end a multi-line value in configparser
        if stripped.startswith(("#", ";")):
            continue  # configparser: a comment line does not end a multi-line value either
        indent = len(line.content) - len(line.content.lstrip())
        if option is not None and indent > option_indent:
            option.last = n
            continue
        option = None
        header = _SECTION_RE.match(stripped)
        if header:
            name = header.group("header")
            if name == DEFAULT_SECTION and name in sections:
                current = sections[name]  # configparser allows [DEFAULT] again, same options
                continue
            if name in sections:
                raise IniParseError(
                    f"line {lineno}: section [{name}] appears twice (the agent refuses this)",
                    f"merge the two [{name}] sections into one",
                )
            current = sections[name] = _Section(name, n)
            continue
        if current is None:
            raise IniParseError(
                f"line {lineno}: setting before any [section]",
                "put it under a section header such as [service] or remove it",
            )
        m = _OPTION_RE.match(stripped)
        key = m.group("option").strip().lower() if m else ""
        if not m or not key:
            raise IniParseError(
                f"line {lineno}: not a `key = value` line, a [section] or a comment",
                "fix the line or comment it out with `#`",
            )
        if key in current.options:
            raise IniParseError(
                f"line {lineno}: `{key}` is set twice in [{current.name}]"
                f" (first on line {current.options[key].first + 1}; the agent refuses this)",
                f"keep one `{key}` line in [{current.name}]",
            )
        option = current.options[key] = _Option(key, n, n, indent, m)
        option_indent = indent
    return sections


def _check_value(name: str, value: str) -> None:
    if not value or "\n" in value or "\r" in value or value != value.strip():
        raise ConfigError(f"invalid {name}: {value!r}", f"give a non-empty {name} on one line")
    if "$" in value:
        # The agent reads agent.ini with extended interpolation: `$` starts a reference.
        raise ConfigError(f"invalid {name}: '$' is not allowed (the agent would read it as an "
                          "interpolation)", f"choose a {name} without '$'")


def _validate(uri: str, jwt_key: str, jwt_user: str | None, jwt_lifespan: int | None) -> None:
    _check_value("uri", uri)
    if not re.match(r"(unix|https?)://", uri):
        raise ConfigError(
            f"invalid uri {uri!r}: expected unix:///path/to.socket or http(s)://host:port",
            "for the unix socket mode use unix:///run/slurmrestd/slurmrestd.socket",
        )
    _check_value("jwt_key", jwt_key)
    if not jwt_key.startswith("/"):
        raise ConfigError(
            f"invalid jwt_key {jwt_key!r}: not an absolute path",
            "use e.g. /var/lib/slurm-web/slurmrestd.key",
        )
    if jwt_user is not None:
        _check_value("jwt_user", jwt_user)
        if any(ch.isspace() for ch in jwt_user):
            raise ConfigError(f"invalid jwt_user {jwt_user!r}", "give a user name")
    if jwt_lifespan is not None and (isinstance(jwt_lifespan, bool) or int(jwt_lifespan) <= 0):
        raise ConfigError(
            f"invalid jwt_lifespan {jwt_lifespan!r}", "give a positive number of seconds"
        )


def _check_cluster(sections: dict[str, _Section]) -> None:
    service = sections.get("service")
    opt = service.options.get("cluster") if service else None
    if service is not None and opt is None and DEFAULT_SECTION in sections:
        # configparser's fallback, which only applies when [service] itself exists.
        opt = sections[DEFAULT_SECTION].options.get("cluster")
    if opt is None or not opt.value:
        what = "is empty" if opt is not None else "is missing"
        raise ConfigError(
            f"[service] cluster {what} in agent.ini: the agent needs the cluster name",
            MISSING_CLUSTER_HINT,
        )


def _style(section: _Section | None) -> str:
    """The admin's delimiter style (` = `, `=`, `: ` ...) taken from the section's first key."""
    if section and section.options:
        first = next(iter(section.options.values()))
        m = first.match
        return m.string[m.end("option") : m.start("value")]
    return " = "


def merge_agent_ini(
    text: str,
    *,
    uri: str,
    jwt_key: str,
    jwt_user: str | None = None,
    jwt_lifespan: int | None = None,
    release: AgentRelease | None = None,
) -> MergeResult:
    """Set uri, auth=jwt, jwt_mode=auto, jwt_key (and jwt_user/jwt_lifespan when given).

    Refused (IniParseError, naming the lines) when the agent of `release` (6.0 for None) would
    not start with the result. Every key written is one each release defines (MANAGED).
    """
    result = merge_agent_ini_unchecked(text, uri=uri, jwt_key=jwt_key, jwt_user=jwt_user,
                                       jwt_lifespan=jwt_lifespan)
    _refuse_what_the_agent_refuses(text, result.text, release)
    return result


def merge_agent_ini_unchecked(
    text: str,
    *,
    uri: str,
    jwt_key: str,
    jwt_user: str | None = None,
    jwt_lifespan: int | None = None,
) -> MergeResult:
    """The merge alone, without asking whether the agent starts with the result (tests)."""
    _validate(uri, jwt_key, jwt_user, jwt_lifespan)
    lines = _split_lines(text)
    sections = _parse(lines)
    _check_cluster(sections)

    wanted: dict[str, str] = {"uri": uri, "auth": "jwt", "jwt_mode": "auto", "jwt_key": jwt_key}
    if jwt_user is not None:
        wanted["jwt_user"] = jwt_user
    if jwt_lifespan is not None:
        wanted["jwt_lifespan"] = str(int(jwt_lifespan))

    section = sections.get(SECTION)
    warnings: list[str] = []
    replace: dict[int, str] = {}
    delete: set[int] = set()
    before: list[str] = []
    missing: list[str] = []

    if section is not None:
        managed = (*MANAGED, DEPRECATED)
        before = [
            lines[o.first].content
            for o in sorted(section.options.values(), key=lambda o: o.first)
            if o.key in managed
        ]
        socket = section.options.get(DEPRECATED)
        for key, value in wanted.items():
            opt = section.options.get(key)
            if opt is None and key == "uri" and socket is not None:
                replace[socket.first] = _rewrite(lines[socket.first].content, socket, value, "uri")
                delete.update(range(socket.first + 1, socket.last + 1))
                warnings.append(
                    f"replaced the deprecated `socket` key (line {socket.first + 1}) by `uri`"
                )
                socket = None
                continue
            if opt is None:
                missing.append(key)
            elif opt.value != value or opt.last != opt.first:
                replace[opt.first] = _rewrite(lines[opt.first].content, opt, value)
                delete.update(range(opt.first + 1, opt.last + 1))
        if socket is not None:
            delete.update(range(socket.first, socket.last + 1))
            warnings.append(
                f"removed the deprecated `socket` key (line {socket.first + 1}): `uri` replaces it"
            )
        if "jwt_token" in section.options:
            warnings.append(
                "[slurmrestd] jwt_token is ignored with jwt_mode = auto; it is a secret:"
                " consider removing it"
            )
    else:
        missing = list(wanted)

    new_lines = _assemble(lines, section, replace, delete, missing, wanted, _style(section))
    new_text = "".join(line.content + line.eol for line in new_lines)
    changed = new_text != text
    after = before
    if changed:
        after = _managed_lines(new_text)
    return MergeResult(new_text, changed, before, after, warnings)


def _refuse_what_the_agent_refuses(text: str, new_text: str,
                                   release: AgentRelease | None = None) -> None:
    """The merged file must be one the agent starts with; else nothing is written.

    Checked on the result (a `[DEFAULT]` key that was harmless may spill into the
    `[slurmrestd]` section the merge adds), located on the administrator's own lines.
    """
    problems = agent_ini_problems(new_text, release=release)
    if not problems:
        return
    original = option_lines(text)
    located = []
    for problem in problems:
        line = None
        if problem.section is not None:
            origin = "DEFAULT" if problem.spilled else problem.section
            line = original.get((origin, problem.key or ""))
        where = f"line {line}: " if line else ""
        located.append(f"{where}{problem.detail} ({problem.hint})")
    agent = release.name if release is not None else "the Slurm-web agent"
    raise IniParseError(
        f"{agent} would refuse to start with this agent.ini: " + "; ".join(located),
        "fix the line(s) named; nothing was changed",
    )


def _rewrite(content: str, opt: _Option, value: str, new_key: str | None = None) -> str:
    m = opt.match
    base = opt.offset
    end = base + m.start("value") + len(m.group("value").rstrip())
    head = content[: base + m.start("value")]
    if new_key is not None:
        head = (
            content[: base + m.start("option")]
            + new_key
            + content[base + m.end("option") : base + m.start("value")]
        )
    return head + value + content[end:]


def _assemble(
    lines: list[_Line],
    section: _Section | None,
    replace: dict[int, str],
    delete: set[int],
    missing: list[str],
    wanted: dict[str, str],
    style: str,
) -> list[_Line]:
    eol = (
        "\r\n"
        if sum(ln.eol == "\r\n" for ln in lines) > sum(ln.eol == "\n" for ln in lines)
        else "\n"
    )
    added = [f"{key}{style}{wanted[key]}" for key in missing]
    insert_after: int | None = None
    if section is not None and added:
        # The last surviving line of each option (a rewritten option loses its continuations).
        kept = [
            max(n for n in range(o.first, o.last + 1) if n not in delete)
            for o in section.options.values()
            if o.first not in delete
        ]
        insert_after = max(kept) if kept else section.header

    out: list[_Line] = []
    for n, line in enumerate(lines):
        if n in delete:
            continue
        content = replace.get(n, line.content)
        if n == insert_after:
            out.append(_Line(content, line.eol or eol))
            for i, new in enumerate(added):
                out.append(_Line(new, line.eol if i == len(added) - 1 else eol))
        else:
            out.append(_Line(content, line.eol))
    if section is None:
        if out and not out[-1].eol:
            out[-1] = _Line(out[-1].content, eol)
        if out and out[-1].content.strip():
            out.append(_Line("", eol))
        out.append(_Line(f"[{SECTION}]", eol))
        out.extend(_Line(new, eol) for new in added)
    return out


def _managed_lines(text: str) -> list[str]:
    lines = _split_lines(text)
    section = _parse(lines).get(SECTION)
    if section is None:
        return []
    opts = sorted(section.options.values(), key=lambda o: o.first)
    return [lines[o.first].content for o in opts if o.key in (*MANAGED, DEPRECATED)]


def apply_agent_ini(
    path: str,
    *,
    uri: str,
    jwt_key: str,
    jwt_user: str | None = None,
    jwt_lifespan: int | None = None,
    dry_run: bool,
    release: AgentRelease | None = None,
) -> MergeResult:
    """Merge into the agent.ini at `path`; write it only when it changes (owner/mode kept)."""
    if not os.path.exists(path):
        # Creating it would need the cluster name and would hide a missing Slurm-web install.
        raise AgentIniMissingError(
            f"{path} does not exist",
            "install Slurm-web's agent package (it ships agent.ini), or create the file with"
            " `[service]\ncluster = <name>`",
            file=path,
        )
    return apply_change(
        path,
        lambda text: merge_agent_ini(
            text, uri=uri, jwt_key=jwt_key, jwt_user=jwt_user, jwt_lifespan=jwt_lifespan,
            release=release,
        ),
        dry_run=dry_run,
    )
