"""The Slurm-web agent stand-in: start-up as strict as the real agent's, API discovery, token
signing, its data endpoint and its verdict, against a fake slurmrestd on a unix socket."""

from __future__ import annotations

import hashlib
import hmac
import json
import socketserver
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler
from typing import ClassVar

import pytest

from tests.testbed.standin import slurm_web_agent_standin as standin
from tests.unit.testbed_support import agent_files
from watchdog_daemon.config.agentconf import AGENT_SCHEMA

KEY = bytes(range(32))


def _verify(token: str, key: bytes) -> dict:
    header, payload, signature = token.split(".")
    expected = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert standin.b64url(expected) == signature
    return json.loads(standin._b64decode(payload))


def test_token_is_hs256_with_iat_exp_sun():
    token = standin.sign_token(KEY, "slurm", 3600, now=1000)
    assert _verify(token, KEY) == {"iat": 1000, "exp": 4600, "sun": "slurm"}


def test_token_verifies_with_pyjwt():
    import jwt

    token = standin.sign_token(KEY, "slurm", 60)
    claims = jwt.decode(token, KEY, algorithms=["HS256"])
    assert claims["sun"] == "slurm" and claims["exp"] - claims["iat"] == 60


def test_schema_is_the_one_the_check_uses():
    # Two readings of the agent's definitions (one here, one in the host tool) must agree.
    assert {s: {k: t for k, (t, _d) in keys.items()} for s, keys in standin.SCHEMA.items()} == (
        AGENT_SCHEMA
    )


# ------------------------------------------------------------------------------ settings


def settings_of(tmp_path, text: str) -> dict:
    ini = tmp_path / "agent.ini"
    ini.write_text(text)
    return standin.load_settings(str(ini))


def test_settings_defaults_and_overrides(tmp_path):
    s = settings_of(tmp_path, "[service]\ncluster=hpc\n")
    assert s["service"]["cluster"] == "hpc" and s["service"]["port"] == 5012
    assert s["slurmrestd"]["uri"] == "unix:///run/slurmrestd/slurmrestd.socket"
    assert s["slurmrestd"]["versions"] == ["0.0.44", "0.0.43", "0.0.42", "0.0.41"]
    assert (s["slurmrestd"]["auth"], s["slurmrestd"]["jwt_mode"]) == ("jwt", "auto")
    s = settings_of(tmp_path, "[service]\ncluster=x\n[slurmrestd]\nsocket=/run/s.sock\n"
                    "jwt_user=u\njwt_lifespan=10\njwt_key=/k\nversions=\n  0.0.42\n  0.0.41\n")
    rest = s["slurmrestd"]
    assert (rest["uri"], rest["jwt_user"], rest["jwt_lifespan"], rest["jwt_key"]) == (
        "unix:///run/s.sock", "u", 10, "/k")
    assert rest["versions"] == ["0.0.42", "0.0.41"]


def test_versions_are_not_split_on_commas(tmp_path):
    s = settings_of(tmp_path, "[service]\ncluster=x\n[slurmrestd]\nversions=0.0.42, 0.0.41\n")
    assert s["slurmrestd"]["versions"] == ["0.0.42, 0.0.41"]


