"""What an account that owns the key's directory can put at a key path, and what root does with
it: a symlink, a hard link, a FIFO, a device, a huge sparse file, a file of someone else. Each
is refused with a reason naming the file, on every path root reads or changes keys by: the
reader (`read_key`), `key export` (the deploy's transfer), `key ensure`, the repair of owner
and mode, `key install`, `describe_file` (the survey and the watchdog). Issue 21.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import stat
import sys
import threading

import pytest

from watchdog_daemon.cli import main
from watchdog_daemon.exitcodes import ExitCode
from watchdog_daemon.keys.keyfile import KeyFileError, describe_file, read_key
from watchdog_daemon.keys.keywrite import ensure_key, install_key_atomically
from watchdog_daemon.keys.secret import SecretBytes

KEY = b"SENTINEL-attack-" + b"k" * 32
SHA = hashlib.sha256(KEY).hexdigest()
# Stands in for /etc/shadow or munge.key: a root-only file the attacker cannot read.
SECRET = b"SENTINEL-other-file-" + b"s" * 40
ME, MYG = os.geteuid(), os.getegid()


@pytest.fixture
def other_file(tmp_path):
    path = tmp_path / "shadow"
    path.write_bytes(SECRET)
    os.chmod(path, 0o600)
    return path


def _stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def export(capsys, monkeypatch, path, *, expect: str | None = None, owners=()):
    _stdin(monkeypatch, (expect or "").encode())
    argv = ["key", "export", "--path", str(path)]
    for owner in owners:
        argv += ["--owner", owner]
    if expect is not None:
        argv.append("--expect-sha256-stdin")
    code = main(argv)
    out, err = capsys.readouterr()
    assert SECRET.decode() not in out + err and base64.b64encode(SECRET).decode() not in out
    return code, out, err


def _refusal(out: str) -> dict:
    return json.loads(out.splitlines()[-1])


# ---- the reader ------------------------------------------------------------------------------

def test_a_hard_link_to_another_file_is_never_read(tmp_path, other_file):
    key = tmp_path / "jwt.key"
    os.link(other_file, key)
    with pytest.raises(KeyFileError) as info:
        read_key(key, allow_group=True)
    assert info.value.detail == "key_hard_link" and info.value.exit_code == ExitCode.KEY_INSECURE
    assert str(key) in info.value.message and "2 hard links" in info.value.message


def test_a_device_is_refused_without_being_opened(tmp_path):
    key = tmp_path / "jwt.key"
    key.symlink_to("/dev/zero")
    with pytest.raises(KeyFileError) as info:
        read_key(key)
    assert info.value.detail == "key_symlink"
    with pytest.raises(KeyFileError) as info:
        read_key("/dev/zero")
    assert info.value.detail == "key_not_regular"
    assert "a character device" in info.value.message


def test_a_fifo_is_refused_without_blocking(tmp_path):
    key = tmp_path / "jwt.key"
    os.mkfifo(key, 0o600)
    done = []
    worker = threading.Thread(target=lambda: done.append(_refused_detail(key)), daemon=True)
    worker.start()
    worker.join(5)
    assert done == ["key_not_regular"]


def _refused_detail(path) -> str:
    try:
        read_key(path)
    except KeyFileError as exc:
        return exc.detail
    return "read"


def test_a_fifo_swapped_in_after_the_first_look_is_refused_without_blocking(tmp_path, monkeypatch):
    """The path passes lstat as a regular file, then becomes a FIFO before the open: the open
    does not block (O_NONBLOCK) and fstat of the opened file refuses it."""
    key = tmp_path / "jwt.key"
    key.write_bytes(KEY)
    os.chmod(key, 0o600)
    real_lstat = os.lstat

    def lstat_then_swap(path, *args, **kwargs):
        result = real_lstat(path, *args, **kwargs)
        if str(path) == str(key):
            os.unlink(key)
            os.mkfifo(key, 0o600)
        return result

    monkeypatch.setattr(os, "lstat", lstat_then_swap)
    done = []
    worker = threading.Thread(target=lambda: done.append(_refused_detail(key)), daemon=True)
    worker.start()
    worker.join(5)
    assert done == ["key_not_regular"]


def test_an_oversized_sparse_file_is_refused_after_reading_at_most_a_mebibyte(tmp_path):
    key = tmp_path / "jwt.key"
    with open(key, "wb") as f:
        f.truncate(1 << 40)  # 1 TiB, sparse
    os.chmod(key, 0o600)
    with pytest.raises(KeyFileError) as info:
        read_key(key)
    assert "larger than" in info.value.message
    # Bounded: reading a TiB would take the root daemon hours (a thread, so that a regression
    # fails here instead of hanging the suite).
    described = []
    worker = threading.Thread(target=lambda: described.append(describe_file(key)), daemon=True)
    worker.start()
    worker.join(10)
    assert described and described[0].sha256 is None and described[0].size == 1 << 40


def test_a_key_of_an_unexpected_owner_is_refused(tmp_path):
    key = tmp_path / "jwt.key"
    key.write_bytes(KEY)
    os.chmod(key, 0o600)
    with pytest.raises(KeyFileError) as info:
        read_key(key, owners=frozenset({ME + 4242}))
    assert info.value.detail == "key_wrong_owner" and str(key) in info.value.message
    assert read_key(key, owners=frozenset({ME})).sha256 == SHA


def test_describe_hashes_no_hard_linked_file(tmp_path, other_file):
    key = tmp_path / "jwt.key"
    os.link(other_file, key)
    state = describe_file(key)
    assert state.is_regular and state.links == 2 and state.sha256 is None
    assert describe_file(other_file).sha256 is None  # both names are the same file


# ---- what root changes -----------------------------------------------------------------------

def test_ensure_never_chowns_a_hard_linked_key(tmp_path, other_file):
    key = tmp_path / "jwt.key"
    os.link(other_file, key)
    with pytest.raises(KeyFileError) as info:
        ensure_key(key, owner=ME, group=MYG, mode=0o640)
    assert info.value.detail == "key_hard_link"
    assert stat.S_IMODE(os.stat(other_file).st_mode) == 0o600


def test_install_replaces_a_hard_linked_copy_and_leaves_the_other_file_alone(tmp_path,
                                                                             other_file):
    """`slurm-web` hard-links Slurm's key as its copy: the copy (same content) must not be
    repaired in place, which would chown Slurm's key to slurm-web; it is replaced by rename."""
    os.chmod(other_file, 0o640)
    copy = tmp_path / "slurmrestd.key"
    os.link(other_file, copy)
    changed = install_key_atomically(SecretBytes(SECRET), copy, owner=ME, group=MYG, mode=0o400)
    assert changed is True
    assert stat.S_IMODE(os.stat(other_file).st_mode) == 0o640
    assert os.stat(other_file).st_nlink == 1 and os.stat(copy).st_nlink == 1
    assert copy.read_bytes() == SECRET


