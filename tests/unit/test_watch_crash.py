"""kill -9 in the middle of an install, crash recovery at start-up, and the key never in logs."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import structlog

from tests.unit.test_watch_support import (  # noqa: F401 - autouse: real threads
    AGENT,
    make_harness,
    new_key,
    refuse_gevent_patched_process,
    sha,
    wait_for,
    write_key,
)
from watchdog_daemon.keys.keywrite import TEMP_PREFIX
from watchdog_daemon.system.systemctl import SystemctlError
from watchdog_daemon.watch.state import write_state

REPO = Path(__file__).resolve().parents[2]

# Runs the daemon's install step in a child that SIGKILLs itself at the hook: after the temp
# file got its owner and mode (fchown, fchmod, fsync) and before the rename.
_KILLED_AT_RENAME = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from watchdog_daemon.keys import keywrite
    from watchdog_daemon.watch.keystore import RealKeyStore
    from watchdog_daemon.keys.secret import SecretBytes

    def die(src, dst):
        os.kill(os.getpid(), signal.SIGKILL)

    keywrite.os.rename = die
    key = Path(sys.argv[1]).read_bytes()
    RealKeyStore().install(SecretBytes(key), Path(sys.argv[2]), owner="nobody",
                           group="nogroup", mode=0o400)
""")


def _kill_during_install(key_path: Path, copy_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _KILLED_AT_RENAME, str(key_path),
                           str(copy_path)], cwd=REPO, capture_output=True, timeout=30)
    assert done.returncode == -9, done.stderr


def test_kill9_between_chmod_and_rename_then_startup_syncs_once(tmp_path):
    h = make_harness(tmp_path)
    new = new_key("rotated")
    write_key(h.key_path, new)
    h.slurm.accept_only(new)
    _kill_during_install(h.key_path, h.copy_path)
    # The copy is the old one, whole; the temp file is complete, owner-only, never renamed.
    assert h.copy_path.read_bytes() == h.old_key
    temps = [p for p in h.copy_path.parent.iterdir() if p.name.startswith(TEMP_PREFIX)]
    assert len(temps) == 1
    st = os.stat(temps[0])
    assert stat.S_IMODE(st.st_mode) == 0o400 and st.st_uid == 65534
    try:
        h.start()
        assert wait_for(lambda: h.copy_path.read_bytes() == new and h.systemctl.restarts)
        h.idle()
        assert not [p for p in h.copy_path.parent.iterdir() if p.name.startswith(TEMP_PREFIX)]
        assert h.log.events("stale_temp_removed")[0][1]["files"] == [temps[0].name]
        assert h.systemctl.restarts == [AGENT]
    finally:
        h.stop()


def test_kill9_leftover_when_in_sync_restarts_nothing(tmp_path):
    h = make_harness(tmp_path)
    # The crash happened for a key that is not Slurm's any more (or a copy that was re-synced):
    # a temp file is left, and the copy equals the key.
    other = tmp_path / "other.key"
    other.write_bytes(new_key("other"))
    os.chmod(other, 0o600)
    _kill_during_install(other, h.copy_path)
    try:
        h.start()
        h.idle(0.3)
        assert not [p for p in h.copy_path.parent.iterdir() if p.name.startswith(TEMP_PREFIX)]
        assert h.systemctl.restart_attempts == [] and h.keys.installed == []
        assert h.copy_path.read_bytes() == h.old_key
        assert [n for n in h.log.names() if n != "stale_temp_removed"] == ["watch_started"]
    finally:
        h.stop()


def test_crash_after_install_before_restart_restarts_once_at_startup(tmp_path):
    """Design decision: the owed restart is remembered in the state file (in /run)."""
    h = make_harness(tmp_path)  # copy == key already (installed just before the crash)
    write_state(h.config.state_file, {"pid": 999999, "state": "restart_pending",
                                      "restart_pending": sha(h.old_key)[:12],
                                      "agent_units": [AGENT]})
    try:
        h.start()
        assert wait_for(lambda: h.daemon.pipeline.status.state == "in_sync")
        h.idle()
        assert h.systemctl.restarts == [AGENT]
        assert h.keys.installed == []
        state = json.loads(h.config.state_file.read_text())
        assert state["restart_pending"] is None
    finally:
        h.stop()


