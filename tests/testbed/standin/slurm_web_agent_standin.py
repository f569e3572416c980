#!/usr/bin/python3
"""STAND-IN for the Slurm-web agent (testbed only; NOT Slurm-web).

Slurm-web cannot be installed on the testbed hosts, so this small stdlib-only service stands in
for its agent in auto JWT mode, as far as slurmrestd access is concerned:

- reads /etc/slurm-web/agent.ini and the key copy ONCE at start (a rotated key is seen only after
  a restart of the unit, as with the real agent);
- signs its own HS256 tokens (claims iat, exp = iat + jwt_lifespan, sun = jwt_user) per request;
- answers GET /standin/status on 127.0.0.1:5012 with JSON telling whether slurmrestd accepts its
  tokens right now, through authenticated endpoints (/slurm/vX/diag and, when accounting goes
  through slurmdbd, /slurmdb/vX/diag) - never /ping, which answers 200 with a wrong key.

The key bytes are never logged nor returned: only their sha256.
"""

from __future__ import annotations

import base64
import configparser
import contextlib
import hashlib
import hmac
import http.client
import json
import os
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

AGENT_INI = os.environ.get("STANDIN_AGENT_INI", "/etc/slurm-web/agent.ini")
SLURM_CONF = os.environ.get("STANDIN_SLURM_CONF", "/etc/slurm/slurm.conf")
LISTEN = ("127.0.0.1", int(os.environ.get("STANDIN_PORT", "5012")))
DEFAULTS = {
    "uri": "unix:///run/slurmrestd/slurmrestd.socket",
    "jwt_key": "/var/lib/slurm-web/slurmrestd.key",
    "jwt_user": "slurm",
    "jwt_lifespan": "3600",
}
API_VERSIONS = ("0.0.42", "0.0.41", "0.0.40")  # newest first, as the real agent tries them
TIMEOUT = 5.0


def load_config(path: str) -> dict[str, Any]:
    parser = configparser.ConfigParser(interpolation=None)
    error = None
    try:
        with open(path) as fh:
            parser.read_file(fh)
    except OSError as exc:
        error = f"cannot read {path}: {exc.strerror}"
    except configparser.Error as exc:
        error = f"bad {path}: {exc}"
    rest = parser["slurmrestd"] if parser.has_section("slurmrestd") else {}
    uri = rest.get("uri") or (f"unix://{rest['socket']}" if rest.get("socket") else None)
    try:
        lifespan = int(rest.get("jwt_lifespan", DEFAULTS["jwt_lifespan"]))
    except ValueError:
        lifespan, error = int(DEFAULTS["jwt_lifespan"]), "jwt_lifespan is not an integer"
    return {
        "uri": uri or DEFAULTS["uri"],
        "jwt_key": rest.get("jwt_key", DEFAULTS["jwt_key"]),
        "jwt_user": rest.get("jwt_user", DEFAULTS["jwt_user"]),
        "jwt_lifespan": lifespan,
        "cluster": parser.get("service", "cluster", fallback=None),
        "config_error": error,
    }


