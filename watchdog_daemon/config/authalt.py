"""Merge `AuthAltTypes=auth/jwt` and `AuthAltParameters=jwt_key=PATH` into slurm.conf/slurmdbd.conf.

The merge is a pure function of the file's text (plus the text of the files it `Include`s) so it
can be tested exhaustively; config/slurmparse.py reads the text as Slurm does, and
`apply_merge` (config/slurmconf.py) adds the file I/O.

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

import re
from pathlib import PurePosixPath

from watchdog_daemon.config.atomicwrite import ChangeError, MergeResult
from watchdog_daemon.config.slurmparse import (
    _GLOB_CHARS,
    _SPACE,
    JWT_TYPE,
    MAX_INCLUDE_DEPTH,
    PARAMS_KEY,
    TYPES_KEY,
    ConfigParseError,
    _cluster_name,
    _comment_start,
    _key_name,
    _parse,
    _Parsed,
    _Physical,
    _Setting,
)
from watchdog_daemon.exitcodes import ExitCode

JWT_KEY_PARAM = "jwt_key"
ADDED_COMMENT = "# Added by slurmrestd-access: JWT for slurmrestd (Slurm-web)"
# A jwt_key path ends up unquoted inside a comma list on a `#`-commented line: keep it plain.
_SAFE_PATH_RE = re.compile(r"/[^\s,#\"'\\=]*")


class ConflictError(ChangeError):
    reason = "conflict"
    exit_code = ExitCode.CHANGE_REFUSED


class InvalidArgumentError(ChangeError):
    reason = "invalid_argument"
    exit_code = ExitCode.CONFIG_INVALID


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
