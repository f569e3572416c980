"""A sentinel key never reaches reprs, exception messages, CLI output or structlog output."""

from __future__ import annotations

import base64
import io
import json
import os
import sys

import pytest
import structlog

from tests.fakes.fake_slurmrestd import FakeSlurmrestd, make_stale_socket
from watchdog_daemon.check.run import run_check, run_check_with_key
from watchdog_daemon.cli import main
from watchdog_daemon.config.agentconf import AgentSettings
from watchdog_daemon.keys import keyfile
from watchdog_daemon.keys.keyfile import KeyFileError, read_key
from watchdog_daemon.keys.keywrite import install_key_atomically
from watchdog_daemon.keys.secret import SecretBytes
from watchdog_daemon.logging_setup import configure_logging, get_logger

SENTINEL = b"SENTINEL-7f3a9c-do-not-leak-" + b"Z" * 12
SHORT_SENTINEL = b"SENTINEL-short"
FORMS = [
    "SENTINEL",
    SENTINEL.hex(),
    base64.b64encode(SENTINEL).decode(),
    base64.b64encode(SHORT_SENTINEL).decode(),
    SHORT_SENTINEL.hex(),
    "eyJ",  # any JWT (our tokens) starts so
]


def assert_clean(*texts: object) -> None:
    for text in texts:
        rendered = text if isinstance(text, str) else repr(text)
        for form in FORMS:
            assert form not in rendered, f"{form!r} leaked into: {rendered[:300]}"


def exc_texts(exc: BaseException) -> list[str]:
    texts = [str(exc), repr(exc), repr(exc.args)]
    for name in ("message", "hint"):
        if hasattr(exc, name):
            texts.append(str(getattr(exc, name)))
    return texts


def test_reprs():
    s = SecretBytes(SENTINEL)
    assert_clean(repr(s), str(s), f"{s}", f"{s!r}", repr([s]), repr({"k": s}))


# ---- keyfile exceptions ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("content", "mode", "kw"),
    [
        (SHORT_SENTINEL, 0o600, {}),
        (SENTINEL, 0o644, {}),
        (SENTINEL, 0o604, {"allow_group": True}),
        (b"", 0o600, {}),
    ],
    ids=["short", "group_other", "other", "empty"],
)
def test_read_key_errors(tmp_path, content, mode, kw):
    path = tmp_path / "k"
    path.write_bytes(content)
    os.chmod(path, mode)
    with pytest.raises(KeyFileError) as info:
        read_key(path, **kw)
    assert_clean(*exc_texts(info.value))


def test_unstable_error(tmp_path, monkeypatch):
    path = tmp_path / "k"
    path.write_bytes(SENTINEL)
    os.chmod(path, 0o600)
    real = keyfile._read_fd

    def grow(fd, limit):
        data = real(fd, limit)
        with open(path, "ab") as f:
            f.write(SENTINEL)
        return data

    monkeypatch.setattr(keyfile, "_read_fd", grow)
    with pytest.raises(KeyFileError) as info:
        read_key(path)
    assert_clean(*exc_texts(info.value))


def test_install_errors(tmp_path, monkeypatch):
    s = SecretBytes(SENTINEL)
    with pytest.raises(KeyFileError) as info:
        install_key_atomically(s, tmp_path / "nodir" / "k", owner=0, group=0)
    assert_clean(*exc_texts(info.value))
    with pytest.raises(KeyFileError) as info:
        install_key_atomically(s, tmp_path / "k", owner="no-such-user-xyz", group=0)
    assert_clean(*exc_texts(info.value))

    def boom(*_a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "rename", boom)
    with pytest.raises(KeyFileError) as info:
        install_key_atomically(s, tmp_path / "k", owner=os.geteuid(), group=os.getegid())
    assert_clean(*exc_texts(info.value))


# ---- check results, every failure path ----------------------------------------------------

@pytest.fixture
def env(tmp_path):
    key = tmp_path / "agent.key"
    key.write_bytes(SENTINEL)
    os.chmod(key, 0o400)
    sock = tmp_path / "s.sock"
    conf = tmp_path / "slurm.conf"
    conf.write_text("AccountingStorageType=accounting_storage/slurmdbd\n")
    ini = tmp_path / "agent.ini"
    ini.write_text(f"[service]\ncluster=hpc\n[slurmrestd]\nuri=unix://{sock}\njwt_key={key}\n")
    return AgentSettings(cluster="hpc", uri=f"unix://{sock}", jwt_key=key), sock, conf, ini