def test_percent_is_literal_and_double_dollar_is_a_dollar(tmp_path):
    s = settings_of(tmp_path, "[service]\ncluster=a%b$$c\n")
    assert s["service"]["cluster"] == "a%b$c"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "cluster is missing"),
        ("[DEFAULT]\ncluster=a\n", "cluster is missing"),
        ("[service]\ncluster=a\n[ui]\nhost=x\n", "Section ui"),
        ("[Service]\ncluster=a\n", "Section Service"),
        ("[service]\ncluster=a\nclustr=b\n", "Parameter clustr"),
        ("[DEFAULT]\ncluster=a\n[service]\n[slurmrestd]\n", "section slurmrestd"),
        ("[service]\ncluster=a$b\n", "InterpolationSyntaxError"),
        ("[service]\ncluster=${nope}\n", "InterpolationMissingOptionError"),
        ("[service]\ncluster=a\n[slurmrestd]\njwt_lifespan=1h\n", "Invalid integer"),
        ("[service]\ncluster=a\ncors=maybe\n", "Invalid boolean"),
        ("[service]\ncluster=a\n[slurmrestd]\nauth=munge\n", "possible choices"),
        ("[service]\ncluster=a\n[jwt]\nalgorithm=none\n", "possible choices"),
        ("[service]\ncluster=a\n[slurmrestd]\nauth=jwt # inline\n", "possible choices"),
        ("[service]\ncluster=a\ncluster=b\n", "DuplicateOptionError"),
        ("cluster=a\n", "MissingSectionHeaderError"),
    ],
)
def test_settings_the_agent_refuses(tmp_path, text, fragment):
    with pytest.raises(standin.StartupError) as info:
        settings_of(tmp_path, text)
    assert fragment in str(info.value)


def test_a_missing_agent_ini_counts_as_empty(tmp_path):
    with pytest.raises(standin.StartupError, match="cluster is missing"):
        standin.load_settings(str(tmp_path / "none.ini"))


# ------------------------------------------------------------------------------ start-up


class _FakeSlurmrestd(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    key = KEY
    versions = ("0.0.41",)
    dbd_status = 200
    ping_status = 200
    # slurmrestd 25.11's answer to a request it cannot authenticate (SchedMD bug 24052).
    refuse_with_500 = False
    ping_errors: ClassVar[list] = []
    requests: list[str]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        server: _FakeSlurmrestd = self.server  # type: ignore[assignment]
        server.requests.append(self.path)
        plugin, version, endpoint = self.path.split("/")[1], self.path.split("/")[2][1:], \
            self.path.split("/")[3]
        if version not in server.versions:
            self._send(404, b"Unable find requested URL", "text/plain")
            return
        meta = {"slurm": {"release": "24.11.5", "cluster": "hpc"}}
        token = self.headers.get("X-SLURM-USER-TOKEN")
        if server.refuse_with_500:
            self._send(500, b"Authentication does not apply to request", "text/plain")
            return
        if token is None:
            self._send(401, b"Authentication failure", "text/plain")
            return
        try:
            _verify(token, server.key)
            good = True
        except (AssertionError, ValueError):
            good = False
        auth_error = [{"error_number": 1007, "error": "Protocol authentication error",
                       "description": "Unable to query jobs", "source": "slurm_load_jobs()"}]
        if endpoint == "ping":
            code, body = server.ping_status, {"meta": meta, "errors": server.ping_errors,
                                              "pings": [{"pinged": "UP" if good else "DOWN"}]}
        elif plugin == "slurm":
            code = 200 if good else 511
            body = {"meta": meta, "errors": [] if good else auth_error,
                    "jobs": [{"job_id": 1}] if endpoint == "jobs" else []}
        else:
            code = server.dbd_status if good else 502
            body = {"meta": meta, "errors": [] if code == 200 else [{"error": "dbd"}],
                    "accounts": [{"name": "root"}] if endpoint == "accounts" else []}
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
    sock, key, ini, conf, gateway = agent_files(tmp_path, KEY)
    monkeypatch.setattr(standin, "AGENT_INI", str(ini))
    monkeypatch.setattr(standin, "SLURM_CONF", str(conf))
    server = _FakeSlurmrestd(str(sock), _Handler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, key, ini, gateway
    server.shutdown()
    server.server_close()


def start(unit: str = "slurm-web-agent.service", release: str | None = None) -> standin.Agent:
    return standin.Agent.start(unit, standin.AGENT_INI, release)


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda key, gw: key.unlink(), "Token private key file"),
        (lambda key, gw: key.write_bytes(b""), "is empty"),
        (lambda key, gw: gw.unlink(), "Error while loading JWT private key"),
    ],
)
def test_start_fails_like_the_agent_without_a_usable_key(agent_env, damage, fragment):
    _, key, _, gateway = agent_env
    damage(key, gateway)
    with pytest.raises(standin.StartupError, match=fragment):
        start()


