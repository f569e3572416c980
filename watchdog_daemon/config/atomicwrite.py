"""Apply a computed change to a configuration file: all or nothing, owner and mode kept.

Shared by the slurm.conf / slurmdbd.conf and agent.ini mergers. The merge itself is a pure
function of the file's text; this module reads the file, calls it, and when the text changed
replaces the file atomically:

* temp file in the same directory (so the rename stays on one filesystem), created with O_EXCL
  and mode 0600 so it is never readable by others while it holds e.g. slurmdbd.conf's StoragePass;
* the original's owner, group and mode are copied before the rename (never widened, never
  narrowed), plus its SELinux label and POSIX ACL when present;
* fsync of the file, rename over the original, fsync of the directory;
* any failure removes the temp file and leaves the original untouched.

Files are read and written as bytes decoded with `surrogateescape`, so a file that is not valid
UTF-8 (an old Latin-1 comment) and every line ending (CRLF too) round-trip byte for byte.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from watchdog_daemon.exitcodes import ExitCode

ENCODING = "utf-8"
ERRORS = "surrogateescape"

# Extended attributes that carry access rules: losing them on rename would change who can read
# the file (ACL) or make SELinux deny the daemon (label).
_COPIED_XATTRS = ("security.selinux", "system.posix_acl_access")


class ChangeError(Exception):
    """A file could not be changed. `message` says what is wrong, `hint` how to fix it.

    Never put file contents in these strings: slurmdbd.conf holds the database password.
    """

    reason = "change_refused"
    exit_code: int = ExitCode.CHANGE_REFUSED

    def __init__(self, message: str, hint: str = "", *, file: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.file = file

    def to_dict(self) -> dict[str, object]:
        # `error` is the exit code's reason as README.md documents it (`change_refused`...),
        # `detail` the finer kind of failure (`parse_error`, `conflict`...).
        return {
            "error": ExitCode(self.exit_code).name.lower(),
            "detail": self.reason,
            "message": self.message,
            "hint": self.hint,
            "exit_code": int(self.exit_code),
            "file": self.file,
        }


class FileMissingError(ChangeError):
    reason = "file_missing"
    exit_code = ExitCode.CONFIG_INVALID


class FileUnreadableError(ChangeError):
    reason = "file_unreadable"
    exit_code = ExitCode.CONFIG_INVALID


class WriteError(ChangeError):
    reason = "write_failed"
    exit_code = ExitCode.CHANGE_REFUSED


@dataclass
class MergeResult:
    """What a merge did. `before`/`after` hold only the lines the merge manages (for display)."""

    text: str
    changed: bool
    before: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    file: str | None = None

    def to_dict(self) -> dict[str, object]:
        # `text` is deliberately absent: it may hold secrets (StoragePass).
        return {
            "file": self.file,
            "changed": self.changed,
            "before": list(self.before),
            "after": list(self.after),
            "warnings": list(self.warnings),
        }


def decode(data: bytes) -> str:
    return data.decode(ENCODING, ERRORS)


def encode(text: str) -> bytes:
    return text.encode(ENCODING, ERRORS)


def read_text(path: str) -> tuple[str, os.stat_result]:
    """Read `path` exactly (no newline translation); return its text and stat."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            data = fh.read()
    except FileNotFoundError as exc:
        raise FileMissingError(f"{path} does not exist", file=path) from exc
    except IsADirectoryError as exc:
        raise FileUnreadableError(f"{path} is a directory, not a file", file=path) from exc
    except PermissionError as exc:
        raise FileUnreadableError(
            f"{path} cannot be read: permission denied", "run the command as root", file=path
        ) from exc
    if not stat.S_ISREG(st.st_mode):
        raise FileUnreadableError(f"{path} is not a regular file", file=path)
    return decode(data), st


def _copy_xattrs(src_path: str, dst_fd: int) -> list[str]:
    warnings: list[str] = []
    if not hasattr(os, "getxattr"):
        return warnings
    for name in _COPIED_XATTRS:
        try:
            value = os.getxattr(src_path, name)
        except OSError:
            continue  # absent or unsupported here: nothing to keep
        try:
            os.setxattr(dst_fd, name, value)
        except OSError as exc:
            if name == "system.posix_acl_access":
                # Losing an ACL changes who may read the file: do not go on silently.
                raise WriteError(
                    f"cannot copy the ACL of {src_path}: {exc.strerror}",
                    "run as root, or remove the ACL and grant access through owner/group",
                    file=src_path,
                ) from exc
            warnings.append(f"could not copy {name} of {src_path}: {exc.strerror}")
    return warnings


def _same_file_state(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_ino, a.st_dev, a.st_size, a.st_mtime_ns) == (
        b.st_ino,
        b.st_dev,
        b.st_size,
        b.st_mtime_ns,
    )


def write_text_atomic(path: str, text: str, *, expect: os.stat_result | None = None) -> list[str]:
    """Replace `path` by `text` atomically, keeping owner, group, mode (and label/ACL).

    `expect` is the stat taken when the file was read: if the file changed since, nothing is
    written (someone else edited it; merging again is the safe answer). Returns warnings.
    """
    # Replace the file a symlink points to, not the symlink (it may be managed elsewhere).
    real = os.path.realpath(path)
    directory = os.path.dirname(real) or "."
    try:
        st = os.stat(real)
    except OSError as exc:
        raise WriteError(f"cannot stat {path}: {exc.strerror}", file=path) from exc
    if expect is not None and not _same_file_state(st, expect):
        raise WriteError(
            f"{path} changed while it was being merged; nothing was written",
            "run the command again",
            file=path,
        )
    # The leading dot and the suffix keep the temp file out of `Include *.conf` globs.
    tmp = os.path.join(
        directory, f".{os.path.basename(real)}.slurmrestd-access-{secrets.token_hex(6)}.tmp"
    )
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_NOFOLLOW", 0)
    warnings: list[str] = []
    created = False
    try:
        fd = os.open(tmp, flags, 0o600)
        created = True
        try:
            data = encode(text)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
                os.fchown(fd, st.st_uid, st.st_gid)
            # After chown: chown may clear set-id bits, chmod restores the exact mode.
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
            warnings.extend(_copy_xattrs(real, fd))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, real)
        created = False
        _fsync_dir(directory)
    except ChangeError:
        raise
    except OSError as exc:
        raise WriteError(
            f"cannot write {path}: {exc.strerror or exc}; the file was left untouched",
            "check free space and permissions on the directory, and run as root",
            file=path,
        ) from exc
    finally:
        if created:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return warnings


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def apply_change(path: str, merge: Callable[[str], MergeResult], *, dry_run: bool) -> MergeResult:
    """Read `path`, run the pure `merge` on its text, write the result when it changed."""
    text, st = read_text(path)
    try:
        result = merge(text)
    except ChangeError as exc:
        if exc.file is None:
            exc.file = path
        raise
    result.file = path
    if result.changed and not dry_run:
        result.warnings.extend(write_text_atomic(path, result.text, expect=st))
    return result
