"""JWT signing key files: what can be wrong with one, reading it, describing it.

Rules that shape this module and keys/keywrite.py, which writes key files (SchedMD/slurm
`src/plugins/auth/jwt/auth_jwt.c`: `create_mmap_buf`, `_check_key_permissions`):
- Slurm maps the key file; a key is only ever replaced by a new file renamed over the old one,
  never rewritten in place.
- The key must never be readable by anyone but its owner (agent copy) or by "other" (Slurm's key,
  where Slurm >= 23.11 is fatal on any other bit). The rule is a parameter: `allow_group`.
- Symlinks are never followed: a planted symlink must not make us read or write another file.
- Messages name paths, modes, owners and fingerprints, never content.
"""

from __future__ import annotations

import errno
import grp
import hashlib
import os
import pwd
import stat
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from watchdog_daemon.exitcodes import ExitCode
from watchdog_daemon.keys.secret import SecretBytes

MIN_KEY_BYTES = 32
# A key is 32..a few hundred bytes; anything this large is the wrong file, not a key.
MAX_KEY_BYTES = 1024 * 1024

# Permission bits refused for the agent copy (owner only) and for Slurm's key (no "other" bit).
FORBIDDEN_OWNER_ONLY = 0o077
FORBIDDEN_SLURM_RULE = 0o007

OPEN_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK


class KeyProblem(Enum):
    MISSING = "missing"
    UNREADABLE = "unreadable"
    EMPTY = "empty"
    TOO_SHORT = "too_short"
    INSECURE = "insecure"
    # Changed while being read (an in-place writer at work): try again later, act on nothing.
    UNSTABLE = "unstable"
    # A user or group named as owner does not exist on this host.
    OWNER_MISSING = "owner_missing"
    # Could not write the key (read-only file system, full disk, missing directory...).
    UNWRITABLE = "unwritable"

    @property
    def exit_code(self) -> ExitCode:
        return _PROBLEM_EXIT_CODES[self]


_PROBLEM_EXIT_CODES: dict[KeyProblem, ExitCode] = {
    KeyProblem.MISSING: ExitCode.KEY_MISSING,
    KeyProblem.UNREADABLE: ExitCode.KEY_UNREADABLE,
    KeyProblem.EMPTY: ExitCode.KEY_EMPTY,
    KeyProblem.TOO_SHORT: ExitCode.KEY_TOO_SHORT,
    KeyProblem.INSECURE: ExitCode.KEY_INSECURE,
    KeyProblem.UNSTABLE: ExitCode.KEY_UNREADABLE,
    KeyProblem.OWNER_MISSING: ExitCode.USER_MISSING,
    # No dedicated code exists: "could not be changed safely, left untouched" is the closest.
    KeyProblem.UNWRITABLE: ExitCode.CHANGE_REFUSED,
}


class KeyFileError(Exception):
    """A key file problem with a message and a hint for the administrator; never the content."""

    def __init__(self, problem: KeyProblem, path: str | os.PathLike[str], message: str,
                 hint: str, detail: str | None = None) -> None:
        self.problem = problem
        self.path = Path(path)
        self.message = message
        self.hint = hint
        # The finer kind, for scripts: `key_symlink`, `key_hard_link`, `key_not_regular`...
        self.detail = detail or self.reason
        super().__init__(f"{message} — {hint}")

    @property
    def exit_code(self) -> ExitCode:
        return self.problem.exit_code

    @property
    def reason(self) -> str:
        """Reason code as used by the check (`key_missing`, `user_missing`...)."""
        if self.problem is KeyProblem.OWNER_MISSING:
            return "user_missing"
        return f"key_{self.problem.value}"


@dataclass(frozen=True)
class FileState:
    """What `ls -l` and `sha256sum` would say about a path, without following symlinks."""

    path: str
    exists: bool
    is_symlink: bool = False
    is_regular: bool = False
    uid: int | None = None
    gid: int | None = None
    owner: str | None = None
    group: str | None = None
    mode: int | None = None  # permission bits only (S_IMODE)
    size: int | None = None
    links: int | None = None  # hard links; a key with more than one is never read
    sha256: str | None = None  # only for a readable regular file of its own (one link)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # Octal text is what administrators compare against ("0400"), ints are not.
        data["mode"] = None if self.mode is None else f"{self.mode:04o}"
        return data


# ---------------------------------------------------------------------------------------------
# Small helpers


def _mode_text(mode: int) -> str:
    return f"{stat.S_IMODE(mode):04o}"


