"""Prometheus text metrics for the watchdog, served on an opt-in loopback endpoint.

No prometheus_client: a dozen counters and gauges in the text exposition format are a few lines,
and every dependency is one more wheel to carry to air-gapped agent hosts. The server is
http.server on a daemon thread, one connection at a time with a timeout (below), bound to a
loopback address only (config refuses anything else).
Metric values are counts, timestamps and 0/1 states: no key material, not even a fingerprint
(a label per key would grow without bound over the months).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

PREFIX = "slurmrestd_access_watch_"

_HELP: dict[str, tuple[str, str]] = {
    "detections_total": ("counter", "Key changes detected, by source (events, reconcile...)."),
    "syncs_total": ("counter", "Agent key copies installed (content or owner/mode)."),
    "key_invalid_total": ("counter", "Runs that refused the Slurm key, by reason."),
    "checks_total": ("counter", "Key checks against slurmrestd, by step and result."),
    "restarts_total": ("counter", "Agent unit restarts, by result (ok, failed: the unit did "
                       "not come back, check_failed: the check after it failed)."),
    "probes_total": ("counter", "Probes with the agent's copy while waiting for Slurm's "
                     "reload, by result (accepted, refused, error, unusable)."),
    "errors_total": ("counter", "Unexpected errors caught in the pipeline."),
    "last_success_timestamp_seconds": (
        "gauge", "Unix time of the last run that ended in sync (copy equal, agent checked)."),
    "circuit_open": ("gauge", "1 while the restart circuit breaker is open."),
    "restart_pending": ("gauge", "1 while the agent runs an older key than its copy."),
    "restart_failures": ("gauge", "Consecutive failed agent restarts (the circuit's count)."),
    "agent_serving": ("gauge", "1 when the agent can serve now (status exits 0): the copy in "
                      "step and the last proof recent and good (agent unit active and "
                      "started after the copy, Slurm accepting the copy)."),
    "proof_age_seconds": ("gauge", "Seconds since the last proof that the agent can serve."),
    "last_proof_timestamp_seconds": ("gauge", "Unix time of the last proof taken (good or "
                                     "not)."),
    "proofs_total": ("counter", "Proofs taken, by result (ok, or the reason it failed)."),
    "status_exit_code": ("gauge", "The exit code `slurmrestd-access status` gives now."),
    "waiting_for_slurm": ("gauge", "1 while Slurm does not accept the new key yet."),
    "in_sync": ("gauge", "1 when the copy equals the key and nothing is pending."),
    "observer_healthy": ("gauge", "1 while event watching works."),
}


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        # Gauges read when rendered (None: not shown), e.g. an age that grows between runs.
        self._live: dict[str, Callable[[], float | None]] = {}

    def live(self, name: str, read: Callable[[], float | None]) -> None:
        self._live[name] = read

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._values[key] = float(value)

    def get(self, name: str, **labels: str) -> float:
        if not labels and name in self._live:
            value = self._live[name]()
            return 0.0 if value is None else float(value)
        with self._lock:
            return self._values.get((name, tuple(sorted(labels.items()))), 0.0)

    def render(self) -> str:
        live = {}
        for name, read in self._live.items():
            value = read()
            if value is not None:
                live[(name, ())] = float(value)
        with self._lock:
            items = sorted({**self._values, **live}.items())
        lines: list[str] = []
        seen: set[str] = set()
        for (name, labels), value in items:
            if name not in seen:
                seen.add(name)
                kind, text = _HELP.get(name, ("untyped", name))
                lines.append(f"# HELP {PREFIX}{name} {text}")
                lines.append(f"# TYPE {PREFIX}{name} {kind}")
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            rendered = f"{PREFIX}{name}{{{label_text}}}" if label_text else f"{PREFIX}{name}"
            lines.append(f"{rendered} {_number(value)}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


# One connection at a time, each bounded in time, so that local users cannot take what the
# root daemon needs: with a thread per connection and no timeout (ThreadingHTTPServer), about a
# thousand idle connections used up its descriptors, and it could no longer open the key, run
# systemctl or re-arm inotify. Connections waiting their turn stay in the kernel (its listen
# queue, LISTEN_BACKLOG long), which costs the daemon no descriptor; an idle or slow one
# holds the single handler for at most REQUEST_TIMEOUT seconds. Scrapes may wait meanwhile;
# the sync pipeline does not.
REQUEST_TIMEOUT = 2.0
LISTEN_BACKLOG = 16
MAX_BODY = 1 << 20  # the exposition is a few kB; never more than this in one answer


class _Server(HTTPServer):
    request_queue_size = LISTEN_BACKLOG

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        conn.settimeout(REQUEST_TIMEOUT)
        return conn, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a client that went away or timed out is not journal material


class _ServerV6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        metrics_ref = metrics

        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT  # also bounds reading the request line and headers

            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                body = metrics_ref.render().encode()[:MAX_BODY]
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # scrapes every 15 s are not journal material

        server_cls: type[_Server] = _ServerV6 if ":" in host else _Server
        self._server = server_cls((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="watch-metrics", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
