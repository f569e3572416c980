"""Merge `AuthAltTypes=auth/jwt` and `AuthAltParameters=jwt_key=PATH` into slurm.conf/slurmdbd.conf.

The merge is a pure function of the file's text (plus the text of the files it `Include`s) so it
can be tested exhaustively; `apply_merge` adds the file I/O.

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

Decisions where the merge has to choose (see tests/unit/test_slurmconf.py):

* AuthAlt* lines keep the admin's key spelling, spacing, quotes, inline comment, position and
  line ending; only the value is rewritten. Other lines are never touched.
* A duplicate AuthAlt* line is removed only when it carries the same value as the one kept (the
  last, which is the one Slurm uses) and no inline comment; otherwise the merge is refused.
* Included files are never edited. A setting in an included file that already holds the wanted
  value is accepted (the main file then needs no copy of it); any other value there, or a value
  that differs from the main file's, is a conflict the admin must resolve by hand.
* Anything Slurm itself could not parse is refused with the line number: the daemons would not
  start with that file anyway, and a file we do not understand is not a file we should edit.
  Error messages name keys and line numbers but never echo values (StoragePass).
"""

from __future__ import annotations

import glob as globmod
import os
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from watchdog_daemon.config.atomicwrite import (
    ChangeError,
    FileMissingError,
    MergeResult,
    apply_change,
    read_text,
)
from watchdog_daemon.exitcodes import ExitCode

TYPES_KEY = "AuthAltTypes"
PARAMS_KEY = "AuthAltParameters"
JWT_TYPE = "auth/jwt"
JWT_KEY_PARAM = "jwt_key"
ADDED_COMMENT = "# Added by slurmrestd-access: JWT for slurmrestd (Slurm-web)"
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
# A jwt_key path ends up unquoted inside a comma list on a `#`-commented line: keep it plain.
_SAFE_PATH_RE = re.compile(r"/[^\s,#\"'\\=]*")


class ConfigParseError(ChangeError):
    reason = "parse_error"
    exit_code = ExitCode.CHANGE_REFUSED


class ConflictError(ChangeError):
    reason = "conflict"
    exit_code = ExitCode.CHANGE_REFUSED


class InvalidArgumentError(ChangeError):
    reason = "invalid_argument"
    exit_code = ExitCode.CONFIG_INVALID


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


# ------------------------------------------------------------------------ value merging


def _items(value: str) -> list[str]:
    return [item for item in value.split(",") if item.strip(_SPACE)]


def merged_types(value: str) -> str:
    items = _items(value)
    if any(item.strip(_SPACE).lower() == JWT_TYPE for item in items):
        return value
    return ",".join([*items, JWT_TYPE])


def merged_params(value: str, jwt_key_path: str) -> str:
    wanted = f"{JWT_KEY_PARAM}={jwt_key_path}"
    items = _items(value)
    keyed = [
        n
        for n, item in enumerate(items)
        if item.split("=", 1)[0].strip(_SPACE).lower() == JWT_KEY_PARAM
    ]
    if len(keyed) == 1 and items[keyed[0]] == wanted:
        return value
    if not keyed:
        return ",".join([*items, wanted])
    items[keyed[0]] = wanted
    return ",".join(item for n, item in enumerate(items) if n not in keyed[1:])


def _normal(lkey: str, value: str) -> tuple[str, ...]:
    """Comparable form of a value (item order kept: Slurm reads them in order)."""
    items = tuple(item.strip(_SPACE) for item in _items(value))
    if lkey == TYPES_KEY.lower():
        return tuple(item.lower() for item in items)
    return tuple(
        f"{item.split('=', 1)[0].lower()}={item.split('=', 1)[1]}" if "=" in item else item.lower()
        for item in items
    )


def _render_value(value: str, quoted: bool) -> str:
    return f'"{value}"' if quoted else value


# ------------------------------------------------------------------------------ merging