def _forbidden_bits(allow_group: bool) -> int:
    return FORBIDDEN_SLURM_RULE if allow_group else FORBIDDEN_OWNER_ONLY


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFDIR: "a directory",
          stat.S_IFSOCK: "a socket"}


def kind_of(mode: int) -> str:
    """What a file is, in words for a message ("a FIFO", "a symbolic link")."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISREG(mode):
        return "a regular file"
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def check_structure(path: Path, st: os.stat_result, owners: frozenset[int] | None = None
                    ) -> None:
    """What makes a path unfit to be read or changed as root, whatever its mode: not a plain
    file of its own. A symlink or a hard link would make root read (or chown) another file; a
    FIFO or a device would block or stream forever. `owners`: the uids a key may belong to."""
    if stat.S_ISLNK(st.st_mode):
        raise KeyFileError(
            KeyProblem.INSECURE, path, f"key file {path} is a symbolic link",
            f"replace the link with a regular file (the link is never followed): rm {path}",
            detail="key_symlink",
        )
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(
            KeyProblem.INSECURE, path, f"key file {path} is {kind_of(st.st_mode)}, not a "
            "regular file", f"put a regular file at {path} (nothing else is read or changed)",
            detail="key_not_regular",
        )
    if st.st_nlink != 1:
        raise KeyFileError(
            KeyProblem.INSECURE, path,
            f"key file {path} has {st.st_nlink} hard links: it may be another file's name",
            f"replace it with a file of its own (never read or changed through a hard link): "
            f"find / -xdev -samefile {path}", detail="key_hard_link",
        )
    if owners is not None and st.st_uid not in owners:
        expected = ", ".join(sorted(name_of_uid(uid) or str(uid) for uid in owners))
        raise KeyFileError(
            KeyProblem.INSECURE, path,
            f"key file {path} belongs to {name_of_uid(st.st_uid) or st.st_uid}, not to "
            f"{expected}", f"check who put it there; give it to the key's owner: chown "
            f"OWNER {path}", detail="key_wrong_owner",
        )


def _check_lstat(path: Path, st: os.stat_result, allow_group: bool,
                 owners: frozenset[int] | None = None) -> None:
    """The rules that do not need the content: a plain file of its own, permissions."""
    check_structure(path, st, owners)
    bad = stat.S_IMODE(st.st_mode) & _forbidden_bits(allow_group)
    if bad:
        who = "others" if allow_group else "group or others"
        fix = "o-rwx" if allow_group else "go-rwx"
        raise KeyFileError(
            KeyProblem.INSECURE, path,
            f"key file {path} has permissions {_mode_text(st.st_mode)}: accessible to {who}",
            f"restrict it: chmod {fix} {path}", detail="key_permissions",
        )


def _read_fd(fd: int, limit: int) -> bytearray:
    data = bytearray()
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return data
        data += chunk
        if len(data) > limit:
            return data


def sha256_of_fd(fd: int, limit: int = MAX_KEY_BYTES) -> str | None:
    """SHA-256 of what `fd` holds; None past `limit` bytes: no key is that large, and a huge
    (or sparse, or growing) file put at a path root hashes must not cost it hours of CPU."""
    digest = hashlib.sha256()
    total = 0
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return digest.hexdigest()
        total += len(chunk)
        if total > limit:
            return None
        digest.update(chunk)


def name_of_uid(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def name_of_gid(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


# ---------------------------------------------------------------------------------------------
# Reading


def read_key(path: str | os.PathLike[str], *, allow_group: bool = False,
             stable: bool = True, owners: frozenset[int] | None = None) -> SecretBytes:
    """Read a key file under the secrecy rules; raise KeyFileError naming the problem.

    `allow_group=False` is the agent copy's rule (owner only); `True` is Slurm's (no "other" bit).
    `stable=True` refuses content that changed while it was read (an in-place writer at work).
    `owners`: the uids the file may belong to (None: any).
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise KeyFileError(
            KeyProblem.MISSING, path, f"key file {path} does not exist",
            "create or copy the key (slurmrestd-access key ensure / key sync)",
        ) from None
    except NotADirectoryError:
        raise KeyFileError(
            KeyProblem.MISSING, path, f"key file {path} does not exist (a parent is not a "
            "directory)", f"check the path {path}",
        ) from None
    except OSError as exc:
        raise KeyFileError(
            KeyProblem.UNREADABLE, path,
            f"cannot look at key file {path}: {exc.strerror or type(exc).__name__}",
            "run as the key's owner (or root) and check the directories' permissions",
        ) from None
    _check_lstat(path, st, allow_group, owners)

    try:
        fd = os.open(path, OPEN_READ_FLAGS)
    except FileNotFoundError:
        raise KeyFileError(
            KeyProblem.MISSING, path, f"key file {path} disappeared while being read",
            "try again once the key is in place",
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # replaced by a symlink between lstat and open
            raise KeyFileError(
                KeyProblem.INSECURE, path, f"key file {path} is a symbolic link",
                f"replace the link with a regular file: rm {path}", detail="key_symlink",
            ) from None
        raise KeyFileError(
            KeyProblem.UNREADABLE, path,
            f"cannot read key file {path}: {exc.strerror or type(exc).__name__}",
            "run as the key's owner (or root) and check its owner and mode",
        ) from None
    try:
        before = os.fstat(fd)
        # Re-check on the opened inode: the path may have been swapped after lstat.
        _check_lstat(path, before, allow_group, owners)
        try:
            data = _read_fd(fd, MAX_KEY_BYTES)
        except OSError as exc:
            raise KeyFileError(
                KeyProblem.UNREADABLE, path,
                f"cannot read key file {path}: {exc.strerror or type(exc).__name__}",
                "check the file system",
            ) from None
        after = os.fstat(fd)
    finally:
        os.close(fd)

    if len(data) > MAX_KEY_BYTES:
        raise KeyFileError(
            KeyProblem.UNREADABLE, path, f"key file {path} is larger than {MAX_KEY_BYTES} bytes: "
            "not a key", f"check that {path} is the JWT signing key",
        )
    if stable and (
        (before.st_size, before.st_mtime_ns, before.st_ino)
        != (after.st_size, after.st_mtime_ns, after.st_ino)
        or len(data) != after.st_size
    ):
        raise KeyFileError(
            KeyProblem.UNSTABLE, path, f"key file {path} changed while it was read",
            "a writer is modifying it in place; try again when it is done (replace keys by "
            "writing a new file and renaming it over the old one)",
        )
    if not data:
        raise KeyFileError(
            KeyProblem.EMPTY, path, f"key file {path} is empty",
            "write a key of at least 32 random bytes (e.g. slurmrestd-access key ensure on a new "
            "path, then rename)",
        )
    if len(data) < MIN_KEY_BYTES:
        raise KeyFileError(
            KeyProblem.TOO_SHORT, path,
            f"key file {path} has {len(data)} bytes, fewer than {MIN_KEY_BYTES}",
            f"use a key of at least {MIN_KEY_BYTES} random bytes (HS256 needs 256 bits)",
        )
    return SecretBytes(bytes(data))


def describe_file(path: str | os.PathLike[str]) -> FileState:
    """Owner, mode, size and (when readable, of its own, and no larger than a key may be)
    SHA-256 of a path, never following a symlink."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except OSError:
        return FileState(path=str(path), exists=False)
    is_link = stat.S_ISLNK(st.st_mode)
    is_reg = stat.S_ISREG(st.st_mode)
    digest = None
    if is_reg:
        try:
            fd = os.open(path, OPEN_READ_FLAGS)
        except OSError:
            fd = None
        if fd is not None:
            try:
                fst = os.fstat(fd)
                # Another name of the same inode may be any file of the host (a hard link
                # made with fs.protected_hardlinks=0): its hash is not the key's to report.
                if (fst.st_ino == st.st_ino and stat.S_ISREG(fst.st_mode)
                        and fst.st_nlink == 1 and fst.st_size <= MAX_KEY_BYTES):
                    digest = sha256_of_fd(fd)
            except OSError:
                digest = None
            finally:
                os.close(fd)
    return FileState(
        path=str(path), exists=True, is_symlink=is_link, is_regular=is_reg,
        uid=st.st_uid, gid=st.st_gid, owner=name_of_uid(st.st_uid),
        group=name_of_gid(st.st_gid), mode=stat.S_IMODE(st.st_mode), size=st.st_size,
        links=st.st_nlink, sha256=digest,
    )


__all__ = [
    "FORBIDDEN_OWNER_ONLY",
    "FORBIDDEN_SLURM_RULE",
    "MIN_KEY_BYTES",
    "FileState",
    "KeyFileError",
    "KeyProblem",
    "check_structure",
    "describe_file",
    "kind_of",
    "read_key",
]