def test_main_exits_1_with_a_critical_line(agent_env, capsys):
    _, key, _, _ = agent_env
    key.unlink()
    assert standin.main() == 1
    err = capsys.readouterr().err
    assert "[CRITICAL]" in err and "Unable to load JWT key for slurmrestd" in err


@pytest.mark.parametrize(
    ("rest", "fragment"),
    [
        ("auth=local\nuri=http://localhost:6820\n", "only supported with unix socket"),
        ("jwt_mode=static\n", "Missing token"),
        ("jwt_mode=static\njwt_token=abc\n", "Unable to decode token"),
        ("jwt_mode=static\njwt_token="
         + standin.sign_token(KEY, "slurm", 10, now=1000) + "\n", "Token is expired"),
    ],
)
def test_auth_settings_the_agent_refuses(tmp_path, rest, fragment):
    gateway = tmp_path / "jwt.key"
    gateway.write_bytes(b"g" * 32)
    ini = tmp_path / "agent.ini"
    ini.write_text(f"[service]\ncluster=a\n[jwt]\nkey={gateway}\n[slurmrestd]\n{rest}")
    with pytest.raises(standin.StartupError, match=fragment):
        standin.Agent.start("u", str(ini))


# ------------------------------------------------------------------------------ requests


def test_discovery_pings_the_agents_versions_and_falls_back(agent_env):
    server, *_ = agent_env
    agent = start()
    assert agent.discover() == "0.0.41"
    assert server.requests == [f"/slurm/v{v}/ping" for v in ("0.0.44", "0.0.43", "0.0.42",
                                                             "0.0.41")]
    agent.discover()  # kept for the process
    assert len(server.requests) == 4


def test_discovery_fails_where_slurmrestd_serves_only_older_versions(agent_env):
    server, *_ = agent_env
    server.versions = ("0.0.40", "0.0.39")
    with pytest.raises(standin.AgentError) as info:
        start().discover()
    assert info.value.code == 500
    assert "Unable to discover slurmrestd API version" in info.value.description


def test_discovery_stops_at_a_401(agent_env, monkeypatch):
    server, *_ = agent_env
    server.versions = ("0.0.44", "0.0.43")
    agent = start()
    monkeypatch.setattr(agent.auth, "headers", lambda: {})  # slurmrestd sees no token
    with pytest.raises(standin.AgentError) as info:
        agent.discover()
    assert info.value.code == 401 and server.requests == ["/slurm/v0.0.44/ping"]


def test_jobs_answers_200_then_500_once_slurm_moved_to_another_key(agent_env):
    server, *_ = agent_env
    agent = start()
    assert agent.request("jobs")["jobs"] == [{"job_id": 1}]
    server.key = b"n" * 32  # Slurm reloaded a new key; the agent still signs with the old one
    with pytest.raises(standin.AgentError) as info:
        agent.request("jobs")
    assert info.value.code == 500
    assert info.value.description == ("slurmrestd error: Unable to query jobs "
                                      "(slurm_load_jobs()) [Protocol authentication error/1007]")


