"""A FAKE slurmrestd for unit tests only: not Slurm, not a simulator of all of it.

It listens on a unix socket and answers the few endpoints the connect check uses, the way the
answers measured on slurmrestd 24.11.5 (the e2e tests run the check against the real one): tokens
are verified against a configurable "slurmctld key" and "slurmdbd key", ping says 200 whatever the
token, diag says 511/1007 for a bad token, slurmdb diag says 502 "authentication error", 401
without token, 404 text/plain for versions it does not serve. Real answers must be verified on the
testbed; this fake only pins down the check's logic.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import jwt

Mode = str  # "normal" | "controller_unreachable" | "slurmdbd_unreachable" | "accept_any_token"
#             | "hang" | "garbage" | "garbage_diag" (ping fine, diag not JSON)


@dataclass
class Recorded:
    method: str
    path: str
    user: str | None
    had_token: bool


@dataclass
class FakeConfig:
    slurmctld_key: bytes
    slurmdbd_key: bytes | None = None  # None: same as slurmctld_key
    versions: tuple[str, ...] = ("0.0.40", "0.0.41", "0.0.42")
    release: str = "24.11.5"
    cluster: str = "hpc"
    meta_style: str = "modern"  # "modern" (meta.slurm) | "22.05" (meta.Slurm, no cluster)
    accounting: bool = True  # False: /slurmdb/* answers 404 (plugin not loaded)
    mode: Mode = "normal"
    unreachable_delay: float = 0.2
    bad_token_status_2205: int = 200  # 22.05 reports a bad token in errors[]
    # "1007": as later releases; "unspecified": as measured on 22.05.8 (HTTP 500, errno -1)
    bad_token_2205: str = "1007"
    recorded: list[Recorded] = field(default_factory=list)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True
    config: FakeConfig

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up (tests do that on purpose): nothing to report.
        return


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet; and client_address is not a tuple on unix sockets

    def address_string(self) -> str:
        return "unix"

    # ---- answers ---------------------------------------------------------------------------

    def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = (json.dumps(body) if content_type == "application/json" else str(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _meta(self) -> dict[str, Any]:
        cfg = self.server.config
        major, minor, micro = (int(p) for p in cfg.release.split("."))
        if cfg.meta_style == "22.05":
            return {"plugin": {"type": "openapi/v0.0.38", "name": "Slurm OpenAPI v0.0.38"},
                    "Slurm": {"version": {"major": major, "minor": minor, "micro": micro},
                              "release": cfg.release}}
        return {"plugin": {"type": "openapi/slurmctld", "name": "Slurm OpenAPI slurmctld"},
                "client": {"source": "[unix]", "user": "slurm-web", "group": "slurm-web"},
                "slurm": {"version": {"major": str(major), "micro": str(micro),
                                      "minor": f"{minor:02d}"},
                          "release": cfg.release, "cluster": cfg.cluster}}

    def _error(self, number: int, text: str, description: str = "") -> dict[str, Any]:
        if self.server.config.meta_style == "22.05":
            return {"errno": number, "error": text}
        return {"error_number": number, "error": text, "description": description,
                "source": "slurmrestd"}

    def _token_ok(self, key: bytes) -> bool:
        cfg = self.server.config
        if cfg.mode == "accept_any_token":
            return True
        token = self.headers.get("X-SLURM-USER-TOKEN", "")
        try:
            claims = jwt.decode(token, key, algorithms=["HS256"],
                                options={"require": ["exp"], "verify_iat": False})
        except jwt.PyJWTError:
            return False
        return claims.get("sun") == self.headers.get("X-SLURM-USER-NAME")

    def do_GET(self) -> None:
        cfg = self.server.config
        user = self.headers.get("X-SLURM-USER-NAME")
        token = self.headers.get("X-SLURM-USER-TOKEN")
        cfg.recorded.append(Recorded("GET", self.path, user, bool(token)))
        parts = self.path.split("?")[0].strip("/").split("/")
        if cfg.mode == "hang":
            time.sleep(cfg.unreachable_delay)
        if cfg.mode == "garbage" or (cfg.mode == "garbage_diag" and self.path.endswith("diag")):
            self._send(200, "<html>not slurmrestd</html>", "text/html")
            return
        if len(parts) != 3 or parts[0] not in ("slurm", "slurmdb") or \
                parts[1].lstrip("v") not in cfg.versions or parts[2] not in ("ping", "diag"):
            self._send(404, f"Unable find requested URL: {self.path}", "text/plain")
            return
        if not user or not token:
            self._send(401, "Authentication failure", "text/plain")
            return
        meta = self._meta()
        if parts[0] == "slurm":
            self._slurmctld(parts[2], meta)
        else:
            self._slurmdbd(meta)

    def _slurmctld(self, endpoint: str, meta: dict[str, Any]) -> None:
        cfg = self.server.config
        good = self._token_ok(cfg.slurmctld_key)
        if cfg.mode == "controller_unreachable":
            time.sleep(cfg.unreachable_delay)
            if endpoint == "ping":
                self._send(200, {"meta": meta, "errors": [], "warnings": [],
                                 "pings": [{"hostname": "ctl", "pinged": "DOWN"}]})
            else:
                self._send(502, {"meta": meta, "warnings": [], "errors": [self._error(
                    1800, "Unable to contact slurm controller (connect failure)",
                    "slurm_get_statistics() failed")]})
            return
        if endpoint == "ping":  # 200 whatever the token: proves nothing
            self._send(200, {"meta": meta, "errors": [], "warnings": [],
                             "pings": [{"hostname": "ctl",
                                        "pinged": "UP" if good else "DOWN"}]})
            return
        if good:
            self._send(200, {"meta": meta, "errors": [], "warnings": [],
                             "statistics": {"parts_packed": 1, "server_thread_count": 3}})
            return
        err = self._error(1007, "Protocol authentication error", "slurm_get_statistics() failed")
        if cfg.meta_style == "22.05":
            if cfg.bad_token_2205 == "unspecified":
                self._send(500, {"meta": meta, "errors": [
                    {"errno": -1, "error": "Unspecified error: request failed"}]})
                return
            self._send(cfg.bad_token_status_2205, {"meta": meta, "errors": [err]})
        else:
            self._send(511, {"meta": meta, "errors": [err], "warnings": []})

    def _slurmdbd(self, meta: dict[str, Any]) -> None:
        cfg = self.server.config
        if not cfg.accounting:
            self._send(404, f"Unable find requested URL: {self.path}", "text/plain")
            return
        if cfg.mode == "slurmdbd_unreachable":
            time.sleep(cfg.unreachable_delay)
            self._send(502, {"meta": meta, "errors": [self._error(
                7000, "Unable to connect to database",
                "Failed to open slurmdbd connection")]})
            return
        key = cfg.slurmdbd_key if cfg.slurmdbd_key is not None else cfg.slurmctld_key
        if self._token_ok(key):
            self._send(200, {"meta": meta, "errors": [], "warnings": [],
                             "statistics": {"time_start": 1}})
        else:
            self._send(502, {"meta": meta, "errors": [self._error(
                1007, "Protocol authentication error",
                "Failed to open slurmdbd connection, authentication error")]})


class FakeSlurmrestd:
    """A fake standing in for slurmrestd in unit tests only (see the module docstring).

    Usage: `with FakeSlurmrestd(tmp_path / "s.sock", slurmctld_key=KEY) as fake: ...`;
    `fake.config` can be changed while it runs; `fake.refuse()` stops listening but leaves the
    socket file (a stale socket: connections are refused).
    """

    def __init__(self, socket_path: str | os.PathLike[str], *, slurmctld_key: bytes,
                 **config: Any) -> None:
        self.socket_path = Path(socket_path)
        self.config = FakeConfig(slurmctld_key=slurmctld_key, **config)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeSlurmrestd:
        if self.socket_path.exists():
            self.socket_path.unlink()
        server = _Server(str(self.socket_path), _Handler)
        server.config = self.config
        os.chmod(self.socket_path, 0o777)  # like slurmrestd (umask 0): the directory guards it
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, *, remove_socket: bool = True) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if remove_socket and self.socket_path.exists():
            self.socket_path.unlink()

    def refuse(self) -> None:
        """Stop listening, keep the socket file: a stale socket, connections refused."""
        self.stop(remove_socket=False)

    def __enter__(self) -> FakeSlurmrestd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def make_stale_socket(path: str | os.PathLike[str]) -> Path:
    """A socket file with no listener (what a crashed slurmrestd leaves behind)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
    finally:
        sock.close()
    return Path(path)
