"""Key files: reading under the secrecy rules, describing, atomic install, creation."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from tests.fakes.privdrop import can_drop_privileges, run_as_nobody
from watchdog_daemon.exitcodes import ExitCode
from watchdog_daemon.keys import keyfile
from watchdog_daemon.keys.keyfile import (
    MIN_KEY_BYTES,
    KeyFileError,
    KeyProblem,
    describe_file,
    read_key,
)
from watchdog_daemon.keys.keywrite import (
    TEMP_PREFIX,
    ensure_key,
    install_key_atomically,
    remove_stale_temp_files,
)
from watchdog_daemon.keys.secret import SecretBytes

KEY = b"K" * 16 + b"SENTINEL-keyfile-bytes-0123456789"
ME = os.geteuid()
MY_GROUP = os.getegid()
needs_root = pytest.mark.skipif(not can_drop_privileges(), reason="needs root to test as nobody")


def write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def problem_of(path, **kw) -> KeyFileError:
    with pytest.raises(KeyFileError) as info:
        read_key(path, **kw)
    assert "SENTINEL" not in str(info.value)
    return info.value


# ---- read_key --------------------------------------------------------------------------------

def test_read_ok(tmp_path):
    s = read_key(write(tmp_path / "k", KEY, 0o400))
    assert s.reveal() == KEY


def test_exactly_32_bytes_ok(tmp_path):
    assert len(read_key(write(tmp_path / "k", b"x" * 32))) == 32


def test_missing(tmp_path):
    err = problem_of(tmp_path / "nope")
    assert err.problem is KeyProblem.MISSING and err.exit_code == ExitCode.KEY_MISSING
    assert err.hint


def test_parent_not_a_directory(tmp_path):
    write(tmp_path / "f", b"x")
    assert problem_of(tmp_path / "f" / "k").problem is KeyProblem.MISSING


def test_empty(tmp_path):
    err = problem_of(write(tmp_path / "k", b""))
    assert err.problem is KeyProblem.EMPTY and err.exit_code == ExitCode.KEY_EMPTY


def test_too_short(tmp_path):
    err = problem_of(write(tmp_path / "k", b"x" * (MIN_KEY_BYTES - 1)))
    assert err.problem is KeyProblem.TOO_SHORT and err.exit_code == ExitCode.KEY_TOO_SHORT
    assert "31 bytes" in err.message


def test_symlink_refused_and_not_followed(tmp_path):
    target = write(tmp_path / "real", KEY)
    (tmp_path / "k").symlink_to(target)
    err = problem_of(tmp_path / "k")
    assert err.problem is KeyProblem.INSECURE and err.exit_code == ExitCode.KEY_INSECURE
    assert "symbolic link" in err.message


def test_directory_refused(tmp_path):
    (tmp_path / "k").mkdir()
    assert problem_of(tmp_path / "k").problem is KeyProblem.INSECURE


def test_fifo_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "k", 0o600)
    assert problem_of(tmp_path / "k").problem is KeyProblem.INSECURE


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o610, 0o644, 0o666])
def test_agent_rule_refuses_group_and_other_bits(tmp_path, mode):
    err = problem_of(write(tmp_path / "k", KEY, mode))
    assert err.problem is KeyProblem.INSECURE
    assert f"{mode:04o}" in err.message and "go-rwx" in err.hint


@pytest.mark.parametrize("mode", [0o640, 0o660, 0o600, 0o400])
def test_slurm_rule_allows_group(tmp_path, mode):
    assert read_key(write(tmp_path / "k", KEY, mode), allow_group=True).reveal() == KEY


@pytest.mark.parametrize("mode", [0o604, 0o602, 0o601, 0o644])
def test_slurm_rule_refuses_other_bits(tmp_path, mode):
    err = problem_of(write(tmp_path / "k", KEY, mode), allow_group=True)
    assert err.problem is KeyProblem.INSECURE and "o-rwx" in err.hint


def test_unstable_content_refused(tmp_path, monkeypatch):
    path = write(tmp_path / "k", KEY)
    real_read = keyfile._read_fd

    def read_then_append(fd, limit):
        data = real_read(fd, limit)
        with open(path, "ab") as f:  # an in-place writer at work
            f.write(b"more")
        return data

    monkeypatch.setattr(keyfile, "_read_fd", read_then_append)
    err = problem_of(path)
    assert err.problem is KeyProblem.UNSTABLE and err.exit_code == ExitCode.KEY_UNREADABLE


def test_unstable_check_can_be_disabled(tmp_path, monkeypatch):
    path = write(tmp_path / "k", KEY)
    real_read = keyfile._read_fd

    def read_then_append(fd, limit):
        data = real_read(fd, limit)
        with open(path, "ab") as f:
            f.write(b"more")
        return data

    monkeypatch.setattr(keyfile, "_read_fd", read_then_append)
    assert read_key(path, stable=False).reveal() == KEY


def test_huge_file_refused(tmp_path):
    path = write(tmp_path / "k", b"x" * (keyfile.MAX_KEY_BYTES + 10))
    assert problem_of(path).problem is KeyProblem.UNREADABLE


def _read_problem(path: str) -> list:
    try:
        read_key(path)
    except KeyFileError as exc:
        return [exc.problem.value, int(exc.exit_code), str(exc)]
    return ["ok", 0, ""]


@needs_root
def test_unreadable_as_other_user(tmp_path):
    path = write(tmp_path / "k", KEY, 0o600)
    os.chmod(tmp_path, 0o755)
    for parent in tmp_path.parents:  # pytest's base dirs are 0700: let nobody traverse
        if str(parent) in ("/", "/tmp"):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o011)
    problem, code, text = run_as_nobody(_read_problem, str(path))
    assert problem == "unreadable" and code == ExitCode.KEY_UNREADABLE
    assert "SENTINEL" not in text


@needs_root
def test_unreadable_directory_as_other_user(tmp_path):
    d = tmp_path / "private"
    d.mkdir(mode=0o700)
    write(d / "k", KEY, 0o600)
    for parent in [tmp_path, *tmp_path.parents]:
        if str(parent) in ("/", "/tmp"):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o011)
    problem, code, _ = run_as_nobody(_read_problem, str(d / "k"))
    assert problem == "unreadable" and code == ExitCode.KEY_UNREADABLE


# ---- describe_file ----------------------------------------------------------------------------

def test_describe_regular(tmp_path):
    st = describe_file(write(tmp_path / "k", KEY, 0o640))
    assert st.exists and st.is_regular and not st.is_symlink
    assert st.mode == 0o640 and st.size == len(KEY) and st.uid == ME
    assert st.sha256 == hashlib.sha256(KEY).hexdigest()
    d = st.to_dict()
    assert d["mode"] == "0640" and d["sha256"] == st.sha256
    assert "SENTINEL" not in repr(d)


def test_describe_missing(tmp_path):
    st = describe_file(tmp_path / "nope")
    assert not st.exists and st.sha256 is None and st.to_dict()["mode"] is None


def test_describe_symlink_no_hash(tmp_path):
    (tmp_path / "k").symlink_to(write(tmp_path / "real", KEY))
    st = describe_file(tmp_path / "k")
    assert st.exists and st.is_symlink and not st.is_regular and st.sha256 is None


# ---- install_key_atomically -----------------------------------------------------------------

def test_install_new(tmp_path):
    dest = tmp_path / "copy"
    assert install_key_atomically(SecretBytes(KEY), dest, owner=ME, group=MY_GROUP) is True
    st = os.lstat(dest)
    assert stat.S_IMODE(st.st_mode) == 0o400 and dest.read_bytes() == KEY
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_install_idempotent(tmp_path):
    dest = tmp_path / "copy"
    install_key_atomically(SecretBytes(KEY), dest, owner=ME, group=MY_GROUP)
    ino = os.lstat(dest).st_ino
    assert install_key_atomically(SecretBytes(KEY), dest, owner=ME, group=MY_GROUP) is False
    assert os.lstat(dest).st_ino == ino


def test_install_repairs_mode_in_place(tmp_path):
    dest = write(tmp_path / "copy", KEY, 0o644)
    ino = os.lstat(dest).st_ino
    assert install_key_atomically(SecretBytes(KEY), dest, owner=ME, group=MY_GROUP) is True
    st = os.lstat(dest)
    assert st.st_ino == ino and stat.S_IMODE(st.st_mode) == 0o400


@needs_root
def test_install_repairs_owner_in_place(tmp_path):
    dest = write(tmp_path / "copy", KEY, 0o400)
    ino = os.lstat(dest).st_ino
    assert install_key_atomically(SecretBytes(KEY), dest, owner="nobody", group="nogroup")
    st = os.lstat(dest)
    assert st.st_ino == ino and (st.st_uid, st.st_gid) == (65534, 65534)


def test_repair_never_widens(tmp_path, monkeypatch):
    dest = write(tmp_path / "copy", KEY, 0o604)
    modes = []
    real_fchmod = os.fchmod
    monkeypatch.setattr(os, "fchmod", lambda fd, m: (modes.append(m), real_fchmod(fd, m))[1])
    install_key_atomically(SecretBytes(KEY), dest, owner=ME, group=MY_GROUP, mode=0o440)
    # every intermediate mode is within both old (0604) and new (0440) ... or the final one
    assert modes[0] == 0o604 & 0o440 and modes[-1] == 0o440


def test_install_replaces_by_rename(tmp_path):
    dest = write(tmp_path / "copy", b"o" * 40, 0o400)
    old_ino = os.lstat(dest).st_ino
    assert install_key_atomically(SecretBytes(KEY), dest, owner=ME, group=MY_GROUP)
    assert os.lstat(dest).st_ino != old_ino and dest.read_bytes() == KEY


def test_install_temp_is_private_even_with_umask_0(tmp_path, monkeypatch):
    dest = tmp_path / "copy"
    seen = {}
    real_rename = os.rename

    def spy_rename(src, dst):
        seen["mode"] = stat.S_IMODE(os.lstat(src).st_mode)
        seen["content"] = Path(src).read_bytes()
        return real_rename(src, dst)

    old = os.umask(0)
    try:
        real_write = os.write

        def spy_write(fd, data):
            seen["mode_while_writing"] = stat.S_IMODE(os.fstat(fd).st_mode)
            return real_write(fd, data)

        monkeypatch.setattr(os, "write", spy_write)
        monkeypatch.setattr(os, "rename", spy_rename)
        install_key_atomically(SecretBytes(KEY), dest, owner=ME, group=MY_GROUP, mode=0o400)
    finally:
        os.umask(old)
    assert seen["mode_while_writing"] == 0o600
    assert seen["mode"] == 0o400 and seen["content"] == KEY  # complete before it gets its name


def test_install_failure_removes_temp(tmp_path, monkeypatch):
    dest = write(tmp_path / "copy", b"o" * 40, 0o400)

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "rename", boom)
    with pytest.raises(KeyFileError) as info:
        install_key_atomically(SecretBytes(KEY), dest, owner=ME, group=MY_GROUP)
    assert info.value.problem is KeyProblem.UNWRITABLE
    assert info.value.exit_code == ExitCode.CHANGE_REFUSED
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]
    assert dest.read_bytes() == b"o" * 40


def test_install_write_failure_removes_temp(tmp_path, monkeypatch):
    def boom(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(KeyFileError):
        install_key_atomically(SecretBytes(KEY), tmp_path / "copy", owner=ME, group=MY_GROUP)
    assert list(tmp_path.iterdir()) == []


def test_install_refuses_symlink_dest(tmp_path):
    target = write(tmp_path / "target", b"t" * 40, 0o600)
    (tmp_path / "copy").symlink_to(target)
    with pytest.raises(KeyFileError) as info:
        install_key_atomically(SecretBytes(KEY), tmp_path / "copy", owner=ME, group=MY_GROUP)
    assert info.value.problem is KeyProblem.INSECURE
    assert target.read_bytes() == b"t" * 40 and (tmp_path / "copy").is_symlink()


def test_install_refuses_directory_dest(tmp_path):
    (tmp_path / "copy").mkdir()
    with pytest.raises(KeyFileError) as info:
        install_key_atomically(SecretBytes(KEY), tmp_path / "copy", owner=ME, group=MY_GROUP)
    assert info.value.exit_code == ExitCode.KEY_INSECURE


def test_install_missing_user(tmp_path):
    with pytest.raises(KeyFileError) as info:
        install_key_atomically(SecretBytes(KEY), tmp_path / "copy", owner="no-such-user-xyz",
                               group=MY_GROUP)
    assert info.value.exit_code == ExitCode.USER_MISSING
    assert "no-such-user-xyz" in info.value.message and "useradd" in info.value.hint
    assert not (tmp_path / "copy").exists()


def test_install_missing_group(tmp_path):
    with pytest.raises(KeyFileError) as info:
        install_key_atomically(SecretBytes(KEY), tmp_path / "copy", owner=ME,
                               group="no-such-group-xyz")
    assert info.value.exit_code == ExitCode.USER_MISSING


def test_install_missing_directory(tmp_path):
    with pytest.raises(KeyFileError) as info:
        install_key_atomically(SecretBytes(KEY), tmp_path / "d" / "copy", owner=ME,
                               group=MY_GROUP)
    assert info.value.problem is KeyProblem.UNWRITABLE


# ---- stale temp files -----------------------------------------------------------------------

def test_remove_stale_temp_files(tmp_path):
    (tmp_path / f"{TEMP_PREFIX}abc").write_bytes(b"partial")
    (tmp_path / f"{TEMP_PREFIX}link").symlink_to("/etc/passwd")
    (tmp_path / "keep").write_bytes(b"x")
    (tmp_path / f"{TEMP_PREFIX}dir").mkdir()
    removed = remove_stale_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == [f"{TEMP_PREFIX}abc", f"{TEMP_PREFIX}link"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{TEMP_PREFIX}dir", "keep"]
    assert Path("/etc/passwd").exists()


def test_remove_stale_spares_young_files(tmp_path):
    (tmp_path / f"{TEMP_PREFIX}abc").write_bytes(b"partial")
    assert remove_stale_temp_files(tmp_path, min_age_seconds=60) == []


def test_remove_stale_missing_dir(tmp_path):
    assert remove_stale_temp_files(tmp_path / "nope") == []


# ---- ensure_key -------------------------------------------------------------------------------

def test_ensure_creates_with_parents(tmp_path):
    path = tmp_path / "var" / "spool" / "slurm" / "jwt_hs256.key"
    assert ensure_key(path, owner=ME, group=MY_GROUP) == "created"
    st = os.lstat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == 32
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tmp_path / "var").st_mode) == 0o755
    assert not [p for p in path.parent.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_ensure_random_each_time(tmp_path):
    ensure_key(tmp_path / "a", owner=ME, group=MY_GROUP)
    ensure_key(tmp_path / "b", owner=ME, group=MY_GROUP)
    assert (tmp_path / "a").read_bytes() != (tmp_path / "b").read_bytes()


def test_ensure_unchanged_and_never_replaces(tmp_path):
    path = write(tmp_path / "k", KEY, 0o600)
    assert ensure_key(path, owner=ME, group=MY_GROUP) == "unchanged"
    assert path.read_bytes() == KEY


def test_ensure_repairs_mode_keeps_content(tmp_path):
    path = write(tmp_path / "k", KEY, 0o644)
    ino = os.lstat(path).st_ino
    assert ensure_key(path, owner=ME, group=MY_GROUP) == "repaired"
    assert path.read_bytes() == KEY and os.lstat(path).st_ino == ino
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600


def test_ensure_race_keeps_other_key(tmp_path, monkeypatch):
    path = tmp_path / "k"
    real_link = os.link

    def racing_link(src, dst):
        write(Path(dst), KEY, 0o600)  # another process wins the race
        return real_link(src, dst)

    monkeypatch.setattr(os, "link", racing_link)
    assert ensure_key(path, owner=ME, group=MY_GROUP) == "unchanged"
    assert path.read_bytes() == KEY
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]


def test_ensure_refuses_symlink(tmp_path):
    (tmp_path / "k").symlink_to(write(tmp_path / "real", KEY))
    with pytest.raises(KeyFileError) as info:
        ensure_key(tmp_path / "k", owner=ME, group=MY_GROUP)
    assert info.value.problem is KeyProblem.INSECURE


def test_ensure_missing_user(tmp_path):
    with pytest.raises(KeyFileError) as info:
        ensure_key(tmp_path / "k", owner="no-such-user-xyz", group=MY_GROUP)
    assert info.value.exit_code == ExitCode.USER_MISSING and not (tmp_path / "k").exists()


def test_a_huge_sparse_file_is_described_without_reading_it(tmp_path):
    """Issue 21: whoever owns the copy's directory can put a 16 TiB sparse file there; the root
    watchdog describes the copy on every run and must not hash it (4 GiB took 5.8 s)."""
    import time

    big = tmp_path / "k"
    with open(big, "wb") as fh:
        fh.truncate(1 << 32)  # 4 GiB of holes: 5.8 s to hash (measured)
    start = time.monotonic()
    st = describe_file(big)
    assert time.monotonic() - start < 1.0
    assert st.exists and st.is_regular and st.size == 1 << 32 and st.sha256 is None


def test_a_file_that_grows_past_the_limit_while_hashed_gets_no_hash(tmp_path):
    from watchdog_daemon.keys import keyfile

    path = tmp_path / "k"
    path.write_bytes(b"x" * (keyfile.MAX_KEY_BYTES + 1))
    fd = os.open(path, os.O_RDONLY)
    try:
        assert keyfile.sha256_of_fd(fd) is None
    finally:
        os.close(fd)