def validate_jwt_key_path(jwt_key_path: str) -> None:
    if not _SAFE_PATH_RE.fullmatch(jwt_key_path or ""):
        raise InvalidArgumentError(
            f"unusable jwt_key path {jwt_key_path!r}: it must be absolute and contain no"
            " whitespace, comma, '#', '=', quote or backslash",
            "use a plain absolute path such as /var/spool/slurm/jwt_hs256.key",
        )


def _collect_included(
    parsed: _Parsed,
    included: dict[str, str],
    settings: dict[str, list[_Setting]],
    warnings: list[str],
    stack: tuple[str, ...],
    cluster_name: str | None,
) -> None:
    """Parse the files `parsed` includes (recursively) and gather their AuthAlt* settings."""
    if len(stack) > MAX_INCLUDE_DEPTH:
        raise ConfigParseError(
            f"Include nesting deeper than {MAX_INCLUDE_DEPTH} levels from {stack[0]}"
            " (an Include loop?)",
            "check the Include lines of " + " -> ".join(stack),
        )
    for inc in parsed.includes:
        where = f"{inc.file} line {inc.lineno}"
        if inc.unresolved:
            warnings.append(f"Include at {where} not checked: {inc.unresolved}")
            continue
        if _GLOB_CHARS.search(inc.pattern):
            warnings.append(
                f"Include at {where} uses a `*` pattern: Slurm 24.11 refuses this and does not"
                ' start ("does not support glob parsing"); the matching files were checked'
            )
            names = sorted(p for p in included if PurePosixPath(p).match(inc.pattern))
        else:
            names = [inc.pattern] if inc.pattern in included else []
        if not names:
            warnings.append(f"Include at {where} ({inc.pattern}) matches no readable file")
            continue
        for name in names:
            if name in stack:
                raise ConfigParseError(
                    f"Include loop: {name} includes itself through {where}",
                    "remove the Include line that closes the loop",
                )
            child = _parse(included[name], name, top=stack[0], cluster_name=cluster_name)
            for lkey, found in child.settings.items():
                settings.setdefault(lkey, []).extend(found)
            _collect_included(child, included, settings, warnings, (*stack, name), cluster_name)


def merge_authalt(
    text: str,
    jwt_key_path: str,
    *,
    included: dict[str, str] | None = None,
    path: str = "slurm.conf",
) -> MergeResult:
    """Return `text` with auth/jwt in AuthAltTypes and jwt_key=PATH in AuthAltParameters.

    `path` is the file's own path (relative Include names are resolved against its directory,
    also inside included files, as Slurm does);
    `included` maps the absolute path of every file reachable through Include to its text
    (`collect_includes` builds it). With `included=None` Include lines are not followed.
    """
    validate_jwt_key_path(jwt_key_path)
    parsed = _parse(text, path)
    lines = parsed.lines
    warnings: list[str] = []

    inc_settings: dict[str, list[_Setting]] = {}
    if parsed.includes:
        if included is None:
            warnings.append("Include lines were not followed: included files were not checked")
        else:
            cluster = _cluster_name(text)
            _collect_included(parsed, included, inc_settings, warnings, (path,), cluster)

    wanted = {
        TYPES_KEY.lower(): lambda v: merged_types(v),
        PARAMS_KEY.lower(): lambda v: merged_params(v, jwt_key_path),
    }
    spelled = {TYPES_KEY.lower(): TYPES_KEY, PARAMS_KEY.lower(): PARAMS_KEY}

    replace: dict[int, str] = {}  # physical index -> new content
    delete: set[int] = set()
    missing: list[str] = []
    kept: dict[str, _Setting] = {}
    before_idx: set[int] = set()

    for lkey, merge in wanted.items():
        mine = parsed.settings.get(lkey, [])
        theirs = inc_settings.get(lkey, [])
        for s in mine:
            before_idx.update(range(s.first, s.last + 1))
        keep = _dedupe(mine, lkey, delete, warnings)

        for s in theirs:
            if _normal(lkey, merge(s.value)) != _normal(lkey, s.value):
                raise ConflictError(
                    f"{s.key} in {s.file} line {s.lineno} (an Included file) does not hold"
                    f" the wanted value, and included files are not edited",
                    f"move the {spelled[lkey]} line from {s.file} into {path}, or add"
                    f" {_describe_want(lkey, jwt_key_path)} to it yourself",
                    file=path,
                )
        if keep is not None:
            kept[lkey] = keep
            new_value = merge(keep.value)
            if theirs and {_normal(lkey, s.value) for s in theirs} != {_normal(lkey, new_value)}:
                other = theirs[0]
                raise ConflictError(
                    f"{spelled[lkey]} is set both in {path} line {keep.lineno} and in"
                    f" {other.file} line {other.lineno} with different values (Slurm uses"
                    " whichever it reads last)",
                    f"keep a single {spelled[lkey]} line, in {path}",
                    file=path,
                )
            if theirs:
                warnings.append(
                    f"{spelled[lkey]} is also set in {theirs[0].file} line {theirs[0].lineno}"
                    " (same value)"
                )
            if new_value != keep.value:
                replace[keep.first] = _rewrite(lines[keep.first].content, keep, new_value, path)
        elif theirs:
            if len({_normal(lkey, s.value) for s in theirs}) > 1:
                raise ConflictError(
                    f"{spelled[lkey]} is set in several included files with different values",
                    f"keep a single {spelled[lkey]} line",
                    file=path,
                )
            # Already right in an included file: a copy in the main file would be a duplicate.
        else:
            missing.append(lkey)

    new_lines = _assemble(lines, replace, delete, missing, kept, jwt_key_path)
    new_text = "".join(p.content + p.eol for p in new_lines)
    changed = new_text != text
    before = [lines[n].content for n in sorted(before_idx)]
    after = [p.content for p in new_lines if _is_managed_line(p.content)]
    return MergeResult(new_text, changed, before, after if changed else before, warnings)