def test_http_endpoints(agent_env):
    server, *_ = agent_env
    httpd = standin.ThreadingHTTPServer(("127.0.0.1", 0), standin.make_handler(start()))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        ping = json.load(urllib.request.urlopen(f"{base}/v6.0.0/ping", timeout=10))
        assert ping == {"versions": {"api": "0.0.41", "slurm": "24.11.5"}}
        jobs = json.load(urllib.request.urlopen(f"{base}/v6.0.0/jobs", timeout=10))
        assert jobs == [{"job_id": 1}]
        accounts = json.load(urllib.request.urlopen(f"{base}/v6.0.0/accounts", timeout=10))
        assert accounts == [{"name": "root"}]  # slurmdbd's, through /slurmdb/
        assert server.requests[-1] == "/slurmdb/v0.0.41/accounts"
        server.dbd_status = 502  # slurmdbd refuses: /accounts fails, /jobs does not
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{base}/v6.0.0/accounts", timeout=10)
        assert info.value.code == 500
        assert urllib.request.urlopen(f"{base}/v6.0.0/jobs", timeout=10).status == 200
        server.dbd_status = 200
        server.key = b"n" * 32
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{base}/v6.0.0/jobs", timeout=10)
        assert info.value.code == 500
        assert "[Protocol authentication error/1007]" in json.load(info.value)["description"]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_tokens_are_renewed_when_less_than_a_minute_remains(agent_env):
    _, _, ini, _ = agent_env
    ini.write_text(ini.read_text().replace("[jwt]", "jwt_lifespan=30\n[jwt]"))
    agent = start()
    first = agent.auth.headers()["X-SLURM-USER-TOKEN"]
    claims = _verify(first, KEY)
    assert claims["exp"] - claims["iat"] == 30
    # 30 s < 60 s: every request signs a new token (iat may repeat within a second).
    agent.auth._token = "stale"
    assert agent.auth.headers()["X-SLURM-USER-TOKEN"] != "stale"


# ------------------------------------------------------------------------------ status


def test_status_says_what_was_loaded_and_grades_nothing(agent_env):
    server, *_ = agent_env
    status = start().status()
    assert (status["api"], status["slurm"], status["cluster"]) == ("0.0.41", "24.11.5", "hpc")
    assert status["key_sha256"] == hashlib.sha256(KEY).hexdigest()
    assert status["unit"] == "slurm-web-agent.service" and status["accounting"] is True
    assert KEY.hex() not in json.dumps(status)
    assert "accepted" not in status
    # Discovery only: whether Slurm accepts the agent is for its own paths to say.
    assert {p.split("/")[3] for p in server.requests} == {"ping"}


# ------------------------------------------------------------------------------ the agent's paths


def test_jobs_and_accounts_answer_with_the_right_key(agent_env):
    server, *_ = agent_env
    agent = start()
    assert agent.request("jobs")["jobs"] == [{"job_id": 1}]
    assert agent.request("accounts", "slurmdb")["errors"] == []
    assert [p for p in server.requests if "/v0.0.41/" in p][-2:] == [
        "/slurm/v0.0.41/jobs", "/slurmdb/v0.0.41/accounts"]


def test_slurmctld_on_another_key_fails_jobs(agent_env):
    server, *_ = agent_env
    agent = start()
    agent.discover()
    server.key = b"x" * 32
    with pytest.raises(standin.AgentError) as info:
        agent.request("jobs")
    assert info.value.code == 500 and "1007" in info.value.description


def test_slurmdbd_refusing_fails_accounts_not_jobs(agent_env):
    server, *_ = agent_env
    server.dbd_status = 502
    agent = start()
    assert agent.request("jobs")["jobs"] == [{"job_id": 1}]
    with pytest.raises(standin.AgentError) as info:
        agent.request("accounts", "slurmdb")
    assert info.value.code == 500 and "slurmrestd error" in info.value.description


def test_key_read_once_at_start(agent_env):
    _, key, _, _ = agent_env
    agent = start()
    key.write_bytes(b"y" * 32)  # a rotation on disk is not seen until restart
    assert agent.request("jobs")["jobs"] == [{"job_id": 1}]


def test_a_missing_socket_is_reported(agent_env, tmp_path):
    agent = start()
    (tmp_path / "slurmrestd.socket").unlink()
    with pytest.raises(standin.AgentError) as info:
        agent.request("jobs")
    assert "Unable to connect to slurmrestd" in info.value.description


# ------------------------------------------------------------------------------ per release
# Slurm 26.05 serves v0.0.42 to v0.0.45 (FACTS); 24.11 v0.0.40 to v0.0.42.
SLURM_26_05 = ("0.0.42", "0.0.43", "0.0.44", "0.0.45")