def test_stale_pending_marker_for_another_key_is_ignored(tmp_path):
    h = make_harness(tmp_path)
    write_state(h.config.state_file, {"pid": 999999, "restart_pending": "0123456789ab"})
    try:
        h.start()
        h.idle(0.3)
        assert h.systemctl.restart_attempts == []
    finally:
        h.stop()


# ------------------------------------------------------------------------------------------
# The key never reaches a log line, the state file or the metrics.

SENTINEL = b"SENTINEL-KEY-" + bytes(range(200, 232)) + b"-END"


def _forms(key: bytes) -> list[str]:
    return [key.decode("latin-1"), key.hex(), key.hex().upper(), base64.b64encode(key).decode(),
            base64.urlsafe_b64encode(key).decode().rstrip("="), repr(key)[2:-1],
            "SENTINEL-KEY"]


def test_sentinel_key_never_in_logs_state_or_metrics(tmp_path):
    out = io.StringIO()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    try:
        h = make_harness(tmp_path, in_sync=False)
        h.log = None  # the real structlog logger, configured above
        write_key(h.key_path, SENTINEL)
        calls = {"verify": 0, "install": 0, "restart": 0, "check": 0}

        def verify(key):
            calls["verify"] += 1
            raw = key.reveal()
            if calls["verify"] <= 2:
                # A library echoing its input: raw bytes, hex, base64 in the message.
                raise ValueError(f"bad key {raw!r} {raw.hex()} {base64.b64encode(raw)!r}")
            return h.slurm.verify(key)

        def failing_install(secret):
            calls["install"] += 1
            if calls["install"] == 1:
                raise RuntimeError(f"disk error while writing {secret.reveal().hex()}")

        def agent_check():
            calls["check"] += 1
            if calls["check"] == 1:
                raise OSError(f"socket broke {SENTINEL!r}")
            return h.slurm.agent_check()

        h.slurm.accept_only(SENTINEL)
        h.keys.fail_install = failing_install
        daemon = h.build()
        daemon.pipeline.verifier = verify
        daemon.pipeline.agent_check = agent_check
        real_restart = h.systemctl.restart

        def restart(unit, *, timeout):
            calls["restart"] += 1
            if calls["restart"] == 1:
                raise SystemctlError(f"Job failed: {SENTINEL.hex()}")
            real_restart(unit, timeout=timeout)

        h.systemctl.restart = restart
        daemon.pipeline.restart_spacing = 0.0
        h.start()
        assert wait_for(lambda: daemon.pipeline.status.state == "in_sync", timeout=10), \
            daemon.pipeline.status
        h.stop()
        logs = out.getvalue()
        assert "unexpected_error" in logs or "verify_failed" in logs  # the faults were logged
        assert "agent_restart_failed" in logs and "synced" in logs
        state_text = h.config.state_file.read_text()
        metrics_text = daemon.metrics.render()
        for form in _forms(SENTINEL):
            assert form not in logs, form
            assert form not in state_text, form
            assert form not in metrics_text, form
        assert sha(SENTINEL)[:12] in logs  # the fingerprint is what identifies it
    finally:
        structlog.reset_defaults()


def test_copy_owner_removed_after_start_is_reported_not_crashed(tmp_path):
    from dataclasses import replace

    h = make_harness(tmp_path, in_sync=False)
    h.config = replace(h.config, copy_owner="no-such-user-xyz")
    try:
        h.start()
        assert wait_for(lambda: h.daemon.pipeline.status.reason == "user_missing")
        assert h.keys.installed == [] and h.systemctl.restart_attempts == []
        assert h.thread.is_alive()
    finally:
        h.stop()


