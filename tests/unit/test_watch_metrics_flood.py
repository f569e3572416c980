"""Issue 21: local users cannot exhaust the root watchdog through its metrics port.

A thread per connection and no timeout let about a thousand idle connections use up the
daemon's descriptors. Now one connection is served at a time, each for at most
REQUEST_TIMEOUT: idle connections cost the server process no descriptor while they wait, and
the daemon follows a rotation as usual while they are held (tests/unit/test_watch_cli.py).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from watchdog_daemon.watch import metrics as watchmetrics

REPO = Path(__file__).resolve().parents[2]
SERVE = """
import sys, time
from watchdog_daemon.watch.metrics import Metrics, MetricsServer
m = Metrics(); m.set("in_sync", 1)
s = MetricsServer(m, "127.0.0.1", 0); s.start()
print(s.address[1], flush=True)
time.sleep(120)
"""


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_idle_connections_cost_the_server_no_descriptor_and_time_out():
    proc = subprocess.Popen([sys.executable, "-c", SERVE], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    idle: list[socket.socket] = []
    try:
        port = int(proc.stdout.readline())
        before = fds(proc.pid)
        for _ in range(300):
            s = socket.socket()
            s.setblocking(False)
            # Beyond the listen queue a connect waits in SYN retries: it costs the server nothing.
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
            idle.append(s)
        time.sleep(1)
        assert fds(proc.pid) <= before + 1  # the one connection being served, at most
        for s in idle:
            s.close()
        idle.clear()
        # Once the idle ones are gone (each held the handler at most REQUEST_TIMEOUT), a scrape
        # is answered.
        start = time.monotonic()
        deadline = start + 20 * watchmetrics.REQUEST_TIMEOUT
        while True:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                              timeout=30).read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert "slurmrestd_access_watch_in_sync 1" in body
    finally:
        for s in idle:
            s.close()
        proc.kill()
        proc.wait()


def test_a_client_that_never_sends_is_dropped_after_the_timeout():
    m = watchmetrics.Metrics()
    server = watchmetrics.MetricsServer(m, "127.0.0.1", 0)
    server.start()
    try:
        slow = socket.create_connection(server.address)
        start = time.monotonic()
        slow.settimeout(10)
        assert slow.recv(1) == b""  # closed by the server, not by us
        assert time.monotonic() - start < watchmetrics.REQUEST_TIMEOUT + 1.5
        slow.close()
    finally:
        server.stop()