def test_the_release_comes_from_the_environment_and_an_unknown_one_is_refused(monkeypatch):
    monkeypatch.delenv("STANDIN_RELEASE", raising=False)
    assert standin.release_of().version == "6.0.0"
    monkeypatch.setenv("STANDIN_RELEASE", "5.2")
    assert standin.release_of().version == "5.2.0"
    assert standin.release_of("6.0").prefix == "/v6.0.0"
    monkeypatch.setenv("STANDIN_RELEASE", "4.2")
    with pytest.raises(standin.StartupError, match=r"unknown Slurm-web release '4\.2'"):
        standin.release_of()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[slurmrestd]\nversions=0.0.42\n", "Parameter versions loaded"),
        ("[filters]\nassociations=account\n", "Parameter associations loaded"),
        ("[cache]\nassociations=120\n", "Parameter associations loaded"),
    ],
)
def test_5_2_refuses_at_start_what_6_0_added(tmp_path, text, fragment):
    ini = tmp_path / "agent.ini"
    ini.write_text(f"[service]\ncluster=hpc\n{text}")
    with pytest.raises(standin.StartupError, match=fragment):
        standin.load_settings(str(ini), "5.2")
    standin.load_settings(str(ini), "6.0")


def test_each_release_reads_its_own_api_settings(tmp_path):
    ini = tmp_path / "agent.ini"
    ini.write_text("[service]\ncluster=hpc\n")
    assert standin.load_settings(str(ini), "5.2")["slurmrestd"]["version"] == "0.0.41"
    assert "versions" not in standin.load_settings(str(ini), "5.2")["slurmrestd"]
    assert standin.load_settings(str(ini), "6.0")["slurmrestd"]["version"] is None
    ini.write_text("[service]\ncluster=hpc\n[slurmrestd]\nversion=0.0.42\nversions=0.0.44\n")
    # 6.0: `version` is deprecated for `versions`, ignored when both are set (RFL).
    six = standin.load_settings(str(ini), "6.0")["slurmrestd"]
    assert (six["version"], six["versions"]) == (None, ["0.0.44"])


@pytest.mark.parametrize("release", ["5.2", "6.0"])
def test_socket_makes_the_uri_only_when_uri_is_not_set(tmp_path, release):
    """Measured with RFL.settings 1.4 to 1.9: with both, RFL ignores the deprecated socket."""
    ini = tmp_path / "agent.ini"
    ini.write_text("[service]\ncluster=hpc\n[slurmrestd]\nsocket=/run/s.sock\n")
    assert standin.load_settings(str(ini), release)["slurmrestd"]["uri"] == "unix:///run/s.sock"
    ini.write_text("[service]\ncluster=hpc\n[slurmrestd]\nsocket=/run/s.sock\n"
                   "uri=unix:///run/u.sock\n")
    rest = standin.load_settings(str(ini), release)["slurmrestd"]
    assert (rest["uri"], rest["socket"]) == ("unix:///run/u.sock", None)


def test_5_2_asks_every_call_at_its_one_version_without_discovery(agent_env):
    server, *_ = agent_env
    server.versions = ("0.0.40", "0.0.41", "0.0.42")  # Slurm 24.11 (and one more)
    agent = start(release="5.2")
    assert agent.request("jobs")["jobs"] == [{"job_id": 1}]
    assert agent.request("accounts", "slurmdb")["errors"] == []
    assert server.requests == ["/slurm/v0.0.41/jobs", "/slurmdb/v0.0.41/accounts"]


def test_5_2_follows_its_version_setting(agent_env):
    server, _, ini, _ = agent_env
    server.versions = ("0.0.42",)
    ini.write_text(ini.read_text().replace("[jwt]", "version=0.0.42\n[jwt]"))
    assert start(release="5.2").request("jobs")["jobs"] == [{"job_id": 1}]
    assert server.requests == ["/slurm/v0.0.42/jobs"]


