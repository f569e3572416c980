"""JWT signing key files written: installed by rename, created, rotated, crash leftovers removed.

A key is only ever replaced by a new file, complete with its owner and mode, renamed over the
old one (Slurm maps the file: never rewritten in place); the owner and mode of a file that
already holds the key are repaired without widening access on the way. The rules (secrecy, no
symlink followed, no content in messages) and the reading are keys/keyfile.py's.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import secrets
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Literal

from watchdog_daemon.keys.keyfile import (
    MIN_KEY_BYTES,
    OPEN_READ_FLAGS,
    KeyFileError,
    KeyProblem,
    describe_file,
    kind_of,
    read_key,
)
from watchdog_daemon.keys.secret import SecretBytes

TEMP_PREFIX = ".slurmrestd-access-tmp-"


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
# Writing


def _refuse_non_regular(dest: Path, st: os.stat_result) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise KeyFileError(
            KeyProblem.INSECURE, dest, f"{dest} is a symbolic link: refusing to write through it",
            f"remove the link (rm {dest}) and run again", detail="key_symlink",
        )
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(
            KeyProblem.INSECURE, dest, f"{dest} is {kind_of(st.st_mode)}, not a regular file: "
            "refusing to replace it", f"remove or move {dest} and run again",
            detail="key_not_regular",
        )


def _refuse_shared_inode(dest: Path, st: os.stat_result) -> None:
    """A chown or chmod through a hard link changes the other name's file too (with
    fs.protected_hardlinks=0 anyone can link any file): never repair such a file in place."""
    if st.st_nlink != 1:
        raise KeyFileError(
            KeyProblem.INSECURE, dest, f"{dest} has {st.st_nlink} hard links: refusing to change "
            "its owner or mode (that would change the other file too)",
            f"replace it with a file of its own (find / -xdev -samefile {dest}), then run again",
            detail="key_hard_link",
        )


def _repair_in_place(dest: Path, st: os.stat_result, uid: int, gid: int, mode: int) -> None:
    """Fix owner and mode of an existing file without ever widening access on the way.

    First narrow to the intersection of the current and target modes, then chown, then set the
    target mode: at no moment can anyone read it who can read neither the old nor the new file.
    Works on an O_NOFOLLOW descriptor checked to be the inode we looked at (no symlink race).
    """
    narrow = stat.S_IMODE(st.st_mode) & mode
    try:
        fd = os.open(dest, OPEN_READ_FLAGS)
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
        _refuse_shared_inode(dest, fst)
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
                           owner: str | int, group: str | int, mode: int = 0o400,
                           replace_link: bool = False) -> bool:
    """Make `dest` hold `secret` with owner, group and mode; return whether anything changed.

    Same content: owner/mode repaired in place (never a rewrite: Slurm maps the file). Other
    content: a temp file in the same directory, complete with owner and mode, renamed over.
    A symlink at `dest` is refused, or with `replace_link` replaced (rename replaces the link
    itself, never its target): what a rollback does to a link an account planted at a key.
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

    if st is not None and not (replace_link and stat.S_ISLNK(st.st_mode)):
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


def ensure_private_dir(directory: str | os.PathLike[str]) -> None:
    """Make `directory` a place only we can enter: created 0700 (with missing parents) when
    absent; refused when it is a link, not ours, or open to others, and so is its parent (the
    rotation keeps previous keys there: an account that could write in it could choose the
    key the proof signs with, or the one the rollback installs)."""
    directory = Path(directory)
    missing: list[Path] = []
    current = directory
    while not os.path.lexists(current):
        missing.append(current)
        current = current.parent
    for each in reversed(missing):
        try:
            with _umask(0o077):
                os.mkdir(each, 0o700)
        except FileExistsError:
            continue
        except OSError as exc:
            raise _unwritable(each, "create directory", exc) from None
    for each, forbidden in ((directory, 0o077), (directory.parent, 0o022)):
        try:
            st = os.lstat(each)
        except OSError as exc:
            raise _unwritable(each, "look at", exc) from None
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode) or \
                st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & forbidden:
            raise KeyFileError(
                KeyProblem.INSECURE, each,
                f"{each} is not a private directory ({kind_of(st.st_mode)}, owner uid "
                f"{st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}): refusing to keep keys in it",
                f"remove it (it holds nothing but kept keys) or make it root's: chown root:root "
                f"{each} && chmod {0o700 if forbidden == 0o077 else 0o755:o} {each}",
                detail="state_dir_insecure",
            )


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
            # Even with the right owner and mode: Slurm would use another file's bytes as key.
            _refuse_shared_inode(path, st)
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
               owner: str | int = "slurm", group: str | int = "slurm", mode: int = 0o600,
               private_dir: bool = False) -> tuple[str, str]:
    """Replace the key at `path` by 32 new CSPRNG bytes, keeping the current one at
    `keep_previous` (ours, 0600: root's in production) for a rollback; `private_dir` makes its
    directory ours and 0700 first. Returns (previous sha256, new sha256).

    The previous key is safely kept before the new one is renamed into place, so a crash in
    between leaves either the old key in place or both keys on disk, never no key.
    """
    path, keep = Path(path), Path(keep_previous)
    if path.resolve() == keep.resolve():
        raise KeyFileError(KeyProblem.UNWRITABLE, keep, "--keep-previous names the key itself",
                           "keep the previous key under another name, e.g. KEY.previous")
    old = read_key(path, allow_group=True)  # Slurm's own rule for its key
    if private_dir:
        ensure_private_dir(keep.parent)
    install_key_atomically(old, keep, owner=os.geteuid(), group=os.getegid(), mode=0o600)
    new = SecretBytes(os.urandom(MIN_KEY_BYTES))
    install_key_atomically(new, path, owner=owner, group=group, mode=mode)
    return old.sha256, new.sha256


__all__ = [
    "TEMP_PREFIX",
    "ensure_key",
    "ensure_private_dir",
    "install_key_atomically",
    "remove_stale_temp_files",
    "resolve_owner",
    "rotate_key",
]
