#!/usr/bin/python3
"""STAND-IN for Slurm-web's agent under uWSGI (testbed only; NOT Slurm-web): the WSGI file.

Slurm-web's `lib/wsgi/agent/slurm-web-agent.py` (v5.2.0 and v6.0.0 alike) builds the agent
application once, at module level; uWSGI loads it with `slurm-web-agent.ini` (`plugin =
python3`, `master = true`, `processes = 5`, no `lazy-apps`), that is in the master process,
before it forks its five workers: the key copy is read once per application load, and every
worker serves with what the master read. A new key reaches the workers only through a restart
of the unit (or a uWSGI reload, which loads the application again).

This file does the same with the stand-in (slurm_web_agent_standin.py, loaded from
$STANDIN_PATH): `Agent.start` at import, and on a start-up error the agent's CRITICAL line and
exit 1, which makes uWSGI itself exit 1 (measured, uWSGI 2.0.21 and 2.0.28). Requests go through
the stand-in's own HTTP request handler, fed from memory: one implementation of the agent's
behaviour for both units. `[service] interface` and `port` are not used here (uWSGI listens).

Stand-in facts added for the tests: every answer carries `X-Standin-Pid` (the worker that
served it), and `/standin/status` also says `pid` and `app_loaded_pid` (the process that read
the key copy: the master, whose pid is the unit's MainPID).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import sys
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

try:  # uWSGI's embedded module: present only when uWSGI loads this file
    import uwsgi  # type: ignore[import-not-found]
except ImportError:
    uwsgi = None

STANDIN_PATH = os.environ.get("STANDIN_PATH", "/usr/local/libexec/slurm-web-agent-standin.py")
# Hop-by-hop headers are the server's (PEP 3333): http.server adds Connection on errors.
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
               "trailers", "transfer-encoding", "upgrade"}

StartResponse = Callable[[str, list], Any]


def load_standin(path: str = STANDIN_PATH) -> ModuleType:
    spec = importlib.util.spec_from_file_location("slurm_web_agent_standin", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the stand-in from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_application(standin: ModuleType, agent: Any) -> Callable[..., Iterable[bytes]]:
    loaded_pid = os.getpid()
    handler = standin.make_handler(agent)

    class Exchange(handler):  # type: ignore[misc, valid-type]
        """The stand-in's request handler, one request from memory, its answer to memory."""

        def setup(self) -> None:
            self.rfile = io.BytesIO(self.request)
            self.wfile = io.BytesIO()

        def handle(self) -> None:
            self.handle_one_request()

        def finish(self) -> None:
            pass

        def log_message(self, format: str, *args: Any) -> None:
            pass  # uWSGI logs every request itself, with its worker's pid

    def application(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        target = environ.get("REQUEST_URI") or environ.get("PATH_INFO", "/")
        method = environ.get("REQUEST_METHOD", "GET")
        raw = f"{method} {target} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode("latin-1")
        exchange = Exchange(raw, (environ.get("REMOTE_ADDR") or "uwsgi", 0), None)
        head, _, body = exchange.wfile.getvalue().partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = [(k.strip(), v.strip()) for k, _, v in (h.partition(":") for h in header_lines)
                   if k.strip().lower() not in _HOP_BY_HOP]
        if environ.get("PATH_INFO") == "/standin/status" and status_line.split()[1] == "200":
            facts = json.loads(body)
            facts.update(pid=os.getpid(), app_loaded_pid=loaded_pid, server="uwsgi")
            body = json.dumps(facts).encode()
            headers = [(k, str(len(body)) if k.lower() == "content-length" else v)
                       for k, v in headers]
        headers.append(("X-Standin-Pid", str(os.getpid())))
        start_response(status_line.split(" ", 1)[1], headers)
        return [body]

    return application


def load() -> Callable[..., Iterable[bytes]]:
    """What uWSGI runs at load: the agent built once, or exit 1 as the agent does."""
    standin = load_standin()
    unit = os.environ.get("UNIT", "slurm-web-agent-uwsgi.service")
    try:
        agent = standin.Agent.start(unit)
    except standin.StartupError as exc:
        print(f"MainThread: [CRITICAL] {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    print(f"standin: STAND-IN for Slurm-web agent as {unit} (WSGI under uWSGI): "
          f"cluster={agent.settings['service']['cluster']} uri={agent.uri} "
          f"key={agent.auth.key_path} sha256={agent.auth.key_sha256} loaded in pid "
          f"{os.getpid()}", file=sys.stderr, flush=True)
    return make_application(standin, agent)


if uwsgi is not None:
    application = load()
