"""atomicwrite: all-or-nothing replacement of configuration files, owner and mode kept."""

from __future__ import annotations

import os
import stat

import pytest

from watchdog_daemon.config import atomicwrite
from watchdog_daemon.config.atomicwrite import (
    FileMissingError,
    FileUnreadableError,
    MergeResult,
    WriteError,
    apply_change,
    read_text,
    write_text_atomic,
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")


def _file(tmp_path, text="old\n", mode=0o640):
    path = tmp_path / "f.conf"
    path.write_bytes(text.encode())
    os.chmod(path, mode)
    return path


def test_replaces_content_and_keeps_mode(tmp_path):
    path = _file(tmp_path, mode=0o604)
    write_text_atomic(str(path), "new\r\n")
    assert path.read_bytes() == b"new\r\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o604


@needs_root
def test_keeps_owner_and_group(tmp_path):
    path = _file(tmp_path, mode=0o600)
    os.chown(path, 4321, 8765)
    write_text_atomic(str(path), "new\n")
    st = path.stat()
    assert (st.st_uid, st.st_gid) == (4321, 8765)
    assert stat.S_IMODE(st.st_mode) == 0o600


def test_temp_file_is_private_while_written(tmp_path, monkeypatch):
    """The content (maybe StoragePass) is never in a file others can read, even briefly."""
    path = _file(tmp_path, mode=0o644)
    seen = []
    real_write = os.write

    def spy(fd, data):
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", spy)
    write_text_atomic(str(path), "secret\n")
    assert seen and all(mode & 0o077 == 0 for mode in seen)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_rename_failure_leaves_original_and_no_temp(tmp_path, monkeypatch):
    path = _file(tmp_path)

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(WriteError) as err:
        write_text_atomic(str(path), "new\n")
    assert "No space left" in err.value.message
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["f.conf"]


def test_write_failure_leaves_original_and_no_temp(tmp_path, monkeypatch):
    path = _file(tmp_path)

    def boom(fd, data):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "write", boom)
    with pytest.raises(WriteError):
        write_text_atomic(str(path), "new\n")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["f.conf"]


def test_fsync_failure_leaves_original(tmp_path, monkeypatch):
    path = _file(tmp_path)

    def boom(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(WriteError):
        write_text_atomic(str(path), "new\n")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["f.conf"]


def test_file_changed_since_read_is_not_overwritten(tmp_path):
    path = _file(tmp_path)
    _, st = read_text(str(path))
    path.write_text("edited by someone else, longer\n")
    with pytest.raises(WriteError) as err:
        write_text_atomic(str(path), "new\n", expect=st)
    assert "changed while" in err.value.message
    assert path.read_text() == "edited by someone else, longer\n"


def test_symlink_target_replaced_link_kept(tmp_path):
    target = _file(tmp_path)
    link = tmp_path / "link.conf"
    link.symlink_to(target.name)
    write_text_atomic(str(link), "new\n")
    assert link.is_symlink()
    assert target.read_text() == "new\n"


def test_read_text_round_trips_any_bytes(tmp_path):
    path = tmp_path / "f"
    raw = b"a\r\nb\xff\xfe\n\x00c"
    path.write_bytes(raw)
    text, _ = read_text(str(path))
    write_text_atomic(str(path), text)
    assert path.read_bytes() == raw


def test_read_text_errors(tmp_path):
    with pytest.raises(FileMissingError):
        read_text(str(tmp_path / "none"))
    with pytest.raises(FileUnreadableError):
        read_text(str(tmp_path))


def test_apply_change_only_writes_when_changed(tmp_path):
    path = _file(tmp_path)
    ino = path.stat().st_ino
    res = apply_change(str(path), lambda t: MergeResult(t, False), dry_run=False)
    assert res.file == str(path) and path.stat().st_ino == ino
    res = apply_change(str(path), lambda t: MergeResult(t + "x\n", True), dry_run=True)
    assert res.changed and path.read_text() == "old\n"
    apply_change(str(path), lambda t: MergeResult(t + "x\n", True), dry_run=False)
    assert path.read_text() == "old\nx\n"


def test_merge_result_dict_has_no_text():
    data = MergeResult("StoragePass=x\n", True, ["a"], ["b"], ["w"], "/f").to_dict()
    assert data == {
        "file": "/f",
        "changed": True,
        "before": ["a"],
        "after": ["b"],
        "warnings": ["w"],
    }


def test_acl_copy_failure_refuses(tmp_path, monkeypatch):
    path = _file(tmp_path)
    monkeypatch.setattr(atomicwrite, "_COPIED_XATTRS", ("system.posix_acl_access",))
    monkeypatch.setattr(os, "getxattr", lambda p, n: b"\x02\x00\x00\x00", raising=False)

    def refuse(fd, name, value):
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", refuse, raising=False)
    with pytest.raises(WriteError) as err:
        write_text_atomic(str(path), "new\n")
    assert "ACL" in err.value.message
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["f.conf"]


def test_selinux_label_copy_failure_only_warns(tmp_path, monkeypatch):
    path = _file(tmp_path)
    monkeypatch.setattr(atomicwrite, "_COPIED_XATTRS", ("security.selinux",))
    monkeypatch.setattr(os, "getxattr", lambda p, n: b"system_u:object_r:etc_t:s0", raising=False)

    def refuse(fd, name, value):
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", refuse, raising=False)
    warnings = write_text_atomic(str(path), "new\n")
    assert warnings and "security.selinux" in warnings[0]
    assert path.read_text() == "new\n"


def test_error_dict_uses_documented_reason_and_detail():
    data = WriteError("cannot write /f", "free some space", file="/f").to_dict()
    assert data == {
        "error": "change_refused",
        "detail": "write_failed",
        "message": "cannot write /f",
        "hint": "free some space",
        "exit_code": 40,
        "file": "/f",
    }
    assert FileMissingError("x").to_dict()["error"] == "config_invalid"