def load_key(path: str) -> tuple[str, bytes | None]:
    try:
        with open(path, "rb") as fh:
            key = fh.read()
    except FileNotFoundError:
        return "missing", None
    except OSError:
        return "unreadable", None
    if not key:
        return "empty", None
    return "ok", key


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_token(key: bytes, user: str, lifespan: int, now: int | None = None) -> str:
    iat = int(time.time()) if now is None else now
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = {"iat": iat, "exp": iat + lifespan, "sun": user}
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over an AF_UNIX socket, with a timeout on connect and on every read."""

    def __init__(self, path: str, timeout: float = TIMEOUT) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class RestError(Exception):
    pass


def rest_get(socket_path: str, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    conn = UnixHTTPConnection(socket_path)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
    except FileNotFoundError as exc:
        raise RestError(f"slurmrestd socket {socket_path} missing") from exc
    except PermissionError as exc:
        raise RestError(f"permission denied on slurmrestd socket {socket_path}") from exc
    except ConnectionRefusedError as exc:
        raise RestError(f"connection refused on slurmrestd socket {socket_path}") from exc
    except TimeoutError as exc:
        raise RestError(f"slurmrestd did not answer {path} within {TIMEOUT} s") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise RestError(f"slurmrestd request {path} failed: {exc}") from exc
    finally:
        conn.close()
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = body[:200].decode(errors="replace")
    return resp.status, data


def uses_slurmdbd(path: str | None = None) -> bool:
    try:
        with open(path or SLURM_CONF) as fh:
            for line in fh:
                name, _, value = line.split("#", 1)[0].partition("=")
                if name.strip().lower() == "accountingstoragetype":
                    return "slurmdbd" in value
    except OSError:
        pass
    return False


def _errors(data: Any) -> list[Any]:
    if isinstance(data, dict):
        return list(data.get("errors") or [])
    return []


def _describe(status: int, data: Any) -> str:
    errors = _errors(data)
    if errors and isinstance(errors[0], dict):
        first = errors[0]
        return (f"HTTP {status}: {first.get('description') or first.get('error')} "
                f"[{first.get('error_number')}]")
    if isinstance(data, str):
        return f"HTTP {status}: {data.strip()[:120]}"
    return f"HTTP {status}"


class Agent:
    def __init__(self, unit: str) -> None:
        self.unit = unit
        self.started_at = time.time()
        self.config = load_config(AGENT_INI)
        self.key_state, key = load_key(self.config["jwt_key"])
        self._key = key
        self.key_sha256 = hashlib.sha256(key).hexdigest() if key is not None else None

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "standin": True,
            "unit": self.unit,
            "started_at": self.started_at,
            "key_path": self.config["jwt_key"],
            "key_state": self.key_state,
            "key_sha256": self.key_sha256,
            "uri": self.config["uri"],
            "jwt_user": self.config["jwt_user"],
            "accepted": False,
            "reason": "",
            "slurm": None,
            "cluster": self.config["cluster"],
            "api": None,
        }
        if self.config["config_error"]:
            result["reason"] = f"configuration error: {self.config['config_error']}"
        elif self._key is None:
            result["reason"] = f"key {self.key_state}: {self.config['jwt_key']}"
        elif not self.config["uri"].startswith("unix://"):
            result["reason"] = f"stand-in supports unix:// uris only, not {self.config['uri']}"
        else:
            self._check(result, self.config["uri"][len("unix://"):])
        return result

    def _check(self, result: dict[str, Any], socket_path: str) -> None:
        assert self._key is not None
        headers = {
            "X-SLURM-USER-NAME": self.config["jwt_user"],
            "X-SLURM-USER-TOKEN": sign_token(
                self._key, self.config["jwt_user"], self.config["jwt_lifespan"]
            ),
        }
        try:
            version, status, data = self._first_version(socket_path, "slurm", headers)
            meta = (data or {}).get("meta", {}) if isinstance(data, dict) else {}
            slurm_meta = meta.get("slurm", {}) if isinstance(meta, dict) else {}
            result["api"] = version
            result["slurm"] = slurm_meta.get("release")
            result["cluster"] = slurm_meta.get("cluster") or result["cluster"]
            if status != 200 or _errors(data):
                result["reason"] = (
                    f"slurmctld rejected: /slurm/v{version}/diag {_describe(status, data)}"
                )
                return
            if uses_slurmdbd():
                status, data = rest_get(socket_path, f"/slurmdb/v{version}/diag", headers)
                if status != 200 or _errors(data):
                    result["reason"] = (
                        f"slurmdbd rejected: /slurmdb/v{version}/diag {_describe(status, data)}"
                    )
                    return
        except RestError as exc:
            result["reason"] = str(exc)
            return
        result["accepted"] = True
        result["reason"] = "ok"

    def _first_version(
        self, socket_path: str, plugin: str, headers: dict[str, str]
    ) -> tuple[str, int, Any]:
        for version in API_VERSIONS:
            status, data = rest_get(socket_path, f"/{plugin}/v{version}/diag", headers)
            if status != 404:
                return version, status, data
        raise RestError(f"slurmrestd answered 404 for API versions {', '.join(API_VERSIONS)}")


def make_handler(agent: Agent) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/standin/status":
                self._send(404, {"error": "not found", "standin": True})
                return
            self._send(200, agent.status())

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(f"standin: {self.address_string()} {format % args}\n")

    return Handler


def main() -> int:
    unit = os.environ.get("UNIT", "slurm-web-agent-standin")
    agent = Agent(unit)
    print(
        f"standin: STAND-IN for Slurm-web agent as {unit}: cluster={agent.config['cluster']} "
        f"uri={agent.config['uri']} key={agent.config['jwt_key']} state={agent.key_state} "
        f"sha256={agent.key_sha256}",
        file=sys.stderr,
        flush=True,
    )
    server = ThreadingHTTPServer(LISTEN, make_handler(agent))
    server.daemon_threads = True
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
