"""`slurmrestd-access key ...`: JSON reports, exit codes, the key never in output."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import stat
import sys

import pytest

from watchdog_daemon.cli import main
from watchdog_daemon.exitcodes import ExitCode

KEY = b"SENTINEL-keycli-" + b"q" * 30
SHA = hashlib.sha256(KEY).hexdigest()
ME, MYG = str(os.geteuid()), str(os.getegid())


def feed(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    for text in (out, err):
        assert "SENTINEL" not in text
        assert base64.b64encode(KEY).decode() not in text and KEY.hex() not in text
    return code, out, err


# ---- ensure -----------------------------------------------------------------------------------

def test_ensure_created_then_unchanged(tmp_path, capsys):
    path = tmp_path / "spool" / "jwt_hs256.key"
    argv = ["key", "ensure", "--path", str(path), "--owner", ME, "--group", MYG]
    code, out, _ = run(capsys, argv)
    data = json.loads(out)
    assert code == 0 and data["result"] == "created"
    assert data["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    code, out, _ = run(capsys, [*argv, "--json"])
    assert json.loads(out)["result"] == "unchanged"
    os.chmod(path, 0o644)
    code, out, _ = run(capsys, argv)
    assert json.loads(out)["result"] == "repaired"


def test_ensure_missing_user(tmp_path, capsys):
    code, out, err = run(capsys, ["key", "ensure", "--path", str(tmp_path / "k"),
                                  "--owner", "no-such-user-xyz"])
    assert code == ExitCode.USER_MISSING
    assert json.loads(out)["error"] == "user_missing"
    assert err.startswith("ERROR: user_missing: user 'no-such-user-xyz'")


@pytest.mark.parametrize("mode", ["0604", "777", "abc", "06000"])
def test_bad_mode_is_usage(tmp_path, capsys, mode):
    with pytest.raises(SystemExit) as info:
        main(["key", "ensure", "--path", str(tmp_path / "k"), "--mode", mode])
    assert info.value.code == 2


# ---- install -----------------------------------------------------------------------------------

def install_argv(path, mode="0400"):
    return ["key", "install", "--path", str(path), "--owner", ME, "--group", MYG,
            "--mode", mode, "--json"]


def install_stdin(key=KEY, sha=SHA) -> bytes:
    """What the deploy sends: the key in base64, then the SHA-256 it must have."""
    return base64.b64encode(key) + b"\n" + sha.encode() + b"\n"


def test_install(tmp_path, capsys, monkeypatch):
    dest = tmp_path / "copy"
    feed(monkeypatch, install_stdin())
    code, out, _ = run(capsys, install_argv(dest))
    assert code == 0 and json.loads(out) == {"changed": True, "path": str(dest), "sha256": SHA}
    assert dest.read_bytes() == KEY and stat.S_IMODE(os.stat(dest).st_mode) == 0o400
    feed(monkeypatch, install_stdin().rstrip(b"\n"))
    code, out, _ = run(capsys, install_argv(dest))
    assert json.loads(out)["changed"] is False


def test_install_takes_no_digest_in_argv(tmp_path):
    """Any local user reads a command line: the digest travels on stdin only."""
    with pytest.raises(SystemExit) as info:
        main([*install_argv(tmp_path / "copy"), "--expect-sha256", SHA])
    assert info.value.code == 2


def test_install_sha_mismatch_writes_nothing(tmp_path, capsys, monkeypatch):
    dest = tmp_path / "copy"
    feed(monkeypatch, install_stdin(sha="0" * 64))
    code, out, err = run(capsys, install_argv(dest))
    assert code == ExitCode.CHANGE_REFUSED and not dest.exists()
    data = json.loads(out)
    assert (data["error"], data["detail"]) == ("change_refused", "sha256_mismatch")
    assert err.startswith("ERROR: change_refused: ") and "nothing was written" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stdin", [b"", b"not base64 !!!\n" + SHA.encode(), b"QUJD\n",
                                   b"QUJD\nQUJD\nQUJD\n", b"QUJD\nnot-a-digest\n",
                                   b"A" * 70000])
def test_install_bad_stdin(tmp_path, capsys, monkeypatch, stdin):
    feed(monkeypatch, stdin)
    code, out, _ = run(capsys, install_argv(tmp_path / "copy"))
    data = json.loads(out)
    assert code == ExitCode.USAGE and (data["error"], data["detail"]) == ("usage", "bad_input")
    assert "!!!" not in out and not (tmp_path / "copy").exists()


def test_install_short_key(tmp_path, capsys, monkeypatch):
    short = b"s" * 16
    feed(monkeypatch, install_stdin(short, hashlib.sha256(short).hexdigest()))
    code, _out, _ = run(capsys, install_argv(tmp_path / "copy"))
    assert code == ExitCode.KEY_TOO_SHORT and not (tmp_path / "copy").exists()


def test_install_refuses_symlink(tmp_path, capsys, monkeypatch):
    target = tmp_path / "target"
    target.write_bytes(b"t" * 40)
    (tmp_path / "copy").symlink_to(target)
    feed(monkeypatch, install_stdin())
    code, _, err = run(capsys, install_argv(tmp_path / "copy"))
    assert code == ExitCode.KEY_INSECURE and target.read_bytes() == b"t" * 40
    assert "symbolic link" in err


# ---- sync -----------------------------------------------------------------------------------

def test_sync(tmp_path, capsys):
    src = tmp_path / "jwt.key"
    src.write_bytes(KEY)
    os.chmod(src, 0o640)  # Slurm's rule: group allowed
    dest = tmp_path / "copy"
    argv = ["key", "sync", "--source", str(src), "--dest", str(dest), "--owner", ME,
            "--group", MYG]
    code, out, _ = run(capsys, argv)
    assert code == 0 and "updated" in out and dest.read_bytes() == KEY
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o400
    code, out, _ = run(capsys, [*argv, "--json"])
    assert json.loads(out) == {"changed": False, "source": str(src), "dest": str(dest),
                               "sha256": SHA}


@pytest.mark.parametrize(("content", "mode", "code"), [
    (None, 0o600, ExitCode.KEY_MISSING),
    (b"", 0o600, ExitCode.KEY_EMPTY),
    (b"x" * 10, 0o600, ExitCode.KEY_TOO_SHORT),
    (KEY, 0o604, ExitCode.KEY_INSECURE),
])
def test_sync_refuses_bad_source(tmp_path, capsys, content, mode, code):
    src = tmp_path / "jwt.key"
    if content is not None:
        src.write_bytes(content)
        os.chmod(src, mode)
    dest = tmp_path / "copy"
    dest.write_bytes(b"old" * 20)
    rc, out, err = run(capsys, ["key", "sync", "--source", str(src), "--dest", str(dest),
                                "--owner", ME, "--group", MYG, "--json"])
    assert rc == code and dest.read_bytes() == b"old" * 20
    assert json.loads(out)["exit_code"] == code and err.startswith("ERROR: key_")


def test_sync_missing_agent_user(tmp_path, capsys):
    src = tmp_path / "jwt.key"
    src.write_bytes(KEY)
    os.chmod(src, 0o600)
    rc, _, err = run(capsys, ["key", "sync", "--source", str(src), "--dest",
                              str(tmp_path / "copy"), "--owner", "slurm-web-nope",
                              "--group", MYG])
    assert rc == ExitCode.USER_MISSING and "slurm-web-nope" in err


# ---- fingerprint -------------------------------------------------------------------------------

def test_fingerprint(tmp_path, capsys):
    path = tmp_path / "k"
    path.write_bytes(KEY)
    os.chmod(path, 0o400)
    code, out, _ = run(capsys, ["key", "fingerprint", "--path", str(path), "--json"])
    data = json.loads(out)
    assert code == 0 and data["sha256"] == SHA and data["mode"] == "0400" and data["exists"]
    code, out, _ = run(capsys, ["key", "fingerprint", "--path", str(path)])
    assert SHA in out and "0400" in out


def test_fingerprint_missing(tmp_path, capsys):
    code, out, _ = run(capsys, ["key", "fingerprint", "--path", str(tmp_path / "k"), "--json"])
    assert code == 0 and json.loads(out)["exists"] is False


def test_install_creates_missing_parent_only_when_asked(tmp_path, capsys, monkeypatch):
    dest = tmp_path / "spool" / "slurm" / "jwt_hs256.key"
    argv = ["key", "install", "--path", str(dest), "--owner", ME, "--group", MYG,
            "--mode", "0600"]
    feed(monkeypatch, install_stdin())
    code, out, _ = run(capsys, argv)
    assert code == ExitCode.CHANGE_REFUSED and not dest.parent.exists()
    feed(monkeypatch, install_stdin())
    code, out, _ = run(capsys, [*argv, "--create-parent"])
    assert code == 0 and json.loads(out)["changed"] is True
    assert dest.read_bytes() == KEY
    assert stat.S_IMODE(os.stat(dest.parent).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600


# ---- rotate -----------------------------------------------------------------------------------

def test_rotate_keeps_the_previous_key_owner_only_and_installs_a_new_one(tmp_path, capsys):
    path, previous = tmp_path / "jwt.key", tmp_path / "jwt.key.previous"
    path.write_bytes(KEY)
    os.chmod(path, 0o640)
    inode = os.stat(path).st_ino
    code, out, _ = run(capsys, ["key", "rotate", "--path", str(path), "--keep-previous",
                                str(previous), "--owner", ME, "--group", MYG, "--mode", "0640"])
    assert code == 0
    report = json.loads(out)
    assert report["previous_sha256"] == SHA and report["changed"] is True
    new = path.read_bytes()
    assert len(new) == 32 and new != KEY
    assert report["sha256"] == hashlib.sha256(new).hexdigest()
    assert previous.read_bytes() == KEY
    assert stat.S_IMODE(os.stat(previous).st_mode) == 0o600  # owner only
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert os.stat(path).st_ino != inode  # a new file renamed over: Slurm maps the old one


def test_rotate_keeps_the_previous_key_in_a_private_directory_it_creates(tmp_path, capsys):
    path = tmp_path / "spool" / "jwt.key"
    path.parent.mkdir()
    path.write_bytes(KEY)
    os.chmod(path, 0o600)
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    kept = state / "previous" / "key"
    code, out, _ = run(capsys, ["key", "rotate", "--path", str(path), "--keep-previous",
                                str(kept), "--private-dir", "--owner", ME, "--group", MYG])
    assert code == 0, out
    assert kept.read_bytes() == KEY and stat.S_IMODE(os.stat(kept).st_mode) == 0o600
    assert os.stat(kept).st_uid == os.geteuid()  # root's in production, whatever --owner says
    assert stat.S_IMODE(os.stat(kept.parent).st_mode) == 0o700


@pytest.mark.parametrize("attack", ["symlink", "open_to_others", "parent_writable"])
def test_a_private_dir_others_could_enter_is_refused_before_anything_is_kept(tmp_path, capsys,
                                                                            attack):
    """slurm-web (or whoever) must not be able to choose the previous key the proof signs
    with or the rollback installs: the directory holding kept keys is ours, 0700."""
    source = tmp_path / "copy"
    source.write_bytes(KEY)
    os.chmod(source, 0o400)
    state = tmp_path / "state"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    if attack == "symlink":
        state.mkdir(mode=0o700)
        (state / "previous").symlink_to(elsewhere)
    elif attack == "open_to_others":
        state.mkdir(mode=0o700)
        (state / "previous").mkdir()
        os.chmod(state / "previous", 0o733)
    else:
        state.mkdir()
        os.chmod(state, 0o777)
    dest = state / "previous" / "copy"
    code, out, err = run(capsys, ["key", "sync", "--source", str(source), "--dest", str(dest),
                                  "--owner", ME, "--group", MYG, "--mode", "0600",
                                  "--private-dir", "--json"])
    report = json.loads(out)
    assert code == ExitCode.KEY_INSECURE and report["detail"] == "state_dir_insecure"
    assert "not a private directory" in err
    assert list(elsewhere.iterdir()) == [] and not os.path.lexists(dest)


def test_rotate_refuses_a_missing_key_and_the_key_as_its_own_previous(tmp_path, capsys):
    path = tmp_path / "jwt.key"
    code, out, _ = run(capsys, ["key", "rotate", "--path", str(path), "--keep-previous",
                                str(tmp_path / "p"), "--owner", ME, "--group", MYG])
    assert code == ExitCode.KEY_MISSING and json.loads(out)["error"] == "key_missing"
    path.write_bytes(KEY)
    os.chmod(path, 0o600)
    code, _, _ = run(capsys, ["key", "rotate", "--path", str(path), "--keep-previous",
                              str(path), "--owner", ME, "--group", MYG])
    assert code == ExitCode.CHANGE_REFUSED and path.read_bytes() == KEY