def test_install_refuses_a_fifo_or_device_at_the_destination(tmp_path):
    dest = tmp_path / "slurmrestd.key"
    os.mkfifo(dest, 0o600)
    with pytest.raises(KeyFileError) as info:
        install_key_atomically(SecretBytes(KEY), dest, owner=ME, group=MYG)
    assert info.value.detail == "key_not_regular" and "a FIFO" in info.value.message
    assert stat.S_ISFIFO(os.lstat(dest).st_mode)


# ---- key export: the deploy's transfer ---------------------------------------------------------

def _key(tmp_path):
    key = tmp_path / "jwt.key"
    key.write_bytes(KEY)
    os.chmod(key, 0o600)
    return key


def test_export_prints_the_key_only_when_it_has_the_expected_digest(tmp_path, capsys,
                                                                    monkeypatch):
    key = _key(tmp_path)
    code, out, _ = export(capsys, monkeypatch, key, expect=SHA)
    assert code == 0 and base64.b64decode(out.strip()) == KEY
    code, out, err = export(capsys, monkeypatch, key, expect="0" * 64)
    assert code == ExitCode.CHANGE_REFUSED and base64.b64encode(KEY).decode() not in out
    assert _refusal(out)["detail"] == "sha256_mismatch" and "nothing was written or sent" in err


@pytest.mark.parametrize("attack", ["symlink", "hard_link", "fifo", "device", "sparse",
                                    "wrong_owner"])
def test_export_refuses_what_an_account_can_put_at_the_key_path(tmp_path, capsys, monkeypatch,
                                                                 other_file, attack):
    key = tmp_path / "jwt.key"
    owners: tuple[str, ...] = ()
    if attack == "symlink":
        key.symlink_to(other_file)
    elif attack == "hard_link":
        os.link(other_file, key)
    elif attack == "fifo":
        os.mkfifo(key, 0o600)
    elif attack == "device":
        key.symlink_to("/dev/zero")
        key = "/dev/zero"
    elif attack == "sparse":
        with open(key, "wb") as f:
            f.truncate(1 << 34)
        os.chmod(key, 0o600)
    elif attack == "wrong_owner":
        key.write_bytes(KEY)
        os.chmod(key, 0o600)
        if ME == 0:
            os.chown(key, 54321, 54321)  # neither root nor --owner
        else:
            owners = ("root",)  # root and... not us
    code, out, err = export(capsys, monkeypatch, key, owners=owners)
    expected = {"symlink": "key_symlink", "hard_link": "key_hard_link",
                "fifo": "key_not_regular", "device": "key_not_regular",
                "sparse": "key_unreadable", "wrong_owner": "key_wrong_owner"}[attack]
    report = _refusal(out)
    assert code != 0 and report["detail"] == expected, report
    assert report["file"] == str(key) and str(key) in err
    assert len(out.splitlines()) == 1  # the refusal, and nothing else on stdout


def test_a_rollback_replaces_a_planted_link_and_never_writes_through_it(tmp_path, capsys,
                                                                       other_file):
    kept = tmp_path / "kept"
    kept.write_bytes(KEY)
    os.chmod(kept, 0o600)
    key = tmp_path / "jwt.key"
    key.symlink_to(other_file)
    argv = ["key", "sync", "--source", str(kept), "--dest", str(key), "--owner", str(ME),
            "--group", str(MYG), "--mode", "0600", "--json"]
    assert main(argv) == ExitCode.KEY_INSECURE  # a plain sync refuses the link
    capsys.readouterr()
    assert main([*argv, "--replace-link"]) == 0
    capsys.readouterr()
    assert not key.is_symlink() and key.read_bytes() == KEY
    assert other_file.read_bytes() == SECRET and stat.S_IMODE(os.stat(other_file).st_mode) == 0o600