SCENARIOS = {
    "rejected_by_slurmctld": {"slurmctld_key": b"x" * 40},
    "rejected_by_slurmdbd": {"slurmctld_key": SENTINEL, "slurmdbd_key": b"x" * 40},
    "no_api_version": {"slurmctld_key": SENTINEL, "versions": ("0.0.30",)},
    "slurmrestd_error": {"slurmctld_key": SENTINEL, "mode": "garbage_diag"},
    "token_not_verified": {"slurmctld_key": b"x" * 40, "mode": "accept_any_token"},
    "controller_unreachable": {"slurmctld_key": SENTINEL, "mode": "controller_unreachable",
                               "unreachable_delay": 0.01},
    "slurmdbd_unreachable": {"slurmctld_key": SENTINEL, "mode": "slurmdbd_unreachable",
                             "unreachable_delay": 0.01},
    "ok": {"slurmctld_key": SENTINEL},
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_check_results_and_cli_output(env, scenario, capsys):
    settings, sock, conf, ini = env
    with FakeSlurmrestd(sock, **SCENARIOS[scenario]):
        r = run_check(settings, slurm_conf=conf, timeout=3)
        assert r.reason == scenario
        assert_clean(repr(r), json.dumps(r.to_dict()))
        r2 = run_check_with_key(settings, SecretBytes(SENTINEL), slurm_conf=conf, timeout=3)
        assert_clean(repr(r2))
        for extra in ([], ["--json"]):
            main(["check", "--agent-ini", str(ini), "--slurm-conf", str(conf), "--timeout", "3",
                  *extra])
            out, err = capsys.readouterr()
            assert_clean(out, err)


@pytest.mark.parametrize("problem", ["missing_socket", "stale_socket", "short_key",
                                     "insecure_key", "bad_ini"])
def test_check_cli_other_failures(env, problem, capsys):
    settings, sock, conf, ini = env
    if problem == "stale_socket":
        make_stale_socket(sock)
    elif problem == "short_key":
        settings.jwt_key.unlink()
        settings.jwt_key.write_bytes(SHORT_SENTINEL)
        os.chmod(settings.jwt_key, 0o400)
    elif problem == "insecure_key":
        os.chmod(settings.jwt_key, 0o644)
    elif problem == "bad_ini":
        ini.write_text("[service]\nSENTINEL-garbage\n")
    for extra in ([], ["--json"]):
        code = main(["check", "--agent-ini", str(ini), "--slurm-conf", str(conf), *extra])
        out, err = capsys.readouterr()
        assert code != 0
        assert_clean(out, err)


# ---- key CLI failure paths ---------------------------------------------------------------------

def _stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


@pytest.mark.parametrize("case", ["mismatch", "bad_base64", "two_lines", "short", "symlink",
                                  "no_user"])
def test_key_install_failures(tmp_path, monkeypatch, capsys, case):
    dest = tmp_path / "copy"
    sha = SecretBytes(SENTINEL).sha256
    owner = str(os.geteuid())
    data = base64.b64encode(SENTINEL) + b"\n"
    if case == "mismatch":
        sha = "0" * 64
    elif case == "bad_base64":
        data = b"SENTINEL!!" + base64.b64encode(SENTINEL)
    elif case == "two_lines":
        data = data + data + data
    elif case == "short":
        data = base64.b64encode(SHORT_SENTINEL)
        sha = SecretBytes(SHORT_SENTINEL).sha256
    elif case == "symlink":
        dest.symlink_to(tmp_path / "elsewhere")
    elif case == "no_user":
        owner = "no-such-user-xyz"
    _stdin(monkeypatch, data.rstrip(b"\n") + b"\n" + sha.encode() + b"\n")
    code = main(["key", "install", "--path", str(dest), "--owner", owner, "--group",
                 str(os.getegid()), "--json"])
    out, err = capsys.readouterr()
    assert code != 0
    assert_clean(out, err)


def test_key_sync_and_fingerprint_failures(tmp_path, capsys):
    src = tmp_path / "jwt.key"
    src.write_bytes(SENTINEL)
    os.chmod(src, 0o606)
    for extra in ([], ["--json"]):
        code = main(["key", "sync", "--source", str(src), "--dest", str(tmp_path / "c"),
                     "--owner", str(os.geteuid()), "--group", str(os.getegid()), *extra])
        assert code != 0
        main(["key", "fingerprint", "--path", str(src), *extra])
        out, err = capsys.readouterr()
        assert_clean(out, err)


# ---- structlog ---------------------------------------------------------------------------------

def _fails_while_holding_the_key(secret: SecretBytes) -> None:
    key_bytes = secret.reveal()  # a local holding the key, as real code has
    key_text = key_bytes.decode("latin-1")
    if key_bytes and key_text:
        raise RuntimeError("signing failed")


def _log_exception(stream: io.StringIO) -> str:
    configure_logging(stream=stream)
    log = get_logger("test")
    try:
        _fails_while_holding_the_key(SecretBytes(SENTINEL))
    except RuntimeError:
        log.exception("sync_failed", key=SecretBytes(SENTINEL), raw=SENTINEL)
    return stream.getvalue()


def test_structlog_exception_without_locals():
    try:
        output = _log_exception(io.StringIO())
    finally:
        structlog.reset_defaults()
    event = json.loads(output.strip().splitlines()[-1])
    assert event["event"] == "sync_failed" and "exception" in event
    assert "signing failed" in output  # the traceback is there...
    assert_clean(output)  # ...without the key in any form
    assert event["raw"] == f"<{len(SENTINEL)} bytes>"


def test_structlog_default_would_leak():
    """Why show_locals=False matters: structlog's default dict tracebacks carry locals."""
    stream = io.StringIO()
    structlog.configure(
        processors=[structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(file=stream),
    )
    try:
        try:
            _fails_while_holding_the_key(SecretBytes(SENTINEL))
        except RuntimeError:
            structlog.get_logger().exception("sync_failed")
    finally:
        structlog.reset_defaults()
    assert "SENTINEL" in stream.getvalue()
