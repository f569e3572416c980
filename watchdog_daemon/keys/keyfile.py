"""Reading, describing and atomically installing JWT signing key files.

Rules that shape this module (see ../shared/FACTS.md):
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
import secrets
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from watchdog_daemon.exitcodes import ExitCode
from watchdog_daemon.keys.secret import SecretBytes

MIN_KEY_BYTES = 32
# A key is 32..a few hundred bytes; anything this large is the wrong file, not a key.
MAX_KEY_BYTES = 1024 * 1024
TEMP_PREFIX = ".slurmrestd-access-tmp-"

# Permission bits refused for the agent copy (owner only) and for Slurm's key (no "other" bit).
FORBIDDEN_OWNER_ONLY = 0o077
FORBIDDEN_SLURM_RULE = 0o007

_OPEN_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK


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
                 hint: str) -> None:
        self.problem = problem
        self.path = Path(path)
        self.message = message
        self.hint = hint
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
    sha256: str | None = None  # only for a readable regular file

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


def _check_lstat(path: Path, st: os.stat_result, allow_group: bool) -> None:
    """The rules that do not need the content: regular file, not a symlink, permissions."""
    if stat.S_ISLNK(st.st_mode):
        raise KeyFileError(
            KeyProblem.INSECURE, path, f"key file {path} is a symbolic link",
            f"replace the link with a regular file (the link is never followed): rm {path}",
        )
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(
            KeyProblem.INSECURE, path, f"key file {path} is not a regular file",
            f"put a regular file at {path}",
        )
    bad = stat.S_IMODE(st.st_mode) & _forbidden_bits(allow_group)
    if bad:
        who = "others" if allow_group else "group or others"
        fix = "o-rwx" if allow_group else "go-rwx"
        raise KeyFileError(
            KeyProblem.INSECURE, path,
            f"key file {path} has permissions {_mode_text(st.st_mode)}: accessible to {who}",
            f"restrict it: chmod {fix} {path}",
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


def _sha256_of_fd(fd: int) -> str:
    digest = hashlib.sha256()
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return digest.hexdigest()
        digest.update(chunk)


def _name_of_uid(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _name_of_gid(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


def resolve_owner(owner: str | int, group: str | int, path: str | os.PathLike[str]
                  ) -> tuple[int, int]:
    """User and group names (or numeric ids) to ids; a missing one is a clear OWNER_MISSING."""
    if isinstance(owner, int) or (isinstance(owner, str) and owner.isdigit()):
        uid = int(owner)
    else:
        try:
            uid = pwd.getpwnam(owner).pw_uid
        except KeyError:
            raise KeyFileError(
                KeyProblem.OWNER_MISSING, path, f"user {owner!r} does not exist on this host",
                f"create it (e.g. install the package that provides it, or "
                f"`useradd --system {owner}`) or name another owner",
            ) from None
    if isinstance(group, int) or (isinstance(group, str) and group.isdigit()):
        gid = int(group)
    else:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise KeyFileError(
                KeyProblem.OWNER_MISSING, path, f"group {group!r} does not exist on this host",
                f"create it (`groupadd --system {group}`) or name another group",
            ) from None
    return uid, gid


# os.umask is process-wide: serialise our changes so two installs never restore each other's.
_UMASK_LOCK = threading.Lock()


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    with _UMASK_LOCK:
        old = os.umask(mask)
        try:
            yield
        finally:
            os.umask(old)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unwritable(path: Path, action: str, exc: OSError) -> KeyFileError:
    reason = exc.strerror or type(exc).__name__
    return KeyFileError(
        KeyProblem.UNWRITABLE, path, f"cannot {action} {path}: {reason}",
        "check that the directory exists, is writable by this user and the file system is "
        "not read-only or full; nothing was changed",
    )


# ---------------------------------------------------------------------------------------------
# Reading


def read_key(path: str | os.PathLike[str], *, allow_group: bool = False,
             stable: bool = True) -> SecretBytes:
    """Read a key file under the secrecy rules; raise KeyFileError naming the problem.

    `allow_group=False` is the agent copy's rule (owner only); `True` is Slurm's (no "other" bit).
    `stable=True` refuses content that changed while it was read (an in-place writer at work).
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
    _check_lstat(path, st, allow_group)

    try:
        fd = os.open(path, _OPEN_READ_FLAGS)
    except FileNotFoundError:
        raise KeyFileError(
            KeyProblem.MISSING, path, f"key file {path} disappeared while being read",
            "try again once the key is in place",
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # replaced by a symlink between lstat and open
            raise KeyFileError(
                KeyProblem.INSECURE, path, f"key file {path} is a symbolic link",
                f"replace the link with a regular file: rm {path}",
            ) from None
        raise KeyFileError(
            KeyProblem.UNREADABLE, path,
            f"cannot read key file {path}: {exc.strerror or type(exc).__name__}",
            "run as the key's owner (or root) and check its owner and mode",
        ) from None
    try:
        before = os.fstat(fd)
        # Re-check on the opened inode: the path may have been swapped after lstat.
        _check_lstat(path, before, allow_group)
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
    """Owner, mode, size and (when readable) SHA-256 of a path, never following a symlink."""
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
            fd = os.open(path, _OPEN_READ_FLAGS)
        except OSError:
            fd = None
        if fd is not None:
            try:
                if os.fstat(fd).st_ino == st.st_ino:
                    digest = _sha256_of_fd(fd)
            except OSError:
                digest = None
            finally:
                os.close(fd)
    return FileState(
        path=str(path), exists=True, is_symlink=is_link, is_regular=is_reg,
        uid=st.st_uid, gid=st.st_gid, owner=_name_of_uid(st.st_uid),
        group=_name_of_gid(st.st_gid), mode=stat.S_IMODE(st.st_mode), size=st.st_size,
        sha256=digest,
    )


# ---------------------------------------------------------------------------------------------
# Writing


def _refuse_non_regular(dest: Path, st: os.stat_result) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise KeyFileError(
            KeyProblem.INSECURE, dest, f"{dest} is a symbolic link: refusing to write through it",
            f"remove the link (rm {dest}) and run again",
        )
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(
            KeyProblem.INSECURE, dest, f"{dest} is not a regular file: refusing to replace it",
            f"remove or move {dest} and run again",
        )


def _repair_in_place(dest: Path, st: os.stat_result, uid: int, gid: int, mode: int) -> None:
    """Fix owner and mode of an existing file without ever widening access on the way.

    First narrow to the intersection of the current and target modes, then chown, then set the
    target mode: at no moment can anyone read it who can read neither the old nor the new file.
    Works on an O_NOFOLLOW descriptor checked to be the inode we looked at (no symlink race).
    """
    narrow = stat.S_IMODE(st.st_mode) & mode
    try:
        fd = os.open(dest, _OPEN_READ_FLAGS)
    except OSError as exc:
        raise _unwritable(dest, "open", exc) from None
    try:
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
            raise KeyFileError(
                KeyProblem.UNSTABLE, dest, f"{dest} was replaced while being repaired",
                "run again",
            )
        _refuse_non_regular(dest, fst)
        os.fchmod(fd, narrow)
        if (fst.st_uid, fst.st_gid) != (uid, gid):
            os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        os.fsync(fd)
    except OSError as exc:
        raise _unwritable(dest, "change owner or mode of", exc) from None
    finally:
        os.close(fd)


def _write_temp(secret: SecretBytes, directory: Path, uid: int, gid: int, mode: int) -> Path:
    """A complete, synced temp file with final owner and mode, in `directory`."""
    tmp = directory / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
    try:
        with _umask(0o077):
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600)
    except OSError as exc:
        raise _unwritable(tmp, "create", exc) from None
    try:
        try:
            view = memoryview(secret.reveal())
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            os.fsync(fd)  # make owner and mode durable before the name is
        finally:
            os.close(fd)
    except BaseException as exc:
        with suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _unwritable(tmp, "write", exc) from None
        raise
    return tmp