# ------------------------------------------------------------------------------------------
# A runtime I/O error never ends the daemon with the configuration's exit code, which the unit
# does not restart (RestartPreventExitStatus=): it is logged and retried, and if it persists
# the daemon exits with a code systemd restarts.


def _restart_prevented() -> set[int]:
    from watchdog_daemon.watch.unit import render_unit

    line = next(x for x in render_unit().splitlines() if x.startswith("RestartPreventExitStatus="))
    return {int(v) for v in line.split("=", 1)[1].split()}


def test_a_passing_io_error_in_the_main_loop_is_logged_and_retried(tmp_path):
    import errno

    h = make_harness(tmp_path)
    daemon = h.build()
    real_check = daemon.watcher.check
    failures = {"left": 3}

    def check():
        if failures["left"]:
            failures["left"] -= 1
            raise OSError(errno.EIO, "Input/output error")
        return real_check()

    daemon.watcher.check = check
    try:
        h.start()
        assert wait_for(lambda: failures["left"] == 0 and len(h.log.events("runtime_io_error"))
                        == 3)
        assert h.thread.is_alive()
        # Still doing its job afterwards.
        new = new_key("after-eio")
        h.slurm.accept_only(new)
        write_key(h.key_path, new)
        assert wait_for(lambda: h.copy_path.read_bytes() == new and h.systemctl.restarts)
        _, fields = h.log.events("runtime_io_error")[0]
        assert fields["attempt"] == 1 and "Input/output error" in json.dumps(fields)
    finally:
        h.stop()


def test_a_lasting_io_error_exits_with_a_code_systemd_restarts(tmp_path, monkeypatch):
    import argparse
    import errno

    from watchdog_daemon.exitcodes import ExitCode
    from watchdog_daemon.watch import cli as watch_cli
    from watchdog_daemon.watch import daemon as watchdaemon

    h = make_harness(tmp_path)
    daemon = h.build()

    def check():
        raise OSError(errno.ENOSPC, "No space left on device")

    daemon.watcher.check = check
    monkeypatch.setattr(watchdaemon, "MAX_LOOP_ERRORS", 5)
    # Through the real `watch` command, with this daemon and this config.
    monkeypatch.setattr(watch_cli, "load_watch_config", lambda path: h.config)
    monkeypatch.setattr(watch_cli, "validate", lambda config: None)
    monkeypatch.setattr(watch_cli, "configure_logging", lambda: None)
    monkeypatch.setattr(watchdaemon, "WatchDaemon", lambda config: _NoSignals(daemon))
    code = watch_cli.cmd_watch(argparse.Namespace(config=None, print_unit=False,
                                                  check_config=False))
    assert code == ExitCode.IO_ERROR
    assert code not in _restart_prevented()
    assert len(h.log.events("runtime_io_error")) == 5


def test_only_a_configuration_that_cannot_work_at_start_stops_for_good(tmp_path, monkeypatch):
    import argparse
    import socket
    from dataclasses import replace

    from watchdog_daemon.exitcodes import ExitCode
    from watchdog_daemon.watch import cli as watch_cli
    from watchdog_daemon.watch import daemon as watchdaemon

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        h = make_harness(tmp_path)
        h.config = replace(h.config, metrics=("127.0.0.1", taken.getsockname()[1]))
        monkeypatch.setattr(watch_cli, "load_watch_config", lambda path: h.config)
        monkeypatch.setattr(watch_cli, "validate", lambda config: None)
        monkeypatch.setattr(watch_cli, "configure_logging", lambda: None)
        monkeypatch.setattr(watchdaemon, "WatchDaemon", lambda config: _NoSignals(h.build()))
        code = watch_cli.cmd_watch(argparse.Namespace(config=None, print_unit=False,
                                                      check_config=False))
    finally:
        taken.close()
    assert code == ExitCode.CONFIG_INVALID and code in _restart_prevented()


class _NoSignals:
    """The harness's daemon, run by cmd_watch without taking over the test's signal handlers."""

    def __init__(self, daemon) -> None:
        self.daemon = daemon

    def run(self) -> int:
        return self.daemon.run(install_signals=False)