def test_on_slurm_26_05_5_2_gets_404_where_6_0_discovers_0_0_44(agent_env):
    server, *_ = agent_env
    server.versions = SLURM_26_05
    with pytest.raises(standin.AgentError) as info:
        start(release="5.2").request("jobs")
    assert (info.value.code, info.value.description) == (
        404, "URL not found on slurmrestd: http+unix://slurmrestd/slurm/v0.0.41/jobs")
    server.requests.clear()
    assert start(release="6.0").request("jobs")["jobs"] == [{"job_id": 1}]
    assert server.requests == ["/slurm/v0.0.44/ping", "/slurm/v0.0.44/jobs"]


@pytest.mark.parametrize(("release", "code", "fragment"), [
    ("6.0", 401, "Authentication error on slurmrestd: http+unix://slurmrestd/slurm/v0.0.41/ping"),
    ("5.2", 500, "Invalid response from slurmrestd: Unsupported Content-Type for slurmrestd "
                 "response http+unix://slurmrestd/slurm/v0.0.41/jobs: text/plain"),
])
def test_only_6_0_reads_slurmrestd_25_11s_500_as_an_authentication_error(
        agent_env, release, code, fragment):
    server, *_ = agent_env
    server.refuse_with_500 = True
    with pytest.raises(standin.AgentError) as info:
        start(release=release).request("jobs")
    assert (info.value.code, info.value.description) == (code, fragment)


def _serve(agent: standin.Agent):
    httpd = standin.ThreadingHTTPServer(("127.0.0.1", 0), standin.make_handler(agent))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def _get(url: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_5_2_http_endpoints(agent_env):
    server, *_ = agent_env
    httpd, base = _serve(start(release="5.2"))
    try:
        assert _get(f"{base}/v5.2.0/jobs") == (200, [{"job_id": 1}])
        assert _get(f"{base}/v5.2.0/accounts") == (200, [{"name": "root"}])
        # 5.x has no /ping route: Flask's own 404 through Slurm-web's error handler.
        assert _get(f"{base}/v5.2.0/ping") == (404, standin.FLASK_NOT_FOUND)
        assert _get(f"{base}/v6.0.0/jobs")[0] == 404
        assert not [p for p in server.requests if p.endswith("/ping")]
        server.versions = SLURM_26_05
        assert _get(f"{base}/v5.2.0/jobs") == (404, {
            "code": 404, "name": "Not Found",
            "description": "URL not found on slurmrestd: "
                           "http+unix://slurmrestd/slurm/v0.0.41/jobs"})
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_6_0_http_endpoints_are_not_5_2s(agent_env):
    httpd, base = _serve(start(release="6.0"))
    try:
        assert _get(f"{base}/v6.0.0/ping") == (
            200, {"versions": {"api": "0.0.41", "slurm": "24.11.5"}})
        assert _get(f"{base}/v5.2.0/jobs")[0] == 404
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_status_says_which_release_runs_and_the_api_it_uses(agent_env):
    server, *_ = agent_env
    status = start(release="5.2").status()
    assert (status["slurmweb"], status["slurmweb_version"]) == ("5.2", "5.2.0")
    assert (status["api"], status["slurm"], status["cluster"]) == ("0.0.41", "24.11.5", "hpc")
    assert server.requests == ["/slurm/v0.0.41/ping"]  # its version's ping, nothing else
    server.versions = SLURM_26_05
    status = start(release="5.2").status()
    assert (status["api"], status["slurm"]) == ("0.0.41", None)
    assert status["discovery_error"] == ("URL not found on slurmrestd: "
                                         "http+unix://slurmrestd/slurm/v0.0.41/ping")
    status = start(release="6.0").status()
    assert (status["slurmweb"], status["api"], status["discovery_error"]) == (
        "6.0", "0.0.44", None)


# ------------------------------------------------------------------------------ connect-check


def _check(capsys, release: str) -> tuple[int, str, str]:
    code = standin.connect_check(standin.AGENT_INI, release)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("release", "line"), [
    ("5.2", "✅ connection successful (slurm: 24.11.5, cluster: hpc)"),
    ("6.0", "✅ connection successful! (cluster: hpc, slurm: 24.11.5, api: 0.0.41)"),
])
def test_connect_check_prints_its_releases_success_line(agent_env, capsys, release, line):
    server, _, _, gateway = agent_env
    gateway.unlink()  # the connect check does not read the agent's own [jwt] key
    assert _check(capsys, release) == (0, line + "\n", "")
    assert server.requests[-1] == "/slurm/v0.0.41/ping"


