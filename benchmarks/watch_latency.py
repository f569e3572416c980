"""Benchmark of `slurmrestd-access watch`: rotation latency, then idle CPU and memory.

Runs the real daemon (`python -m watchdog_daemon.cli watch`) as a child process in a temporary
directory, against the unit tests' FakeSlurmrestd on a unix socket in "accept at once" mode (the
fake's slurmctld/slurmdbd key is switched to the new key just before each rotation):

* latency, per rotation, from the key's rename (os.replace, as a rotation tool does) to
  - `synced`:  the new key verified against slurmrestd (token signed with it accepted by the
               fake slurmctld and slurmdbd, plus the decoy refused) AND the copy installed;
  - `in_sync`: the end of the run (state file written);
  measured in this process when the daemon's JSON log line arrives on its stderr pipe;
* idle: CPU time (utime + stime from /proc) and resident memory (VmRSS, VmHWM) of the daemon
  over N idle minutes (default 10, as the issue's target: < 1 s CPU, < 50 MB).

No agent unit runs here, so the daemon syncs only (no restart): the figure is the key pipeline.
Runnable by anyone: the copy is owned by the user running the benchmark.

    python benchmarks/watch_latency.py --rotations 50 --idle-minutes 1
    python benchmarks/watch_latency.py --coalesce 0.25   # burst-coalescing setting

Prints one JSON summary on stdout.
"""

from __future__ import annotations

import argparse
import grp
import hashlib
import json
import os
import pwd
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fakes.fake_slurmrestd import FakeSlurmrestd  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _summary(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(_pct(ms, 0.50), 2), "p95_ms": round(_pct(ms, 0.95), 2),
            "max_ms": round(max(ms), 2), "mean_ms": round(statistics.fmean(ms), 2),
            "n": len(ms)}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def _mem_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1])
    return out


def _write_key(path: Path, data: bytes) -> float:
    """Write a new key file and rename it over the key; return the time of the rename."""
    tmp = path.parent / f".rotate-{time.monotonic_ns()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    t0 = time.perf_counter()
    os.replace(tmp, path)
    return t0


class LogReader(threading.Thread):
    def __init__(self, stream: Any) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.events: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self.other: list[str] = []

    def run(self) -> None:
        for line in self.stream:
            now = time.perf_counter()
            try:
                data = json.loads(line)
            except ValueError:
                self.other.append(line.rstrip())
                continue
            self.events.put((now, data))

    def wait_for(self, event: str, timeout: float = 15.0, **match: Any) -> tuple[float, dict]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {event} {match} within {timeout} s")
            try:
                when, data = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if data.get("event") == event and all(data.get(k) == v for k, v in match.items()):
                return when, data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rotations", type=int, default=50)
    parser.add_argument("--idle-minutes", type=float, default=10.0)
    parser.add_argument("--coalesce", type=float, default=None,
                        help="override the daemon's coalesce window (default: its default)")
    parser.add_argument("--pause", type=float, default=0.05,
                        help="seconds between the end of a run and the next rotation")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="watch-bench-"))
    key_dir, copy_dir = root / "spool", root / "lib"
    key_dir.mkdir()
    copy_dir.mkdir()
    key, copy = key_dir / "jwt_hs256.key", copy_dir / "slurmrestd.key"
    first = os.urandom(32)
    _write_key(key, first)
    copy.write_bytes(first)
    os.chmod(copy, 0o400)
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    sock = root / "rest.sock"
    (root / "agent.ini").write_text(
        f"[service]\ncluster = bench\n\n[slurmrestd]\nuri = unix://{sock}\njwt_key = {copy}\n")
    toml = (f'key_path = "{key}"\ncopy_path = "{copy}"\ncopy_owner = "{user}"\n'
            f'copy_group = "{group}"\nagent_ini = "{root / "agent.ini"}"\n'
            f'state_file = "{root / "run" / "state.json"}"\naccounting = "yes"\n')
    if args.coalesce is not None:
        toml += f"coalesce = {args.coalesce}\n"
    (root / "watch.toml").write_text(toml)

    fake = FakeSlurmrestd(sock, slurmctld_key=first).start()
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-m", "watchdog_daemon.cli", "watch", "--config",
                             str(root / "watch.toml")], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    reader = LogReader(proc.stderr)
    reader.start()
    synced_ms: list[float] = []
    done_ms: list[float] = []
    failures = 0
    try:
        reader.wait_for("watch_started", timeout=30)
        for _ in range(args.rotations):
            new = os.urandom(32)
            fp = hashlib.sha256(new).hexdigest()[:12]
            fake.config.slurmctld_key = new  # accept at once
            t0 = _write_key(key, new)
            try:
                t_sync, _ = reader.wait_for("synced", key_fingerprint=fp)
                t_done, _ = reader.wait_for("in_sync", key_fingerprint=fp)
            except TimeoutError:
                failures += 1
                continue
            if copy.read_bytes() != new:
                failures += 1
                continue
            synced_ms.append((t_sync - t0) * 1000)
            done_ms.append((t_done - t0) * 1000)
            time.sleep(args.pause)

        # Idle: nothing changes; the daemon reconciles every 30 s and ticks every second.
        time.sleep(1.0)
        cpu0, t_idle0 = _cpu_seconds(proc.pid), time.monotonic()
        rss_max = 0
        end = t_idle0 + args.idle_minutes * 60
        while time.monotonic() < end:
            rss_max = max(rss_max, _mem_kb(proc.pid).get("VmRSS", 0))
            time.sleep(min(5.0, max(0.0, end - time.monotonic())))
        cpu1, t_idle1 = _cpu_seconds(proc.pid), time.monotonic()
        mem = _mem_kb(proc.pid)
        idle_s = t_idle1 - t_idle0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        fake.stop()

    cpu = cpu1 - cpu0
    summary = {
        "rotations": args.rotations,
        "failures": failures,
        "coalesce_s": args.coalesce if args.coalesce is not None else "default (0)",
        "rename_to_verified_and_installed": _summary(synced_ms) if synced_ms else None,
        "rename_to_run_complete": _summary(done_ms) if done_ms else None,
        "idle": {
            "seconds": round(idle_s, 1),
            "cpu_seconds": round(cpu, 3),
            "cpu_seconds_per_10min": round(cpu * 600 / idle_s, 3) if idle_s else None,
            "rss_mb_max": round(rss_max / 1024, 1),
            "rss_mb_end": round(mem.get("VmRSS", 0) / 1024, 1),
            "rss_mb_peak_hwm": round(mem.get("VmHWM", 0) / 1024, 1),
        },
        "daemon_exit_code": proc.returncode,
        "targets": {"p50_ms": 38, "p95_ms": 60, "idle_cpu_s_per_10min": 1.0, "rss_mb": 50},
    }
    print(json.dumps(summary, indent=2))
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
