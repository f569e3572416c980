"""`slurmrestd-access watch` as a process: real check against the fake slurmrestd, sd_notify on a
socket standing in for systemd, SIGHUP, SIGTERM, `status`, metrics, and start-up errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.fakes.fake_slurmrestd import FakeSlurmrestd
from tests.fakes.fake_systemctl import now_us, set_unit, write_units
from tests.unit.test_watch_support import (  # noqa: F401 - autouse: real threads
    AGENT,
    install_copy,
    new_key,
    refuse_gevent_patched_process,
    wait_for,
    write_key,
)
from watchdog_daemon.exitcodes import ExitCode
from watchdog_daemon.keys.keywrite import TEMP_PREFIX

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 30
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "watchdog_daemon.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def site(tmp_path):
    key_dir, copy_dir = tmp_path / "spool", tmp_path / "lib"
    key_dir.mkdir()
    copy_dir.mkdir()
    old = new_key("old")
    key, copy = key_dir / "jwt_hs256.key", copy_dir / "slurmrestd.key"
    write_key(key, old)
    install_copy(copy, old)
    sock = tmp_path / "rest.sock"
    (tmp_path / "agent.ini").write_text(
        f"[service]\ncluster = hpc\n\n[slurmrestd]\nuri = unix://{sock}\njwt_key = {copy}\n")
    port = _free_port()
    (tmp_path / "watch.toml").write_text(
        f'key_path = "{key}"\ncopy_path = "{copy}"\ncopy_owner = "nobody"\n'
        f'copy_group = "nogroup"\nagent_ini = "{tmp_path / "agent.ini"}"\n'
        f'state_file = "{tmp_path / "run" / "state.json"}"\nreconcile_interval = 2\n'
        f'accounting = "yes"\ncheck_timeout = 3\nmetrics = "127.0.0.1:{port}"\n'
        f'health_interval = 1\nslurmweb_release = "6.0"\n')
    # The agent, running since after its copy was written, as fake_systemctl tells it.
    units = tmp_path / "units.json"
    write_units(units, {AGENT: {"active": "active", "unit_file": "enabled",
                                "started_us": now_us()}})
    with FakeSlurmrestd(sock, slurmctld_key=old) as fake:
        yield {"root": tmp_path, "key": key, "copy": copy, "old": old, "fake": fake,
               "port": port, "config": tmp_path / "watch.toml", "units": units}


def _terminate(proc: subprocess.Popen) -> str:
    """SIGTERM, as systemd stops it; its stderr (the JSON events)."""
    proc.send_signal(signal.SIGTERM)
    try:
        _out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate()
    return err


def _watch(site, **popen: object) -> subprocess.Popen:
    """The daemon as a process, with fake_systemctl as its systemctl."""
    return subprocess.Popen([sys.executable, "-m", "tests.fakes.fake_systemctl", "run",
                             str(site["units"]), "--", "watch", "--config",
                             str(site["config"])], cwd=REPO, text=True, **popen)


def test_watch_process_notify_rotate_hup_status_metrics_term(site):
    root = site["root"]
    notify_path = root / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(0.2)
    env = dict(os.environ, NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="400000")
    proc = _watch(site, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    messages: list[str] = []

    def got(line: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(line in m.split("\n") for m in messages):
                return True
            try:
                messages.append(notify.recv(4096).decode())
            except TimeoutError:
                if proc.poll() is not None:
                    return False
        return False

    try:
        assert got("READY=1"), proc.stderr.read() if proc.poll() is not None else messages
        assert any("STATUS=in sync" in m for m in messages)
        messages.clear()
        assert got("WATCHDOG=1", timeout=3)

        status = _cli("status", "--config", str(site["config"]))
        assert status.returncode == 0, status.stdout + status.stderr
        assert json.loads(status.stdout)["state"] == "in_sync"

        new = new_key("new")
        site["fake"].config.slurmctld_key = new  # Slurm accepts the new key at once
        write_key(site["key"], new)
        assert wait_for(lambda: site["copy"].read_bytes() == new, timeout=10)
        assert wait_for(lambda: json.loads(_cli("status", "--config", str(site["config"]))
                                           .stdout).get("state") == "in_sync", timeout=10)
        metrics = urllib.request.urlopen(
            f"http://127.0.0.1:{site['port']}/metrics", timeout=5).read().decode()
        assert "slurmrestd_access_watch_syncs_total 1" in metrics
        assert 'slurmrestd_access_watch_detections_total{via="events"} 1' in metrics

        proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        notify.close()
    assert proc.returncode == 0, err
    events = [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
    assert "reconcile_requested" in events and "watch_stopped" in events
    assert events.count("synced") == 1 and "verified" in events
    assert not [p for p in site["copy"].parent.iterdir() if p.name.startswith(TEMP_PREFIX)]
    for secret in (site["old"], new):
        assert secret.hex() not in err and secret.decode("latin-1") not in err


def test_bad_config_is_a_clear_error_at_start(tmp_path):
    cfg = tmp_path / "watch.toml"
    cfg.write_text('quiet = "fast"\n')
    done = _cli("watch", "--config", str(cfg))
    assert done.returncode == 10
    assert "quiet" in done.stderr and "seconds" in done.stderr


def test_copy_path_must_match_agent_ini(site):
    text = site["config"].read_text().replace(str(site["copy"]), str(site["root"] / "x.key"))
    site["config"].write_text(text)
    done = _cli("watch", "--config", str(site["config"]), "--check-config")
    assert done.returncode == 10
    assert "jwt_key" in done.stderr


def test_check_config_ok_and_print_unit(site):
    done = _cli("watch", "--config", str(site["config"]), "--check-config")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["warnings"] == []
    # A watch.toml from before issue 10: still valid, the removed settings named.
    with site["config"].open("a") as fh:
        fh.write("restart_budget = 3\nrestart_window = 600\n")
    done = _cli("watch", "--config", str(site["config"]), "--check-config")
    assert done.returncode == 0, done.stderr
    warnings = json.loads(done.stdout)["warnings"]
    assert len(warnings) == 2 and "restart_budget is ignored" in warnings[0]
    unit = _cli("watch", "--config", str(site["config"]), "--print-unit")
    assert f"ReadWritePaths=-{site['copy'].parent} -{site['root'] / 'run'}" in unit.stdout
    assert f"--config {site['config']}" in unit.stdout


def test_status_without_daemon(tmp_path):
    done = _cli("status", "--state-file", str(tmp_path / "none.json"))
    assert done.returncode == ExitCode.WATCH_NOT_READY
    assert json.loads(done.stdout)["running"] is False


def test_late_reload_followed_by_probing_with_the_agents_copy(site):
    """Slurm reloads long after the rename: the daemon probes with the agent's copy (accepted:
    the agent serves, `status` exits 0), then follows the reload within about a second."""
    fake = site["fake"]
    proc = _watch(site, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def status() -> tuple[int, dict]:
        done = _cli("status", "--config", str(site["config"]))
        return done.returncode, json.loads(done.stdout)

    try:
        assert wait_for(lambda: status()[1].get("state") == "in_sync", timeout=15)
        new = new_key("late")
        write_key(site["key"], new)
        assert wait_for(lambda: status()[1].get("agent_key") == "accepted", timeout=10)
        fake.config.recorded.clear()
        time.sleep(3.0)  # the administrator takes their time
        code, state = status()
        assert (code, state["state"], state["agent_serving"]) == (0, "waiting_for_slurm", True)
        diag = [r.path for r in fake.config.recorded if r.path.startswith("/slurm/")]
        # Probes only (one slurmctld call each, every 0.5 s, plus the proof's every second:
        # health_interval = 1), no verify with the new key.
        assert 3 <= len(diag) <= 13, diag
        assert all(r.path.endswith("/diag") for r in fake.config.recorded)

        fake.config.slurmctld_key = new  # scontrol reconfigure (slurmdbd: same key in the fake)
        reloaded = time.monotonic()
        assert wait_for(lambda: site["copy"].read_bytes() == new, timeout=10, interval=0.01)
        assert time.monotonic() - reloaded < 1.5
        assert wait_for(lambda: status()[0] == 0 and status()[1]["state"] == "in_sync",
                        timeout=10)
    finally:
        err = _terminate(proc)
    events = [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
    assert events.count("waiting_for_slurm") == 1 and "slurm_switched" in events
    assert events.count("synced") == 1


def _status(site) -> tuple[int, dict]:
    done = _cli("status", "--json", "--config", str(site["config"]))
    return done.returncode, json.loads(done.stdout)


def test_status_proves_the_agent_can_serve_now(site):
    """Issue 20: `status` 0 means a recent proof: the agent unit active (and started after its
    copy), slurmrestd answering, Slurm accepting the copy. Each fault shows within
    health_interval (1 s here), naming what is wrong; each repair returns it to 0."""
    proc = _watch(site, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    units = site["units"]
    try:
        assert wait_for(lambda: _status(site)[0] == 0, timeout=15), _status(site)
        code, state = _status(site)
        assert state["proof_reason"] == "ok" and state["proof_age_seconds"] <= 3
        assert state["proof_units"] == [AGENT]

        set_unit(units, AGENT, active="inactive")  # systemctl stop slurm-web-agent
        stopped = time.monotonic()
        assert wait_for(lambda: _status(site)[0] == ExitCode.AGENT_NOT_ACTIVE, timeout=10)
        assert time.monotonic() - stopped < 1 + 5
        code, state = _status(site)
        assert state["status_reason"] == "agent_unit_not_active" and state["state"] == "in_sync"
        assert AGENT in state["proof_message"]
        metrics = urllib.request.urlopen(
            f"http://127.0.0.1:{site['port']}/metrics", timeout=5).read().decode()
        assert "slurmrestd_access_watch_agent_serving 0" in metrics
        assert "slurmrestd_access_watch_status_exit_code 54" in metrics
        assert "slurmrestd_access_watch_proof_age_seconds " in metrics

        set_unit(units, AGENT, active="active", started=True)  # systemctl start
        assert wait_for(lambda: _status(site)[0] == 0, timeout=10)

        # The copy rewritten after the agent started (by hand, say): it may run an older key.
        install_copy(site["copy"], site["old"])
        assert wait_for(lambda: _status(site)[1]["status_reason"]
                        == "agent_started_before_copy", timeout=10)
        assert _status(site)[0] == ExitCode.RESTART_PENDING
        set_unit(units, AGENT, active="active", started=True)
        assert wait_for(lambda: _status(site)[0] == 0, timeout=10)

        # slurmctld moved to another key, the file here unchanged (restored from a backup).
        site["fake"].config.slurmctld_key = new_key("elsewhere")
        assert wait_for(lambda: _status(site)[0] == ExitCode.REJECTED_BY_SLURMCTLD, timeout=10)
        assert _status(site)[1]["status_reason"] == "refused_by_slurmctld"
        site["fake"].config.slurmctld_key = site["old"]
        assert wait_for(lambda: _status(site)[0] == 0, timeout=10)

        # slurmrestd stopped: its socket is gone.
        site["fake"].stop()
        code_reason = lambda: (_status(site)[0], _status(site)[1]["status_reason"])  # noqa: E731
        assert wait_for(lambda: code_reason()[0] in (ExitCode.SOCKET_MISSING,
                                                    ExitCode.CONNECTION_REFUSED), timeout=10), \
            code_reason()
    finally:
        err = _terminate(proc)
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    not_serving = [e["reason"] for e in events if e["event"] == "agent_not_serving"]
    assert not_serving[:3] == ["agent_unit_not_active", "agent_started_before_copy",
                               "refused_by_slurmctld"], not_serving
    # Stopped: `status` says so at once, without trusting the last in_sync it wrote.
    code, state = _status(site)
    assert (code, state["running"], state["status_reason"]) == (
        ExitCode.WATCH_NOT_READY, False, "watch_not_running")


def test_status_of_a_killed_daemon_whose_pid_was_given_to_another_process(site):
    """SIGKILL leaves the state file saying in_sync with the daemon's pid; a live process with
    that pid but another start time is not the daemon."""
    proc = _watch(site, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: _status(site)[0] == 0, timeout=15)
    finally:
        proc.kill()
        proc.wait(10)
    state_file = site["root"] / "run" / "state.json"
    state = json.loads(state_file.read_text())
    assert state["pid"] == proc.pid and state["state"] == "in_sync"
    assert _status(site)[1]["status_reason"] == "watch_not_running"
    # The pid reused: ours (alive), with the dead daemon's start time.
    state["pid"] = os.getpid()
    state_file.write_text(json.dumps(state))
    code, shown = _status(site)
    assert (code, shown["running"]) == (ExitCode.WATCH_NOT_READY, False)


def test_a_rotation_is_followed_while_the_metrics_port_is_flooded(site):
    """Issue 21: 2,000 idle connections held on the metrics port (any local user can open
    them) do not keep the daemon from following a rotation within its usual time."""
    import contextlib as _contextlib
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 4096)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    proc = _watch(site, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    idle: list[socket.socket] = []
    try:
        assert wait_for(lambda: _status(site)[0] == 0, timeout=15)
        for _ in range(2000):
            s = socket.socket()
            s.setblocking(False)
            with _contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", site["port"]))
            idle.append(s)
        new = new_key("flood")
        site["fake"].config.slurmctld_key = new  # Slurm accepts the new key at once
        write_key(site["key"], new)
        start = time.monotonic()
        assert wait_for(lambda: site["copy"].read_bytes() == new, timeout=10, interval=0.01)
        assert time.monotonic() - start < 2.0
        assert wait_for(lambda: _status(site)[0] == 0 and _status(site)[1]["state"] == "in_sync",
                        timeout=10)
        assert len(os.listdir(f"/proc/{proc.pid}/fd")) < 64
    finally:
        for s in idle:
            s.close()
        err = _terminate(proc)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert "Too many open files" not in err
