"""The agent stand-in under uWSGI, as Slurm-web's slurm-web-agent-uwsgi.service runs the agent:
the uwsgi-protocol client, the WSGI file, and both under Debian's real uWSGI (the machine's,
installed by tests/testbed/setup-host.sh) with the ini the testbed writes on the hosts."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.testbed import hostconfig
from tests.testbed.standin import slurm_web_agent_standin as standin
from tests.testbed.standin import slurm_web_agent_wsgi as wsgi
from tests.testbed.standin import uwsgi_client
from tests.unit.test_testbed_standin import KEY, _FakeSlurmrestd, _Handler
from tests.unit.testbed_support import agent_files

UWSGI = "/usr/bin/uwsgi"
PYTHON3_PLUGIN = "/usr/lib/uwsgi/plugins/python3_plugin.so"
STANDIN_FILE = Path(standin.__file__)
WSGI_FILE = Path(wsgi.__file__)
UNIT = "slurm-web-agent-uwsgi.service"

# ------------------------------------------------------------------------------ the protocol


def test_packet_header_is_modifier1_le_size_modifier2_then_length_prefixed_vars():
    assert uwsgi_client.packet({"A": "bc"}) == b"\x00\x07\x00\x00" b"\x01\x00A" b"\x02\x00bc"
    # Sizes are little-endian: 2 + 1 + 2 + 300 = 305 = 0x0131.
    data = uwsgi_client.packet({"K": "v" * 300})
    assert data[:4] == b"\x00\x31\x01\x00" and data[4:12] == b"\x01\x00K\x2c\x01vvv"
    assert len(data) == 4 + 305


def test_a_packet_over_64k_is_refused():
    with pytest.raises(ValueError, match="65535"):
        uwsgi_client.packet({"K": "v" * 70000})
    with pytest.raises(ValueError, match="65535"):
        uwsgi_client.packet({f"K{i}": "v" * 1000 for i in range(70)})


def test_request_vars_split_the_query():
    env = uwsgi_client.request_vars("/standin/status?x=1")
    assert (env["PATH_INFO"], env["QUERY_STRING"], env["REQUEST_URI"]) == (
        "/standin/status", "x=1", "/standin/status?x=1")


def test_the_transport_follows_the_unit(monkeypatch):
    seen = []
    monkeypatch.setattr(uwsgi_client, "uwsgi_get", lambda *a: seen.append(("uwsgi", a[0])))
    monkeypatch.setattr(uwsgi_client, "http_get", lambda *a: seen.append(("http", a[0])))
    uwsgi_client.agent_get(UNIT, "/x")
    uwsgi_client.agent_get("slurm-web-agent.service", "/x")
    assert seen == [("uwsgi", "/run/slurm-web-agent/uwsgi.sock"), ("http", ("127.0.0.1", 5012))]


# ------------------------------------------------------------------------------ fake slurmrestd


@pytest.fixture
def slurm(tmp_path):
    """A fake slurmrestd on a unix socket (the stand-in's unit tests' one), and what the
    agent reads: agent.ini, the key copy, its own gateway key, slurm.conf."""
    sock, key, ini, conf, _gateway = agent_files(tmp_path, KEY)
    server = _FakeSlurmrestd(str(sock), _Handler)
    server.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, key, ini, conf
    server.shutdown()
    server.server_close()


# ------------------------------------------------------------------------------ the WSGI file


def call(app, path: str, method: str = "GET") -> tuple[str, dict[str, str], bytes]:
    out = {}

    def start_response(status, headers):
        out["status"], out["headers"] = status, dict(headers)

    env = {"REQUEST_METHOD": method, "PATH_INFO": path.partition("?")[0], "REQUEST_URI": path,
           "QUERY_STRING": path.partition("?")[2], "wsgi.input": io.BytesIO()}
    body = b"".join(app(env, start_response))
    return out["status"], out["headers"], body


def test_the_wsgi_app_answers_as_the_standins_http_handler(slurm, monkeypatch):
    _server, _key, ini, conf = slurm
    monkeypatch.setattr(standin, "SLURM_CONF", str(conf))
    app = wsgi.make_application(standin, standin.Agent.start(UNIT, str(ini)))
    status, headers, body = call(app, "/v6.0.0/jobs")
    assert (status, json.loads(body)) == ("200 OK", [{"job_id": 1}])
    assert headers["Content-Type"] == "application/json"
    assert headers["Content-Length"] == str(len(body))
    assert headers["X-Standin-Pid"] == str(os.getpid())
    assert call(app, "/v6.0.0/ping")[2] == b'{"versions": {"api": "0.0.41", "slurm": "24.11.5"}}'
    status, _, body = call(app, "/v6.0.0/nodes")
    assert status == "404 Not Found" and json.loads(body)["code"] == 404
    # http.server's own answer to a method it does not serve; its Connection header is the
    # server's business (PEP 3333), not the application's.
    status, headers, _ = call(app, "/v6.0.0/jobs", "POST")
    assert status.startswith("501 ") and "Connection" not in headers


def test_the_wsgi_status_says_which_process_loaded_the_key_and_which_serves(slurm, monkeypatch):
    _server, _key, ini, conf = slurm
    monkeypatch.setattr(standin, "SLURM_CONF", str(conf))
    app = wsgi.make_application(standin, standin.Agent.start(UNIT, str(ini)))
    status, headers, body = call(app, "/standin/status")
    facts = json.loads(body)
    assert status == "200 OK" and headers["Content-Length"] == str(len(body))
    assert (facts["pid"], facts["app_loaded_pid"], facts["server"]) == (
        os.getpid(), os.getpid(), "uwsgi")
    assert facts["key_sha256"] == hashlib.sha256(KEY).hexdigest() and facts["unit"] == UNIT


def test_the_wsgi_file_builds_nothing_outside_uwsgi():
    assert wsgi.uwsgi is None and not hasattr(wsgi, "application")


# ------------------------------------------------------------------------------ real uWSGI


def _uwsgi_missing() -> str | None:
    if os.path.exists(UWSGI) and os.path.exists(PYTHON3_PLUGIN):
        return None
    return (f"{UWSGI} or {PYTHON3_PLUGIN} missing: tests/testbed/setup-host.sh installs "
            "uwsgi-core and uwsgi-plugin-python3")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


@pytest.fixture
def uwsgi(tmp_path, slurm):
    """Start Debian's uWSGI with the ini the testbed writes on the hosts (socket and WSGI file
    moved here); yields start(), which returns (process, socket path)."""
    missing = _uwsgi_missing()
    if missing:
        if _in_ci():
            pytest.fail(missing)
        pytest.skip(missing)
    _server, _key, ini, conf = slurm
    sock = tmp_path / "uwsgi.sock"
    uwsgi_ini = tmp_path / "slurm-web-agent.ini"
    uwsgi_ini.write_text(hostconfig.uwsgi_ini(wsgi_file=str(WSGI_FILE), socket=str(sock)))
    env = {"PATH": "/usr/bin:/bin", "UNIT": UNIT, "STANDIN_PATH": str(STANDIN_FILE),
           "STANDIN_AGENT_INI": str(ini), "STANDIN_SLURM_CONF": str(conf)}
    running: list[subprocess.Popen] = []

    def start(expect_workers: bool = True) -> tuple[subprocess.Popen, Path]:
        log = (tmp_path / f"uwsgi-{len(running)}.log").open("wb")
        proc = subprocess.Popen([UWSGI, "--ini", str(uwsgi_ini)], env=env, stdout=log,
                                stderr=subprocess.STDOUT, cwd=tmp_path)
        proc.log_path = Path(log.name)  # type: ignore[attr-defined]
        running.append(proc)
        deadline = time.monotonic() + 20
        while expect_workers and len(_children(proc.pid)) < 5:
            assert proc.poll() is None, proc.log_path.read_text()  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "uWSGI did not spawn its 5 workers"
            time.sleep(0.05)
        return proc, sock

    yield start
    # SIGKILL, master and workers by pid: a stop with SIGTERM takes uWSGI about a second.
    for proc in running:
        if proc.poll() is None:
            workers = _children(proc.pid)
            proc.kill()
            proc.wait()
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _status(sock: Path) -> dict:
    answer = uwsgi_client.uwsgi_get(str(sock), "/standin/status")
    assert answer.status == 200, answer
    return json.loads(answer.body)


def test_uwsgi_serves_the_standin_on_its_socket_with_the_ini_the_testbed_writes(uwsgi):
    proc, sock = uwsgi()
    assert stat.S_IMODE(sock.stat().st_mode) == 0o666  # chmod-socket
    facts = _status(sock)
    assert facts["standin"] is True and facts["unit"] == UNIT and facts["server"] == "uwsgi"
    assert facts["key_sha256"] == hashlib.sha256(KEY).hexdigest()
    # Loaded in the master (no lazy-apps), served by a worker it forked.
    assert facts["app_loaded_pid"] == proc.pid and facts["pid"] in _children(proc.pid)
    jobs = uwsgi_client.uwsgi_get(str(sock), "/v6.0.0/jobs")
    assert (jobs.status, json.loads(jobs.body)) == (200, [{"job_id": 1}])
    assert jobs.headers["content-type"] == "application/json"
    log = proc.log_path.read_text()
    assert "STAND-IN for Slurm-web agent as slurm-web-agent-uwsgi.service" in log
    assert f"loaded in pid {proc.pid}" in log


def test_held_connections_reach_every_worker_and_each_serves_what_the_master_loaded(uwsgi):
    proc, sock = uwsgi()
    workers = _children(proc.pid)
    answers = uwsgi_client.held_gets(str(sock), ["/standin/status"] * 5)
    facts = [json.loads(a.body) for a in answers]
    assert sorted(f["pid"] for f in facts) == sorted(workers)
    assert {f["app_loaded_pid"] for f in facts} == {proc.pid}
    assert {f["key_sha256"] for f in facts} == {hashlib.sha256(KEY).hexdigest()}
    jobs = uwsgi_client.held_gets(str(sock), ["/v6.0.0/jobs"] * 5)
    assert sorted(int(a.headers["x-standin-pid"]) for a in jobs) == sorted(workers)
    assert {a.status for a in jobs} == {200}


def test_a_new_key_reaches_no_worker_until_uwsgi_is_restarted_then_every_one(uwsgi, slurm):
    server, key, _ini, _conf = slurm
    proc, sock = uwsgi()
    new = b"n" * 32
    key.write_bytes(new)  # the copy is replaced on disk...
    server.key = new  # ...and Slurm has reloaded it
    jobs = uwsgi_client.held_gets(str(sock), ["/v6.0.0/jobs"] * 5)
    assert len({a.headers["x-standin-pid"] for a in jobs}) == 5
    assert {a.status for a in jobs} == {500}
    assert all("[Protocol authentication error/1007]" in json.loads(a.body)["description"]
               for a in jobs)
    # What `systemctl restart` does: SIGTERM (die-on-term: uWSGI stops, it does not reload)...
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) is not None
    assert "goodbye to uWSGI" in proc.log_path.read_text()
    assert not sock.exists()  # vacuum
    # ...and a new start, whose master reads the new copy for all of its workers.
    proc, sock = uwsgi()
    facts = [json.loads(a.body) for a in uwsgi_client.held_gets(str(sock),
                                                                ["/standin/status"] * 5)]
    assert sorted(f["pid"] for f in facts) == sorted(_children(proc.pid))
    assert {f["key_sha256"] for f in facts} == {hashlib.sha256(new).hexdigest()}
    jobs = uwsgi_client.held_gets(str(sock), ["/v6.0.0/jobs"] * 5)
    assert len({a.headers["x-standin-pid"] for a in jobs}) == 5
    assert {a.status for a in jobs} == {200}


def test_without_its_key_copy_uwsgi_exits_1_with_the_agents_critical_line(uwsgi, slurm):
    _server, key, _ini, _conf = slurm
    key.unlink()
    proc, sock = uwsgi(expect_workers=False)
    assert proc.wait(timeout=20) == 1
    log = proc.log_path.read_text()
    assert ("[CRITICAL] Configuration error: Unable to load JWT key for slurmrestd "
            f"authentication: Token private key file {key} not found") in log
    assert "spawned uWSGI worker" not in log and not sock.exists()


def test_the_client_cli_prints_every_answer_as_json(uwsgi, monkeypatch, capsys):
    _proc, sock = uwsgi()
    monkeypatch.setattr(uwsgi_client, "UWSGI_SOCKET", str(sock))
    assert uwsgi_client.main(["--unit", UNIT, "--held", "3", "/standin/status"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert [a["status"] for a in answers] == [200] * 3
    assert len({json.loads(a["body"])["pid"] for a in answers}) == 3
    assert uwsgi_client.main(["--unit", UNIT, "/v6.0.0/ping", "/v6.0.0/jobs"]) == 0
    ping, jobs = json.loads(capsys.readouterr().out)
    assert json.loads(ping["body"])["versions"]["api"] == "0.0.41"
    assert (jobs["status"], jobs["headers"]["content-type"]) == (200, "application/json")


def test_the_client_cli_speaks_http_to_the_native_unit(slurm, monkeypatch, capsys):
    _server, _key, ini, conf = slurm
    monkeypatch.setattr(standin, "SLURM_CONF", str(conf))
    httpd = standin.ThreadingHTTPServer(
        ("127.0.0.1", 0), standin.make_handler(standin.Agent.start("slurm-web-agent.service",
                                                                   str(ini))))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setattr(uwsgi_client, "HTTP_ADDRESS", ("127.0.0.1", httpd.server_address[1]))
    try:
        assert uwsgi_client.main(["--unit", "slurm-web-agent.service", "/standin/status"]) == 0
        (answer,) = json.loads(capsys.readouterr().out)
        assert answer["status"] == 200
        assert json.loads(answer["body"])["unit"] == "slurm-web-agent.service"
        with pytest.raises(SystemExit):
            uwsgi_client.main(["--unit", "slurm-web-agent.service", "--held", "2", "/x"])
    finally:
        httpd.shutdown()
        httpd.server_close()