def test_connect_check_passes_with_a_wrong_key_as_slurm_webs_does(agent_env, capsys):
    """It reads only the ping's meta, which slurmrestd fills whatever the token (FACTS)."""
    server, *_ = agent_env
    server.key = b"w" * 32
    for release in ("5.2", "6.0"):
        assert _check(capsys, release)[0] == 0


def test_connect_check_on_slurm_26_05_fails_for_5_2_only(agent_env, capsys):
    server, *_ = agent_env
    server.versions = SLURM_26_05
    code, out, err = _check(capsys, "5.2")
    assert (code, out) == (1, "❌ connection failure\n")
    assert err == ("MainThread: [ERROR] URL not found on slurmrestd: "
                   "http+unix://slurmrestd/slurm/v0.0.41/ping\n")
    assert _check(capsys, "6.0")[:2] == (
        0, "✅ connection successful! (cluster: hpc, slurm: 24.11.5, api: 0.0.44)\n")


@pytest.mark.parametrize(("change", "release", "error"), [
    (lambda srv: setattr(srv, "versions", ("0.0.39", "0.0.40")), "6.0",
     "Unable to connect to slurmrestd: Unable to discover slurmrestd API version. Tried "
     "versions: 0.0.44, 0.0.43, 0.0.42, 0.0.41"),
    (lambda srv: setattr(srv, "ping_errors", [{"error_number": 1, "error": "Unspecified error",
                                               "description": "no", "source": "ping"}]), "5.2",
     "slurmrestd error: no (ping) [Unspecified error/1]"),
    (lambda srv: setattr(srv, "refuse_with_500", True), "6.0",
     "Authentication error on slurmrestd: http+unix://slurmrestd/slurm/v0.0.41/ping"),
    (lambda srv: srv.server_close(), "5.2", "Unable to connect to slurmrestd"),
])
def test_connect_check_failures_log_an_error_and_exit_1(agent_env, capsys, change, release,
                                                         error):
    server, *_ = agent_env
    change(server)
    code, out, err = _check(capsys, release)
    assert (code, out) == (1, "❌ connection failure\n")
    assert err.startswith("MainThread: [ERROR] ") and error in err


def test_connect_check_without_the_key_copy_stops_like_the_agent(agent_env, capsys):
    _, key, _, _ = agent_env
    key.unlink()
    code, out, err = _check(capsys, "5.2")
    assert (code, out) == (1, "")  # a configuration error: no connection was tried
    assert "[CRITICAL] Configuration error: Unable to load JWT key" in err


def test_main_runs_the_connect_check_of_the_release_its_command_names(agent_env, capsys,
                                                                       monkeypatch):
    monkeypatch.setenv("STANDIN_RELEASE", "5.2")  # what /usr/libexec/slurm-web/... exports
    assert standin.main(["connect-check", "--conf", standin.AGENT_INI]) == 0
    assert capsys.readouterr().out.startswith("✅ connection successful (slurm: ")
    monkeypatch.setenv("STANDIN_RELEASE", "6.0")  # /usr/bin/slurm-web
    assert standin.main(["connect-check"]) == 0
    assert capsys.readouterr().out.startswith("✅ connection successful! (cluster: ")
    for argv in (["gateway"], ["connect-check", "--debug"], ["agent", "--conf"]):
        assert standin.main(argv) == 2
    monkeypatch.setenv("STANDIN_RELEASE", "7.0")
    assert standin.main(["connect-check"]) == 1
    assert "unknown Slurm-web release '7.0'" in capsys.readouterr().err