def _describe_want(lkey: str, jwt_key_path: str) -> str:
    if lkey == TYPES_KEY.lower():
        return JWT_TYPE
    return f"{JWT_KEY_PARAM}={jwt_key_path}"


def _dedupe(
    mine: list[_Setting], lkey: str, delete: set[int], warnings: list[str]
) -> _Setting | None:
    """Keep the last occurrence (the one Slurm uses); drop identical duplicates, else refuse."""
    if not mine:
        return None
    keep = mine[-1]
    for s in mine[:-1]:
        if _normal(lkey, s.value) != _normal(lkey, keep.value):
            raise ConflictError(
                f"{keep.key} is set on lines {s.lineno} and {keep.lineno} with different values"
                f" (Slurm uses the last one, line {keep.lineno})",
                f"delete or comment out all {keep.key} lines but one, then run again",
            )
        if s.has_comment or s.first != s.last:
            raise ConflictError(
                f"{keep.key} is set twice (lines {s.lineno} and {keep.lineno}); line {s.lineno}"
                " carries a comment or continuation, so it is not removed automatically",
                f"delete one of the two {keep.key} lines, then run again",
            )
        delete.add(s.first)
        warnings.append(
            f"removed duplicate {s.key} line {s.lineno} (same value as line {keep.lineno})"
        )
    return keep


def _rewrite(content: str, s: _Setting, new_value: str, path: str) -> str:
    if s.value_span is None:
        raise ConfigParseError(
            f"{path} line {s.lineno}: {s.key} uses a backslash continuation or escape and"
            " cannot be edited safely",
            f"write {s.key}=... on a single line without backslashes, then run again",
        )
    start, end = s.value_span
    return content[:start] + _render_value(new_value, s.quoted) + content[end:]


