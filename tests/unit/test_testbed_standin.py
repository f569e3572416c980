"""The Slurm-web agent stand-in: config and key loading, token signing, and its verdict against
a fake slurmrestd on a unix socket."""

from __future__ import annotations

import hashlib
import hmac
import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from tests.testbed.standin import slurm_web_agent_standin as standin

KEY = bytes(range(32))


def _verify(token: str, key: bytes) -> dict:
    header, payload, signature = token.split(".")
    expected = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert standin.b64url(expected) == signature
    return json.loads(standin.base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_token_is_hs256_with_iat_exp_sun():
    token = standin.sign_token(KEY, "slurm", 3600, now=1000)
    assert _verify(token, KEY) == {"iat": 1000, "exp": 4600, "sun": "slurm"}


def test_token_verifies_with_pyjwt():
    jwt = pytest.importorskip("jwt")
    token = standin.sign_token(KEY, "slurm", 60)
    claims = jwt.decode(token, KEY, algorithms=["HS256"])
    assert claims["sun"] == "slurm" and claims["exp"] - claims["iat"] == 60


def test_config_defaults_and_overrides(tmp_path):
    ini = tmp_path / "agent.ini"
    ini.write_text("[service]\ncluster=hpc\n")
    conf = standin.load_config(str(ini))
    assert conf == {
        "uri": "unix:///run/slurmrestd/slurmrestd.socket",
        "jwt_key": "/var/lib/slurm-web/slurmrestd.key",
        "jwt_user": "slurm",
        "jwt_lifespan": 3600,
        "cluster": "hpc",
        "config_error": None,
    }
    ini.write_text("[service]\ncluster=x\n[slurmrestd]\nsocket=/run/s.sock\njwt_user=u\n"
                   "jwt_lifespan=10\njwt_key=/k\n")
    conf = standin.load_config(str(ini))
    assert (conf["uri"], conf["jwt_user"], conf["jwt_lifespan"], conf["jwt_key"]) == (
        "unix:///run/s.sock", "u", 10, "/k")
    assert standin.load_config(str(tmp_path / "none"))["config_error"].startswith("cannot read")


def test_key_states(tmp_path):
    assert standin.load_key(str(tmp_path / "missing")) == ("missing", None)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert standin.load_key(str(empty)) == ("empty", None)
    assert standin.load_key(str(tmp_path)) == ("unreadable", None)  # a directory
    good = tmp_path / "good"
    good.write_bytes(KEY)
    assert standin.load_key(str(good)) == ("ok", KEY)


class _FakeSlurmrestd(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    key = KEY
    versions = ("0.0.41",)
    dbd_status = 200


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        server: _FakeSlurmrestd = self.server  # type: ignore[assignment]
        plugin, version = self.path.split("/")[1], self.path.split("/")[2][1:]
        if version not in server.versions:
            self._send(404, b"Unable find requested URL", "text/plain")
            return
        meta = {"slurm": {"release": "24.11.5", "cluster": "hpc"}}
        token = self.headers.get("X-SLURM-USER-TOKEN", "")
        try:
            _verify(token, server.key)
            good = True
        except (AssertionError, ValueError):
            good = False
        if plugin == "slurm":
            body = {"meta": meta, "errors": [] if good else [
                {"error_number": 1007, "description": "Protocol authentication error"}]}
            code = 200 if good else 511
        else:
            code = server.dbd_status if good else 502
            body = {"meta": meta, "errors": [] if code == 200 else [{"error": "dbd"}]}
        self._send(code, json.dumps(body).encode(), "application/json")

    def _send(self, code, data, ctype):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

    def address_string(self):
        return "unix"


@pytest.fixture
def agent_env(tmp_path, monkeypatch):
    sock = tmp_path / "slurmrestd.socket"
    key = tmp_path / "slurmrestd.key"
    key.write_bytes(KEY)
    ini = tmp_path / "agent.ini"
    ini.write_text(f"[service]\ncluster=hpc\n[slurmrestd]\nuri=unix://{sock}\njwt_key={key}\n")
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=hpc\nAccountingStorageType=accounting_storage/slurmdbd\n")
    monkeypatch.setattr(standin, "AGENT_INI", str(ini))
    monkeypatch.setattr(standin, "SLURM_CONF", str(conf))
    server = _FakeSlurmrestd(str(sock), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, key
    server.shutdown()
    server.server_close()


def test_accepted_with_the_right_key_falls_back_to_an_older_api(agent_env):
    status = standin.Agent("slurm-web-agent.service").status()
    assert status["accepted"] is True, status["reason"]
    assert (status["api"], status["slurm"], status["cluster"]) == ("0.0.41", "24.11.5", "hpc")
    assert status["key_sha256"] == hashlib.sha256(KEY).hexdigest()
    assert status["unit"] == "slurm-web-agent.service"
    assert KEY.hex() not in json.dumps(status)


def test_rejected_by_slurmctld_with_another_key(agent_env):
    server, _ = agent_env
    server.key = b"x" * 32
    status = standin.Agent("u").status()
    assert status["accepted"] is False
    assert "slurmctld rejected" in status["reason"] and "1007" in status["reason"]


def test_rejected_when_slurmdbd_refuses(agent_env):
    server, _ = agent_env
    server.dbd_status = 502
    status = standin.Agent("u").status()
    assert status["accepted"] is False
    assert status["reason"].startswith("slurmdbd rejected")


def test_key_read_once_at_start(agent_env):
    _, key = agent_env
    agent = standin.Agent("u")
    key.write_bytes(b"y" * 32)  # a rotation on disk is not seen until restart
    assert agent.status()["accepted"] is True


def test_missing_key_and_missing_socket_are_reported(agent_env, tmp_path):
    _, key = agent_env
    key.unlink()
    status = standin.Agent("u").status()
    assert (status["key_state"], status["accepted"]) == ("missing", False)
    key.write_bytes(KEY)
    (tmp_path / "slurmrestd.socket").unlink()
    status = standin.Agent("u").status()
    assert status["accepted"] is False and "socket" in status["reason"]
