#!/usr/bin/python3
"""Reach the Slurm-web agent (stand-in) the way its unit serves it (testbed only; stdlib only,
Python 3.9 and later, so that it also runs on the hosts, fed over SSH).

- `slurm-web-agent.service` (the native server): HTTP on 127.0.0.1:5012;
- `slurm-web-agent-uwsgi.service`: uWSGI's own protocol on the unix socket
  /run/slurm-web-agent/uwsgi.sock (Slurm-web's `lib/wsgi/agent/slurm-web-agent.ini`), which
  nothing but a uwsgi-speaking client (an nginx `uwsgi_pass`, or this) can talk to.

The uwsgi request packet: a 4-byte header (modifier1 = 0 for a WSGI request, datasize as a
little-endian u16, modifier2 = 0), then the CGI-style variables, each key and value prefixed by
its length as a little-endian u16. uWSGI answers with raw HTTP (status line, headers, body) and
closes the connection.

On a host: `python3 uwsgi_client.py --unit UNIT [--held N] PATH...` prints a JSON list of
`{"status", "headers", "body"}`, one per request.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import struct
import sys
import time
from typing import NamedTuple

UWSGI_UNIT = "slurm-web-agent-uwsgi.service"
UWSGI_SOCKET = "/run/slurm-web-agent/uwsgi.sock"
HTTP_ADDRESS = ("127.0.0.1", 5012)
TIMEOUT = 30.0


class Response(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


def encode_vars(variables: dict[str, str]) -> bytes:
    out = bytearray()
    for key, value in variables.items():
        for part in (key.encode(), value.encode()):
            if len(part) > 0xFFFF:
                raise ValueError(f"uwsgi variable part of {len(part)} bytes (at most 65535)")
            out += struct.pack("<H", len(part)) + part
    return bytes(out)


def packet(variables: dict[str, str], modifier1: int = 0, modifier2: int = 0) -> bytes:
    data = encode_vars(variables)
    if len(data) > 0xFFFF:
        raise ValueError(f"uwsgi variables of {len(data)} bytes (at most 65535)")
    return struct.pack("<BHB", modifier1, len(data), modifier2) + data


def request_vars(path: str, method: str = "GET") -> dict[str, str]:
    """What a front-end (nginx's uwsgi_params) passes for a plain GET: WSGI needs these."""
    path_info, _, query = path.partition("?")
    return {"REQUEST_METHOD": method, "REQUEST_URI": path, "PATH_INFO": path_info,
            "QUERY_STRING": query, "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "localhost",
            "SERVER_PORT": "80", "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "localhost"}


def read_response(sock: socket.socket) -> Response:
    resp = http.client.HTTPResponse(sock)  # reads the raw HTTP uWSGI sends back
    resp.begin()
    try:
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        resp.close()


def _connect(path: str, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def uwsgi_get(socket_path: str, path: str, timeout: float = TIMEOUT) -> Response:
    sock = _connect(socket_path, timeout)
    try:
        sock.sendall(packet(request_vars(path)))
        return read_response(sock)
    finally:
        sock.close()


def held_gets(socket_path: str, paths: list[str], settle: float = 0.3,
              timeout: float = TIMEOUT) -> list[Response]:
    """One connection per path, all opened before any request is sent.

    A uWSGI worker (preforking, one thread) that has accepted a connection waits for its
    request (up to its socket-timeout, 4 s by default) and takes no other: n connections held
    together are served by n different workers, when n are free. A run of plain requests may
    all land on one worker.
    """
    socks = []
    try:
        for _ in paths:
            socks.append(_connect(socket_path, timeout))
        time.sleep(settle)
        for sock, path in zip(socks, paths):
            sock.sendall(packet(request_vars(path)))
        return [read_response(sock) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def http_get(address: tuple[str, int], path: str, timeout: float = TIMEOUT) -> Response:
    conn = http.client.HTTPConnection(address[0], address[1], timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def agent_get(unit: str, path: str, timeout: float = TIMEOUT) -> Response:
    """GET a path of the agent as its unit serves it (uWSGI socket, or HTTP on 5012)."""
    if unit == UWSGI_UNIT:
        return uwsgi_get(UWSGI_SOCKET, path, timeout)
    return http_get(HTTP_ADDRESS, path, timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unit", required=True, help="the agent unit in use on this host")
    parser.add_argument("--held", type=int, default=0,
                        help="uWSGI only: send each path N times over N connections held "
                             "together (N different workers)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT)
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args(argv)
    if args.held and args.unit != UWSGI_UNIT:
        parser.error("--held needs the uWSGI unit")
    answers: list[Response] = []
    for path in args.paths:
        if args.held:
            answers += held_gets(UWSGI_SOCKET, [path] * args.held, timeout=args.timeout)
        else:
            answers.append(agent_get(args.unit, path, args.timeout))
    json.dump([{"status": a.status, "headers": a.headers,
                "body": a.body.decode("utf-8", "replace")} for a in answers], sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