def _assemble(
    lines: list[_Physical],
    replace: dict[int, str],
    delete: set[int],
    missing: list[str],
    kept: dict[str, _Setting],
    jwt_key_path: str,
) -> list[_Physical]:
    eol = _dominant_eol(lines)
    new_line = {
        TYPES_KEY.lower(): f"{TYPES_KEY}={JWT_TYPE}",
        PARAMS_KEY.lower(): f"{PARAMS_KEY}={JWT_KEY_PARAM}={jwt_key_path}",
    }
    # A missing key goes right after its sibling when the sibling is in this file.
    after_sibling: dict[int, list[str]] = {}
    at_end: list[str] = []
    for lkey in missing:
        sibling = next((s for k, s in kept.items() if k != lkey), None)
        if sibling is not None:
            after_sibling.setdefault(sibling.last, []).append(new_line[lkey])
        else:
            at_end.append(new_line[lkey])

    out: list[_Physical] = []
    for n, line in enumerate(lines):
        if n in delete:
            continue
        content = replace.get(n, line.content)
        extra = after_sibling.get(n, [])
        if extra and not line.eol:
            out.append(_Physical(content, eol))
        else:
            out.append(_Physical(content, line.eol))
        for i, added in enumerate(extra):
            last = i == len(extra) - 1
            out.append(_Physical(added, line.eol if last else eol))
    if at_end:
        if out and not out[-1].eol:
            out[-1] = _Physical(out[-1].content, eol)
        if out and out[-1].content.strip(_SPACE):
            out.append(_Physical("", eol))
        out.append(_Physical(ADDED_COMMENT, eol))
        out.extend(_Physical(added, eol) for added in at_end)
    return out


def _dominant_eol(lines: list[_Physical]) -> str:
    crlf = sum(1 for p in lines if p.eol == "\r\n")
    lf = sum(1 for p in lines if p.eol == "\n")
    return "\r\n" if crlf > lf else "\n"


def _is_managed_line(content: str) -> bool:
    code = content[: _comment_start(content)]
    return _key_name(code).lower() in (TYPES_KEY.lower(), PARAMS_KEY.lower()) and "=" in code


def _cluster_name(text: str) -> str | None:
    """Last ClusterName of the main file (used for `%c` in Include names)."""
    found = None
    for line in _split_lines(text):
        code = line.content[: _comment_start(line.content)]
        m = _KV_RE.match(code)
        if m and m.group(1).lower() == "clustername":
            found = (m.group(4) if m.group(4) is not None else m.group(5)).lower()
    return found


# ----------------------------------------------------------------------------------- I/O


def collect_includes(path: str) -> dict[str, str]:
    """Read every file reachable from `path` through Include lines (globs expanded).

    Missing files are skipped here (merge_authalt warns about them); a file that exists but
    cannot be read stops the merge, since it may hold a conflicting setting.
    """
    path = os.path.abspath(path)
    found: dict[str, str] = {}
    text, _ = read_text(path)
    todo = [(path, text)]
    depth = 0
    while todo and depth <= MAX_INCLUDE_DEPTH:
        depth += 1
        nxt = []
        for file, body in todo:
            try:
                parsed = _parse(body, file, top=path, cluster_name=_cluster_name(text))
            except ConfigParseError:
                continue  # reported with its line number by merge_authalt
            for inc in parsed.includes:
                if inc.unresolved:
                    continue
                if _GLOB_CHARS.search(inc.pattern):
                    names = sorted(globmod.glob(inc.pattern))
                else:
                    names = [inc.pattern]
                for name in names:
                    name = os.path.normpath(name)
                    if name in found or name == path or not os.path.isfile(name):
                        continue
                    try:
                        found[name], _ = read_text(name)
                    except FileMissingError:
                        continue  # removed meanwhile
                    # An included file that exists but cannot be read may hide a conflicting
                    # setting: FileUnreadableError propagates and the merge is refused.
                    nxt.append((name, found[name]))
        todo = nxt
    return found


def apply_merge(path: str, jwt_key_path: str, *, dry_run: bool) -> MergeResult:
    """Merge the AuthAlt* settings into the file at `path`; write it only when it changes."""
    validate_jwt_key_path(jwt_key_path)
    abspath = os.path.abspath(path)
    if not os.path.exists(abspath):
        raise FileMissingError(
            f"{path} does not exist",
            "check the path: slurm.conf usually is /etc/slurm/slurm.conf",
            file=path,
        )
    included = collect_includes(abspath)
    result = apply_change(
        abspath,
        lambda text: merge_authalt(text, jwt_key_path, included=included, path=abspath),
        dry_run=dry_run,
    )
    result.file = path
    return result
