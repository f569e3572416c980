"""AuthAlt* merged into the slurm.conf or slurmdbd.conf file itself: the file and every file it
`Include`s read, the merged text written only when it changes (config/atomicwrite.py: all or
nothing, owner and mode kept).

The merge is pure, in config/authalt.py; Slurm's way of reading the text in
config/slurmparse.py.
"""

from __future__ import annotations

import glob as globmod
import os

from watchdog_daemon.config.atomicwrite import (
    FileMissingError,
    MergeResult,
    apply_change,
    read_text,
)
from watchdog_daemon.config.authalt import merge_authalt, validate_jwt_key_path
from watchdog_daemon.config.configless import slurm_conf_to_read
from watchdog_daemon.config.slurmparse import (
    _GLOB_CHARS,
    MAX_INCLUDE_DEPTH,
    ConfigParseError,
    _cluster_name,
    _parse,
    all_values,
    last_value,
)


def collect_includes(path: str, text: str | None = None) -> dict[str, str]:
    """Read every file reachable from `path` (whose text may be given) through Include lines
    (globs expanded).

    Missing files are skipped here (merge_authalt warns about them); a file that exists but
    cannot be read stops the merge, since it may hold a conflicting setting.
    """
    path = os.path.abspath(path)
    found: dict[str, str] = {}
    if text is None:
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


def configured_value(path: str, key: str) -> str | None:
    """The value Slurm's daemons take for `key` from the config file `path`, Include lines
    followed (config/slurmparse.py `last_value`); None when no file sets it.

    Raises FileMissingError, FileUnreadableError or ConfigParseError (all ChangeError).
    """
    top = os.path.abspath(path)
    text, _ = read_text(top)
    return last_value({top: text, **collect_includes(top, text)}, top, key)


def configured_values(path: str, key: str) -> list[str]:
    """Every value of a key Slurm takes several times (`SlurmctldHost`), in Slurm's order."""
    top = os.path.abspath(path)
    text, _ = read_text(top)
    return all_values({top: text, **collect_includes(top, text)}, top, key)


def apply_merge(path: str, jwt_key_path: str, *, dry_run: bool) -> MergeResult:
    """Merge the AuthAlt* settings into the file at `path`; write it only when it changes."""
    validate_jwt_key_path(jwt_key_path)
    abspath = os.path.abspath(path)
    if not os.path.exists(abspath):
        reads = slurm_conf_to_read(path)
        raise FileMissingError(
            f"{path} does not exist",
            f"this host is configless (its Slurm reads {reads}, fetched from the controller): "
            "the AuthAlt lines go into the controller's slurm.conf; do not create this file"
            if reads != path else
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