def install_key_atomically(secret: SecretBytes, dest: str | os.PathLike[str], *,
                           owner: str | int, group: str | int, mode: int = 0o400) -> bool:
    """Make `dest` hold `secret` with owner, group and mode; return whether anything changed.

    Same content: owner/mode repaired in place (never a rewrite: Slurm maps the file). Other
    content: a temp file in the same directory, complete with owner and mode, renamed over.
    """
    dest = Path(dest)
    uid, gid = resolve_owner(owner, group, dest)
    mode = stat.S_IMODE(mode)
    try:
        st: os.stat_result | None = os.lstat(dest)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise _unwritable(dest, "look at", exc) from None

    if st is not None:
        _refuse_non_regular(dest, st)
        current = describe_file(dest)
        if current.sha256 is not None and current.sha256 == secret.sha256:
            if (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (uid, gid, mode):
                return False
            _repair_in_place(dest, st, uid, gid, mode)
            return True

    if not dest.parent.is_dir():
        raise KeyFileError(
            KeyProblem.UNWRITABLE, dest, f"directory {dest.parent} does not exist",
            f"create it (the package that owns it may be missing): mkdir -p {dest.parent}",
        )
    tmp = _write_temp(secret, dest.parent, uid, gid, mode)
    try:
        # rename() replaces a symlink itself, never its target; we refused those above anyway.
        os.rename(tmp, dest)
        _fsync_dir(dest.parent)
    except OSError as exc:
        with suppress(OSError):
            os.unlink(tmp)
        raise _unwritable(dest, "rename the new key onto", exc) from None
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    return True


def remove_stale_temp_files(directory: str | os.PathLike[str], *,
                            min_age_seconds: float = 0.0) -> list[Path]:
    """Remove our temp files left by a crash; return what was removed.

    `min_age_seconds` spares a temp file that a concurrent install may be about to rename.
    """
    directory = Path(directory)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not entry.name.startswith(TEMP_PREFIX):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode) or now - st.st_mtime < min_age_seconds:
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def make_parent_dirs(directory: Path) -> None:
    """Create missing directories 0755 (like /var/spool/slurm), owned by whoever runs us."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    for each in reversed(missing):
        try:
            os.mkdir(each, 0o755)
            # 0755 like /var/spool/slurm: the key inside is what is protected; umask may narrow it
            os.chmod(each, 0o755)  # noqa: S103
        except FileExistsError:
            continue
        except OSError as exc:
            raise _unwritable(each, "create directory", exc) from None


def ensure_key(path: str | os.PathLike[str], *, owner: str | int = "slurm",
               group: str | int = "slurm", mode: int = 0o600
               ) -> Literal["created", "repaired", "unchanged"]:
    """Create Slurm's key when absent (32 bytes from the kernel CSPRNG); never replace one.

    An existing key keeps its content; only its owner, group and mode are repaired.
    """
    path = Path(path)
    uid, gid = resolve_owner(owner, group, path)
    mode = stat.S_IMODE(mode)
    for _attempt in range(2):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise _unwritable(path, "look at", exc) from None
        if st is not None:
            _refuse_non_regular(path, st)
            if (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (uid, gid, mode):
                return "unchanged"
            _repair_in_place(path, st, uid, gid, mode)
            return "repaired"

        make_parent_dirs(path.parent)
        tmp = _write_temp(SecretBytes(os.urandom(MIN_KEY_BYTES)), path.parent, uid, gid, mode)
        try:
            # link() fails if the name exists: a key created meanwhile is never replaced.
            os.link(tmp, path)
        except FileExistsError:
            continue  # someone else created it: treat it as an existing key
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS):
                raise _unwritable(path, "create", exc) from None
            # File systems without hard links: rename, after a last look that it is absent.
            if os.path.lexists(path):
                continue
            try:
                os.rename(tmp, path)
            except OSError as exc2:
                raise _unwritable(path, "create", exc2) from None
        finally:
            with suppress(OSError):
                os.unlink(tmp)
        try:
            _fsync_dir(path.parent)
        except OSError as exc:
            raise _unwritable(path.parent, "sync directory", exc) from None
        return "created"
    raise KeyFileError(
        KeyProblem.UNSTABLE, path, f"{path} keeps changing while being created", "run again",
    )


def rotate_key(path: str | os.PathLike[str], *, keep_previous: str | os.PathLike[str],
               owner: str | int = "slurm", group: str | int = "slurm", mode: int = 0o600
               ) -> tuple[str, str]:
    """Replace the key at `path` by 32 new CSPRNG bytes, keeping the current one at
    `keep_previous` (owner only) for a rollback. Returns (previous sha256, new sha256).

    The previous key is safely kept before the new one is renamed into place, so a crash in
    between leaves either the old key in place or both keys on disk, never no key.
    """
    path, keep = Path(path), Path(keep_previous)
    if path.resolve() == keep.resolve():
        raise KeyFileError(KeyProblem.UNWRITABLE, keep, "--keep-previous names the key itself",
                           "keep the previous key under another name, e.g. KEY.previous")
    old = read_key(path, allow_group=True)  # Slurm's own rule for its key
    install_key_atomically(old, keep, owner=owner, group=group, mode=stat.S_IMODE(mode) & 0o700)
    new = SecretBytes(os.urandom(MIN_KEY_BYTES))
    install_key_atomically(new, path, owner=owner, group=group, mode=mode)
    return old.sha256, new.sha256


__all__ = [
    "FORBIDDEN_OWNER_ONLY",
    "FORBIDDEN_SLURM_RULE",
    "MIN_KEY_BYTES",
    "TEMP_PREFIX",
    "FileState",
    "KeyFileError",
    "KeyProblem",
    "describe_file",
    "ensure_key",
    "install_key_atomically",
    "read_key",
    "remove_stale_temp_files",
    "resolve_owner",
    "rotate_key",
]
