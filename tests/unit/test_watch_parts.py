"""The watch daemon's small pure parts: config, backoff, budget, circuit, sd_notify, systemctl,
unit selection, metrics, redaction, event classification, trigger coalescing, the unit file."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from watchdog.events import (
    DirDeletedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
)

from tests.unit.test_watch_support import (  # noqa: F401 - autouse: real threads
    refuse_gevent_patched_process,
)
from watchdog_daemon.keys.secret import SecretBytes
from watchdog_daemon.system.agentunits import agent_units_in_use
from watchdog_daemon.system.systemctl import (
    SubprocessSystemctl,
    SystemctlError,
    UnitState,
    wait_active,
)
from watchdog_daemon.watch.backoff import Backoff
from watchdog_daemon.watch.circuit import CircuitBreaker, CircuitState
from watchdog_daemon.watch.config import (
    WatchConfig,
    WatchConfigError,
    config_from_mapping,
    load_watch_config,
)
from watchdog_daemon.watch.events import classify
from watchdog_daemon.watch.log import Redactor, describe_exc
from watchdog_daemon.watch.metrics import Metrics, MetricsServer
from watchdog_daemon.watch.sdnotify import Notifier
from watchdog_daemon.watch.trigger import Trigger
from watchdog_daemon.watch.unit import packaged_unit_path, render_unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- config ------------------------------------------------------------------------------------

def test_missing_default_file_means_defaults(monkeypatch, tmp_path):
    monkeypatch.setattr("watchdog_daemon.watch.config.DEFAULT_CONFIG_PATH", tmp_path / "none")
    cfg = load_watch_config()
    assert cfg == WatchConfig()
    assert cfg.key_path == Path("/var/spool/slurm/jwt_hs256.key")
    assert cfg.copy_path == Path("/var/lib/slurm-web/slurmrestd.key")
    assert (cfg.copy_owner, cfg.copy_group, cfg.copy_mode) == ("slurm-web", "slurm-web", 0o400)
    assert cfg.metrics is None and cfg.agent_units is None


def test_explicit_missing_file_is_an_error(tmp_path):
    with pytest.raises(WatchConfigError, match="no such file"):
        load_watch_config(tmp_path / "nope.toml")


def test_full_config(tmp_path):
    p = tmp_path / "w.toml"
    p.write_text('copy_mode = "0400"\nagent_units = ["slurm-web-agent-uwsgi.service"]\n'
                 'metrics = "localhost:9812"\nreconcile_interval = 10\nquiet = 0\n')
    cfg = load_watch_config(p)
    assert cfg.agent_units == ("slurm-web-agent-uwsgi.service",)
    assert cfg.metrics == ("127.0.0.1", 9812)
    assert cfg.reconcile_interval == 10.0 and cfg.quiet == 0.0
    assert cfg.config_path == p


@pytest.mark.parametrize(("data", "match"), [
    ({"quiet": "fast"}, "seconds"),
    ({"quiet": True}, "seconds"),
    ({"reconcile_interval": 0}, "positive"),
    ({"copy_mode": 0o440}, "owner-only"),
    ({"copy_mode": "rw"}, "octal"),
    ({"metrics": "0.0.0.0:9812"}, "loopback"),
    ({"metrics": "10.1.2.3:9812"}, "loopback"),
    ({"metrics": "127.0.0.1:99999"}, "port"),
    ({"key_path": "relative/key"}, "absolute"),
    ({"agent_units": ["slurm-web-agent"]}, ".service"),
    ({"circuit_threshold": 0}, ">= 1"),
    ({"probe_interval": 0}, "positive"),
    ({"accounting": "maybe"}, "auto"),
    ({"colaesce": 1}, "unknown"),
    ({"copy_path": "/var/spool/slurm/copy.key"}, "key's directory"),
    ({"backoff_base": 10, "backoff_cap": 1}, "backoff_cap"),
])
def test_bad_values_are_clear_errors(data, match):
    with pytest.raises(WatchConfigError, match=match):
        config_from_mapping(data)


def test_removed_restart_budget_is_accepted_with_a_warning(tmp_path):
    """A watch.toml from an older version must not stop the daemon (exit 10 = no watchdog and
    the agent left on a refused key at the next rotation): ignored, and said so."""
    p = tmp_path / "w.toml"
    p.write_text("restart_budget = 3\nrestart_window = 600\nrestart_spacing = 30\n")
    cfg = load_watch_config(p)
    assert not hasattr(cfg, "restart_budget")
    assert cfg.restart_spacing == 10.0  # clamped: a few seconds at most
    assert len(cfg.warnings) == 3
    assert "restart_budget is ignored" in cfg.warnings[0]
    assert "restart_spacing = 30 s" in cfg.warnings[2]
    assert config_from_mapping({}).warnings == ()
    assert WatchConfig().restart_spacing <= 3.0 and WatchConfig().probe_interval <= 1.0


def test_invalid_toml(tmp_path):
    p = tmp_path / "w.toml"
    p.write_text("quiet = \n")
    with pytest.raises(WatchConfigError, match="not valid TOML"):
        load_watch_config(p)


# -- backoff, budget, circuit ------------------------------------------------------------------

def test_backoff_is_capped_exponential_with_jitter():
    b = Backoff(1.0, 8.0, rand=lambda: 1.0)
    assert [b.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    b.reset()
    low = Backoff(1.0, 8.0, rand=lambda: 0.0)
    assert [low.next_delay() for _ in range(3)] == [0.5, 1.0, 2.0]
    many = Backoff(1.0, 30.0, rand=lambda: 0.5)
    for _ in range(10_000):  # months of retries: no overflow
        assert many.next_delay() <= 30.0


def test_circuit_opens_half_opens_and_closes():
    clock = Clock()
    c = CircuitBreaker(3, 600.0, clock=clock)
    assert not c.record_failure() and not c.record_failure()
    assert c.record_failure() and c.state is CircuitState.OPEN and not c.allows()
    clock.now += 600
    assert c.state is CircuitState.HALF_OPEN and c.allows()
    assert c.record_failure() and c.state is CircuitState.OPEN  # trial failed: open again
    clock.now += 600
    c.record_success()
    assert c.state is CircuitState.CLOSED and c.failures == 0


def test_circuit_trial_now_for_a_new_key():
    clock = Clock()
    c = CircuitBreaker(1, 600.0, clock=clock)
    c.trial_now()  # closed: nothing to do
    assert c.state is CircuitState.CLOSED
    assert c.record_failure() and not c.allows()
    clock.now += 5
    c.trial_now()
    assert c.state is CircuitState.HALF_OPEN and c.allows()
    assert c.record_failure() and c.state is CircuitState.OPEN
    assert c.seconds_until_trial() == pytest.approx(600.0)


# -- sd_notify ---------------------------------------------------------------------------------

def test_notify_abstract_socket_and_watchdog_interval():
    name = f"watch-test-{os.getpid()}-{time.monotonic_ns()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    server.settimeout(2)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "30000000"})
        assert n.watchdog_interval == 15.0
        assert n.ready("in sync\n(key sha256:abc)")
        assert server.recv(4096) == b"READY=1\nSTATUS=in sync (key sha256:abc)"
        assert n.watchdog()
        assert server.recv(4096) == b"WATCHDOG=1"
    finally:
        server.close()


def test_notify_is_a_noop_outside_systemd_and_never_blocks(tmp_path):
    assert Notifier({}).notify("READY=1") is False
    assert Notifier({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(tmp_path / "n.sock"))
    try:
        n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "n.sock")})
        start = time.monotonic()
        results = [n.watchdog() for _ in range(2000)]  # nobody reads: the queue fills up
        assert time.monotonic() - start < 2 and not all(results)
    finally:
        server.close()


# -- systemctl and unit selection ---------------------------------------------------------------

def _runner(outputs):
    calls = []

    def run(argv, timeout):
        calls.append(argv)
        rc, out, err = outputs(argv)
        return subprocess.CompletedProcess(argv, rc, out, err)

    return run, calls


def test_systemctl_show_and_restart_parse():
    run, calls = _runner(lambda argv: (0, "LoadState=loaded\nActiveState=active\n"
                                          "UnitFileState=enabled\n", "")
                         if argv[1] == "show" else (1, "", "Job for x failed.\nSee log.\n"))
    sc = SubprocessSystemctl(runner=run)
    state = sc.show("slurm-web-agent.service")
    assert state == UnitState("slurm-web-agent.service", "loaded", "active", "enabled")
    assert state.running and not state.masked
    with pytest.raises(SystemctlError, match="See log"):
        sc.restart("x.service", timeout=5)
    assert calls[-1][:3] == ["/usr/bin/systemctl", "restart", "--no-ask-password"]


def test_systemctl_timeout_is_an_error():
    def run(argv, timeout):
        raise subprocess.TimeoutExpired(argv, timeout)

    with pytest.raises(SystemctlError, match="TimeoutExpired"):
        SubprocessSystemctl(runner=run).show("x.service")


class _Units:
    def __init__(self, states):
        self.states = states

    def show(self, unit):
        if unit not in self.states:
            raise SystemctlError("no such unit")
        load, active, ufs = self.states[unit]
        return UnitState(unit, load, active, ufs)

    def restart(self, unit, *, timeout):
        pass


@pytest.mark.parametrize(("states", "chosen"), [
    ({"slurm-web-agent.service": ("loaded", "active", "enabled")}, ["slurm-web-agent.service"]),
    ({"slurm-web-agent.service": ("masked", "inactive", "masked"),
      "slurm-web-agent-uwsgi.service": ("loaded", "active", "enabled")},
     ["slurm-web-agent-uwsgi.service"]),
    # Enabled but down (the agent exits without its key copy): in use, to be restarted.
    ({"slurm-web-agent.service": ("loaded", "failed", "enabled"),
      "slurm-web-agent-uwsgi.service": ("not-found", "inactive", "")},
     ["slurm-web-agent.service"]),
    # Stopped and disabled on purpose: not ours to start.
    ({"slurm-web-agent.service": ("loaded", "inactive", "disabled"),
      "slurm-web-agent-uwsgi.service": ("not-found", "inactive", "")}, []),
    ({}, []),
])
def test_agent_unit_in_use(states, chosen):
    assert agent_units_in_use(_Units(states), None)[0] == chosen


def test_configured_unit_errors_propagate():
    with pytest.raises(SystemctlError):
        agent_units_in_use(_Units({}), ["custom-agent.service"])


def test_wait_active():
    seq = iter(["activating", "activating", "active"])
    sc = _Units({})
    sc.show = lambda unit: UnitState(unit, "loaded", next(seq), "enabled")
    assert wait_active(sc, "a.service", timeout=5, sleep=lambda s: None).active_state == "active"
    sc.show = lambda unit: UnitState(unit, "loaded", "failed", "enabled")
    with pytest.raises(SystemctlError, match="failed"):
        wait_active(sc, "a.service", timeout=5, sleep=lambda s: None)


# -- metrics -----------------------------------------------------------------------------------

def test_metrics_text_and_loopback_server():
    m = Metrics()
    m.inc("detections_total", via="events")
    m.inc("detections_total", via="events")
    m.inc("syncs_total")
    m.set("last_success_timestamp_seconds", 1764140000.5)
    text = m.render()
    assert 'slurmrestd_access_watch_detections_total{via="events"} 2' in text
    assert "# TYPE slurmrestd_access_watch_syncs_total counter" in text
    assert "slurmrestd_access_watch_last_success_timestamp_seconds 1764140000.5" in text
    server = MetricsServer(m, "127.0.0.1", 0)
    server.start()
    try:
        host, port = server.address
        body = urllib.request.urlopen(
            f"http://{host}:{port}/metrics", timeout=5).read().decode()
        assert body == m.render()
    finally:
        server.stop()


# -- redaction ---------------------------------------------------------------------------------

def test_redactor_and_describe_exc():
    key = SecretBytes(b"R" * 8 + bytes(range(40)))
    r = Redactor()
    r.add(key)
    raw = key.reveal()
    text = f"a {raw!r} b {raw.hex()} c {raw.hex().upper()}"
    scrubbed = r.scrub(text)
    assert raw.hex() not in scrubbed and raw.hex().upper() not in scrubbed
    assert f"<redacted sha256:{key.fingerprint}>" in scrubbed
    try:
        secret_local = raw  # noqa: F841 - must not show up: describe_exc has no locals
        raise ValueError(f"boom {raw.hex()}")
    except ValueError as exc:
        info = describe_exc(exc, r)
    assert raw.hex() not in str(info) and info["error_type"] == "ValueError"
    assert "test_watch_parts.py" in info["where"]
    assert r.scrub_value(b"raw bytes") == "<9 bytes>"


# -- events and trigger ------------------------------------------------------------------------

K, D = "/s/jwt_hs256.key", "/s"


@pytest.mark.parametrize(("event", "expected"), [
    (FileMovedEvent("/s/.tmp", K), False),
    (FileMovedEvent(K, "/s/old"), False),
    (FileMovedEvent("/s/.a", "/s/.b"), None),
    (FileCreatedEvent(K), True),
    (FileModifiedEvent(K), True),
    (FileClosedEvent(K), True),
    (FileDeletedEvent(K), False),
    (FileAttribEvent(K), False),
    (FileOpenedEvent(K), None),  # our own reads must not trigger runs
    (FileClosedNoWriteEvent(K), None),
    (FileModifiedEvent("/s/other"), None),
    (DirDeletedEvent(D), False),
    (DirDeletedEvent("/s/sub"), None),
])
def test_classify(event, expected):
    assert classify(event, K, D) is expected


def test_trigger_settle_waits_for_the_burst_to_end():
    t = Trigger()
    stop = threading.Event()
    t.fire("events")

    def burst():
        for _ in range(4):
            time.sleep(0.05)
            t.fire("events")

    th = threading.Thread(target=burst)
    start = time.monotonic()
    th.start()
    t.settle(0.15, 5.0, stop)
    elapsed = time.monotonic() - start
    th.join()
    assert 0.3 <= elapsed < 1.0
    batch = t.take()
    assert batch.vias == {"events"} and not t.pending


def test_trigger_settle_is_capped():
    t = Trigger()
    stop = threading.Event()
    keep = threading.Event()

    def forever():
        while not keep.is_set():
            t.fire("events", in_place=True)
            time.sleep(0.02)

    th = threading.Thread(target=forever)
    th.start()
    start = time.monotonic()
    t.settle(0.1, 0.4, stop)
    keep.set()
    th.join()
    assert time.monotonic() - start < 0.6
    assert t.take().in_place


# -- the unit file -----------------------------------------------------------------------------

def test_packaged_unit_is_the_rendered_default():
    assert packaged_unit_path().read_text() == render_unit(WatchConfig())


def test_unit_has_the_required_settings():
    text = render_unit()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure",
                 "ExecStart=/usr/local/bin/slurmrestd-access watch",
                 "ExecReload=/bin/kill -HUP $MAINPID", "ProtectSystem=strict",
                 "ReadWritePaths=-/var/lib/slurm-web", "RuntimeDirectory=slurmrestd-access",
                 "ProtectHome=yes", "PrivateTmp=yes", "NoNewPrivileges=yes",
                 "CapabilityBoundingSet=CAP_CHOWN CAP_FOWNER CAP_DAC_READ_SEARCH "
                 "CAP_DAC_OVERRIDE", "UMask=0077", "LimitCORE=0",
                 "RestrictAddressFamilies=AF_UNIX\n", "ProtectKernelTunables=yes",
                 "LockPersonality=yes", "MemoryDenyWriteExecute=yes",
                 "SystemCallArchitectures=native", "ProtectProc=invisible", "ProcSubset=pid",
                 "LimitNOFILE=512", "TasksMax=64", "MemoryMax=256M", "IPAddressDeny=any\n"):
        assert line in text, line
    assert "IPAddressAllow" not in text and "AF_INET" not in text


def test_inet_is_allowed_only_for_the_metrics():
    from watchdog_daemon.watch.config import WatchConfig

    text = render_unit(WatchConfig(metrics=("127.0.0.1", 9812)))
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n" in text
    assert "IPAddressDeny=any\nIPAddressAllow=localhost\n" in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    unit = tmp_path / "slurmrestd-access-watch.service"
    fake_exec = tmp_path / "slurmrestd-access"
    fake_exec.write_text("#!/bin/sh\n")
    fake_exec.chmod(0o755)
    unit.write_text(render_unit(exec_path=str(fake_exec)))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60)
    problems = [line for line in done.stderr.splitlines() if unit.name in line]
    assert not problems, done.stderr


_UNDER_MDWE = r"""
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN (Linux >= 6.3)
    print("unsupported"); sys.exit(0)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    print("not enforced"); sys.exit(0)
except OSError:
    pass
import tempfile, time
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer
import jwt, requests_unixsocket, structlog
import watchdog_daemon.watch.daemon, watchdog_daemon.watch.verify, watchdog_daemon.check.run
o = Observer(); o.schedule(FileSystemEventHandler(), tempfile.gettempdir()); o.start(); o.stop()
jwt.encode({"sun": "x"}, b"k" * 32, algorithm="HS256")
print("ok")
"""


def test_daemon_code_runs_under_memory_deny_write_execute():
    """The unit sets MemoryDenyWriteExecute=yes: the kernel's MDWE (same effect) must not break
    the imports, ctypes (watchdog's inotify) or signing."""
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _UNDER_MDWE], cwd=repo, capture_output=True,
                          text=True, timeout=60)
    if done.stdout.strip() in ("unsupported", "not enforced"):
        pytest.skip(f"kernel MDWE {done.stdout.strip()}")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
