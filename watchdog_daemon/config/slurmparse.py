"""slurm.conf and slurmdbd.conf read as Slurm reads them: AuthAlt* settings and Include lines.

A pure function of the text, so it can be tested exhaustively: config/authalt.py merges what
it finds, config/slurmconf.py reads the files.

The parsing mirrors Slurm's own reader, `src/common/parse_config.c` (SchedMD/slurm):

* a `#` not preceded by an odd number of backslashes starts a comment, even inside quotes
  (`_strip_comments`); a line ending in an odd number of backslashes continues on the next one
  (`_strip_continuation`); other backslashes escape the next character (`_strip_escapes`);
* a setting is `Key=Value` matched by `keyvalue_pattern`: optional whitespace, a key of
  `[A-Za-z0-9_.]`, optional whitespace, an optional operator (`+ - * /`), `=`, optional whitespace,
  then either `"anything but quotes"` or a run of non-whitespace; keys are case-insensitive;
* a string setting such as AuthAltTypes takes exactly one pair per line: text after it is a
  "Parse error" that stops the daemon; a key given twice is logged ("specified more than once,
  latest value used") and the last value wins (`_handle_common`);
* `Include FILE` (the word at the start of the line, any case, whitespace, one file name) reads
  FILE inline; `%c` stands for the lower-cased ClusterName (`_parse_for_format`).

Measured with Slurm 24.11.5 (Debian 13, `scontrol`/`slurmctld -D` on test files):

* `Key = value`, tabs, `Key= value`, `""`, CRLF and a quoted value before a comment are
  accepted; `Key=`, `Key` alone, text after a string setting (`AuthAltTypes=auth/jwt extra`), an
  indented `Include` and `Include a b` are "Parse error" and fatal;
* `AuthAltParameters="jwt_key=/x` (unbalanced quote) is accepted with the quote kept in the
  value: refused here all the same, it cannot be what the admin meant;
* a duplicate logs "AuthAltTypes 1 specified more than once, latest value used";
* a relative Include name is resolved against the directory of the *top* file (slurm.conf),
  also inside an included file;
* `Include dir/*.conf` stops the daemon ("Slurm does not support glob parsing ... skipped
  over", then fatal), and `[ab]` is taken literally. Files matching a `*` pattern are still
  checked here (a later Slurm may expand it; checking more is the safe side), with a warning.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from watchdog_daemon.config.atomicwrite import ChangeError
from watchdog_daemon.exitcodes import ExitCode

TYPES_KEY = "AuthAltTypes"
PARAMS_KEY = "AuthAltParameters"
JWT_TYPE = "auth/jwt"
MAX_INCLUDE_DEPTH = 16

_SPACE = " \t\r\n\v\f"
# Slurm's keyvalue_pattern, with its trailing `([[:space:]]|$)` as a look-ahead so that the
# match ends where Slurm's "remaining" pointer points (the end of the value).
_KV_RE = re.compile(
    r"[ \t\r\n\v\f]*([A-Za-z0-9_.]+)[ \t\r\n\v\f]*([-*+/]?)=[ \t\r\n\v\f]*"
    r"(\"([^\"]*)\"|([^ \t\r\n\v\f]+))(?=[ \t\r\n\v\f]|\Z)"
)
_LINE_RE = re.compile(r"[^\n]*\n|[^\n]+\Z")
_NAME_RE = re.compile(r"[ \t\r\n\v\f]*([A-Za-z0-9_.]+)")
_GLOB_CHARS = re.compile(r"\*")  # Slurm only looks at `*` (measured: `[ab]` is literal)


class ConfigParseError(ChangeError):
    reason = "parse_error"
    exit_code = ExitCode.CHANGE_REFUSED


# --------------------------------------------------------------------------- line model


@dataclass
class _Physical:
    content: str  # without the line ending
    eol: str  # "\n", "\r\n" or "" (last line without newline)


@dataclass
class _Setting:
    """One `AuthAlt*=value` logical line."""

    key: str  # as the admin spelled it
    value: str  # after Slurm's escape handling, quotes removed
    quoted: bool
    first: int  # index of its first physical line
    last: int  # index of its last physical line (continuations)
    value_span: tuple[int, int] | None  # where the raw value sits in the first physical line
    has_comment: bool
    file: str
    lineno: int


@dataclass
class _Include:
    pattern: str  # absolute, %c substituted when possible
    lineno: int
    file: str
    unresolved: str | None = None  # why the pattern could not be resolved


@dataclass
class _Parsed:
    lines: list[_Physical]
    settings: dict[str, list[_Setting]] = field(default_factory=dict)  # lower key -> lines
    includes: list[_Include] = field(default_factory=list)  # in file order
    # Every other Key=Value, in file order: (line number, lower key, value).
    others: list[tuple[int, str, str]] = field(default_factory=list)


def _split_lines(text: str) -> list[_Physical]:
    out = []
    for raw in _LINE_RE.findall(text):
        if raw.endswith("\r\n"):
            out.append(_Physical(raw[:-2], "\r\n"))
        elif raw.endswith("\n"):
            out.append(_Physical(raw[:-1], "\n"))
        else:
            out.append(_Physical(raw, ""))
    return out


def _comment_start(line: str) -> int:
    """Index of the `#` starting a comment (Slurm's _strip_comments), or len(line)."""
    backslashes = 0
    for i, ch in enumerate(line):
        if ch == "#" and backslashes % 2 == 0:
            return i
        backslashes = backslashes + 1 if ch == "\\" else 0
    return len(line)


def _continuation_cut(code: str) -> int | None:
    """Where a continued line is cut (Slurm's _strip_continuation), or None if not continued."""
    end = len(code.rstrip(_SPACE))
    count = 0
    while count < end and code[end - 1 - count] == "\\":
        count += 1
    if count % 2 == 1:
        return end - 1
    return None


def _strip_escapes(code: str) -> str:
    out = []
    i = 0
    while i < len(code):
        if code[i] == "\\":
            i += 1
            if i < len(code):
                out.append(code[i])
        else:
            out.append(code[i])
        i += 1
    return "".join(out)


def _key_name(code: str) -> str:
    m = _NAME_RE.match(code)
    return m.group(1) if m else ""


def _parse(
    text: str, file: str, *, top: str | None = None, cluster_name: str | None = None
) -> _Parsed:
    """Parse like Slurm; collect AuthAlt* settings and Include directives.

    `top` is the top-level file (slurm.conf): Slurm resolves relative Include names against its
    directory, even inside included files.
    """
    lines = _split_lines(text)
    parsed = _Parsed(lines)
    i = 0
    while i < len(lines):
        first = i
        pieces = []
        raw_has_backslash = False
        has_comment = False
        while True:
            content = lines[i].content
            cut = _comment_start(content)
            has_comment = has_comment or cut < len(content)
            code = content[:cut]
            raw_has_backslash = raw_has_backslash or "\\" in code
            cont = _continuation_cut(code)
            if cont is None or i + 1 >= len(lines):
                pieces.append(code if cont is None else code[:cont])
                break
            pieces.append(code[:cont])
            i += 1
        last = i
        i += 1
        joined = _strip_escapes("".join(pieces))
        if not joined.strip(_SPACE):
            continue
        lineno = first + 1
        cluster_name = _parse_logical(
            parsed,
            joined,
            file=file,
            top=top or file,
            lineno=lineno,
            first=first,
            last=last,
            simple=(first == last and not raw_has_backslash),
            has_comment=has_comment,
            cluster_name=cluster_name,
        )
    return parsed


def _parse_logical(
    parsed: _Parsed,
    code: str,
    *,
    file: str,
    top: str,
    lineno: int,
    first: int,
    last: int,
    simple: bool,
    has_comment: bool,
    cluster_name: str | None,
) -> str | None:
    stripped = code.lstrip(_SPACE)
    word = stripped[:7]
    if word.lower() == "include" and len(stripped) > 7 and stripped[7] in _SPACE:
        if stripped != code:
            raise ConfigParseError(
                f"{file} line {lineno}: indented Include (Slurm rejects it: Parse error)",
                "start the Include line at the beginning of the line",
            )
        rest = stripped[7:].lstrip(_SPACE)
        name_end = next((k for k, ch in enumerate(rest) if ch in _SPACE), len(rest))
        name, leftover = rest[:name_end], rest[name_end:]
        if not name:
            raise ConfigParseError(
                f"{file} line {lineno}: Include without a file name",
                "write `Include /path/to/file` or remove the line",
            )
        if leftover.strip(_SPACE):
            raise ConfigParseError(
                f"{file} line {lineno}: text after the Include file name (Slurm rejects it)",
                "an Include line takes exactly one file name",
            )
        parsed.includes.append(_resolve_include(name, file, top, lineno, cluster_name))
        return cluster_name

    matches = []
    pos = 0
    while True:
        m = _KV_RE.match(code, pos)
        if not m:
            break
        matches.append(m)
        pos = m.end()
    name = _key_name(code)
    lname = name.lower()
    managed = lname in (TYPES_KEY.lower(), PARAMS_KEY.lower())
    if not matches:
        if managed:
            raise ConfigParseError(
                f"{file} line {lineno}: {name} has no `=value` (Slurm cannot parse it)",
                f"write it as `{TYPES_KEY}={JWT_TYPE}` / `{PARAMS_KEY}=jwt_key=PATH`"
                " or comment it out with `#`",
            )
        what = f"`{name}`: no Key=Value pair" if name else "no Key=Value pair"
        raise ConfigParseError(
            f"{file} line {lineno}: Slurm cannot parse this line ({what})",
            "fix or comment out that line (Slurm would refuse to start with it), then run again",
        )
    leftover = code[pos:]
    first_match = matches[0]
    key = first_match.group(1)
    lkey = key.lower()
    if lkey in (TYPES_KEY.lower(), PARAMS_KEY.lower()):
        if len(matches) > 1 or leftover.strip(_SPACE):
            raise ConfigParseError(
                f"{file} line {lineno}: text after the {key} value (Slurm rejects it)",
                f"put {key}=... alone on its line; quote the value if it contains spaces",
            )
        if first_match.group(2):
            raise ConfigParseError(
                f"{file} line {lineno}: {key}{first_match.group(2)}= is not supported",
                f"write a plain `{key}=value`",
            )
        quoted = first_match.group(4) is not None
        value = first_match.group(4) if quoted else first_match.group(5)
        if '"' in value:
            raise ConfigParseError(
                f"{file} line {lineno}: unbalanced quote in the {key} value",
                f'write {key}=value or {key}="value"',
            )
        span = None
        if simple:
            # For a simple line the code is the physical line itself: spans map 1:1.
            span = (first_match.start(3), first_match.end(3))
        parsed.settings.setdefault(lkey, []).append(
            _Setting(key, value, quoted, first, last, span, has_comment, file, lineno)
        )
        return cluster_name
    if leftover.strip(_SPACE):
        raise ConfigParseError(
            f"{file} line {lineno}: Slurm cannot parse the text after the Key=Value pairs"
            f" of this `{key}` line",
            "quote values that contain spaces, or fix that line, then run again",
        )
    for m in matches:
        parsed.others.append(
            (lineno, m.group(1).lower(), m.group(4) if m.group(4) is not None else m.group(5)))
    for m in matches:
        if m.group(1).lower() == "clustername":
            value = m.group(4) if m.group(4) is not None else m.group(5)
            cluster_name = value.lower()
    return cluster_name


def _resolve_include(
    name: str, file: str, top: str, lineno: int, cluster_name: str | None
) -> _Include:
    unresolved = None
    if "%c" in name:
        if cluster_name:
            name = name.replace("%c", cluster_name)
        else:
            unresolved = "it uses %c but no ClusterName is set before it"
    if not name.startswith("/"):
        name = os.path.join(os.path.dirname(top), name)
    return _Include(os.path.normpath(name), lineno, file, unresolved)


def _cluster_name(text: str) -> str | None:
    """Last ClusterName of the main file (used for `%c` in Include names)."""
    found = None
    for line in _split_lines(text):
        code = line.content[: _comment_start(line.content)]
        m = _KV_RE.match(code)
        if m and m.group(1).lower() == "clustername":
            found = (m.group(4) if m.group(4) is not None else m.group(5)).lower()
    return found


def last_value(files: dict[str, str], top: str, key: str) -> str | None:
    """The value Slurm ends up with for `key` (any case), reading `top` and, where its Include
    lines say, the other `files` (path -> text) inline, as Slurm does; the last one wins.

    None when no file sets it. An Include of a file not in `files`, or with a glob or an
    unresolved `%c`, is skipped (Slurm would refuse to start: that is the deploy's to report).
    Raises ConfigParseError where Slurm could not parse a line.
    """
    values = all_values(files, top, key)
    return values[-1] if values else None


def all_values(files: dict[str, str], top: str, key: str) -> list[str]:
    """Every value of `key` in the order Slurm reads them (Include lines followed, as
    `last_value`): for the keys Slurm takes several times, such as `SlurmctldHost`."""
    wanted = key.lower()
    cluster_name = _cluster_name(files[top])
    found: list[str] = []

    def walk(file: str, depth: int) -> None:
        parsed = _parse(files[file], file, top=top, cluster_name=cluster_name)
        events: list[tuple[int, str | _Include]] = [
            (lineno, value) for lineno, k, value in parsed.others if k == wanted]
        events += [(inc.lineno, inc) for inc in parsed.includes]
        for setting in parsed.settings.get(wanted, []):
            events.append((setting.lineno, setting.value))
        for _, event in sorted(events, key=lambda e: e[0]):
            if isinstance(event, str):
                found.append(event)
            elif (depth < MAX_INCLUDE_DEPTH and not event.unresolved
                  and not _GLOB_CHARS.search(event.pattern) and event.pattern in files):
                walk(event.pattern, depth + 1)

    walk(top, 0)
    return found
