"""Runs ON the testbed's agent host (stdlib only, Python 3.9+), fed on stdin by
benchmarks/rotation_outage.py: hand rotations of Slurm's key, and the agent's outage as the
agent itself shows it.

For each gap: a new key (32 random bytes, written here, never printed) renamed over Slurm's, a
wait of `gap` seconds, then Slurm's reload as an administrator does it: `systemctl restart
slurmdbd` (slurmdbd reloads only on restart), then `scontrol reconfigure` (slurmctld). Since the
agent's data endpoint goes to slurmctld only, the agent starts failing at the reconfigure: that
is "Slurm's reload" here, and by then slurmdbd accepts the new key too.

Meanwhile a poller asks the agent stand-in's data endpoint every `poll` seconds. Per rotation:
- outage_s: from the start of `scontrol reconfigure` to the agent's first success after its
  first failure (0 when it never failed);
- failing_s: from its first failed answer to its first success after (poll resolution);
- agent_restarts: "Started" lines of the agent unit in the journal;
- ctld_auth_lines: slurmctld journal lines about an authentication error; failed_polls: how
  many of them are the poller's own requests (one per failed agent request);
- probes, verifies: from the watchdog's metrics (enabled for the run, restored after).
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

KEY = "/var/spool/slurm/jwt_hs256.key"
WATCH_TOML = "/etc/slurmrestd-access/watch.toml"
WATCH_UNIT = "slurmrestd-access-watch.service"
METRICS = "127.0.0.1:9813"
AUTH_LINE = re.compile(r"authenticat|invalid (authentication )?credential|auth_jwt|auth/jwt",
                       re.IGNORECASE)
# slurmctld 24.11 logs each refused token twice: "...has authentication error: Invalid
# authentication credential" and "Protocol authentication error"; this matches the first only.
REFUSAL_LINE = re.compile(r"has authentication error", re.IGNORECASE)


def sh(cmd: str, check: bool = True, timeout: float = 120) -> str:
    done = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise SystemExit(f"{cmd}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
    return done.stdout


def cursor(unit: str) -> str:
    out = sh(f"journalctl -u {unit} -n 0 --show-cursor --no-pager")
    for line in out.splitlines():
        if line.startswith("-- cursor: "):
            return line[len("-- cursor: "):]
    return ""


def journal_since(unit: str, cur: str) -> list[str]:
    after = f"--after-cursor='{cur}'" if cur else "-b"
    return sh(f"journalctl -u {unit} {after} -o cat --no-pager", check=False).splitlines()


def metrics() -> dict[str, float]:
    try:
        text = urllib.request.urlopen(f"http://{METRICS}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def metric_sum(values: dict[str, float], prefix: str, contains: str = "") -> float:
    return sum(v for k, v in values.items() if k.startswith(prefix) and contains in k)


class Poller(threading.Thread):
    """GET the agent's endpoint every `interval` s; (monotonic time, ok) per answer."""

    def __init__(self, url: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.samples: list[tuple[float, bool]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def ok(self) -> bool:
        try:
            with urllib.request.urlopen(self.url, timeout=5) as resp:
                body = resp.read()
                if resp.status != 200:
                    return False
        except (urllib.error.URLError, OSError):
            return False
        if self.url.endswith("/standin/status"):
            return bool(json.loads(body).get("accepted"))
        return True

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            ok = self.ok()
            with self.lock:
                self.samples.append((time.monotonic(), ok))
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def since(self, t0: float) -> list[tuple[float, bool]]:
        with self.lock:
            return [s for s in self.samples if s[0] >= t0]


def watch_cpu_s() -> float | None:
    """CPU time (user + system) of the watchdog's main process so far, or None."""
    pid = sh(f"systemctl show -p MainPID --value {WATCH_UNIT}", check=False).strip()
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def watch_status() -> tuple[int, dict]:
    done = subprocess.run(["slurmrestd-access", "status"], capture_output=True, text=True)
    try:
        return done.returncode, json.loads(done.stdout)
    except ValueError:
        return done.returncode, {}


def wait_until(pred, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout} s waiting for {what}")


def new_key() -> None:
    slurm = pwd.getpwnam("slurm")
    tmp = f"{KEY}.bench-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, os.urandom(32))
        os.fchown(fd, slurm.pw_uid, slurm.pw_gid)
        os.fchmod(fd, 0o600)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, KEY)


def enable_metrics() -> str | None:
    """Serve the watchdog's metrics for the run; return the original watch.toml to restore."""
    try:
        with open(WATCH_TOML) as fh:
            original = fh.read()
    except FileNotFoundError:
        original = ""
    if "metrics" in original:
        return None
    with open(WATCH_TOML + ".bench", "w") as fh:
        fh.write(original + f'metrics = "{METRICS}"\n')
    os.replace(WATCH_TOML + ".bench", WATCH_TOML)
    sh(f"systemctl restart {WATCH_UNIT}")
    return original


def restore(original: str | None) -> None:
    if original is None:
        return
    with open(WATCH_TOML + ".bench", "w") as fh:
        fh.write(original)
    os.replace(WATCH_TOML + ".bench", WATCH_TOML)
    sh(f"systemctl restart {WATCH_UNIT}")


def rotation(gap: float, agent_unit: str, poller: Poller, settle: float) -> dict:
    wait_until(lambda: watch_status()[1].get("state") == "in_sync", 60, "the watchdog in sync")
    wait_until(lambda: poller.since(time.monotonic() - 0.5) and
               all(ok for _t, ok in poller.since(time.monotonic() - 0.5)), 60,
               "the agent serving")
    cursors = {u: cursor(u) for u in ("slurmctld", agent_unit, WATCH_UNIT)}
    m0 = metrics()
    cpu0 = watch_cpu_s()
    t_rename = time.monotonic()
    new_key()
    # During the gap the agent must keep serving and `status` exit 0 (waiting, copy accepted).
    status_codes: set[int] = set()
    end = t_rename + gap
    while time.monotonic() < end:
        status_codes.add(watch_status()[0])
        time.sleep(min(2.0, max(0.0, end - time.monotonic())))
    cpu_wait = watch_cpu_s()
    t_wait_end = time.monotonic()
    sh("systemctl restart slurmdbd")
    wait_until(lambda: sh("ss -Hltn 'sport = :6819'", check=False).strip(), 60,
               "slurmdbd listening")
    t_reload = time.monotonic()
    sh("scontrol reconfigure")
    t_reload_done = time.monotonic()

    # The watchdog has verified, synced, restarted the agent and checked it...
    wait_until(lambda: watch_status()[1].get("state") == "in_sync", 60, "in sync again")

    # ...and the agent answers again (a success after its last failure).
    def recovered() -> float | None:
        samples = poller.since(t_rename)
        fails = [t for t, ok in samples if not ok]
        oks = [t for t, ok in samples if ok and (not fails or t > fails[-1])]
        return oks[0] if oks else None

    wait_until(recovered, 60, "the agent serving again", interval=0.05)
    time.sleep(settle)  # a second restart, or failures after the first success, show up here
    samples = poller.since(t_rename)
    fails = [t for t, ok in samples if not ok]
    t_ok = next((t for t, ok in samples if ok and fails and t > fails[0]), None)
    m1 = metrics()
    ctld = journal_since("slurmctld", cursors["slurmctld"])
    agent = journal_since(agent_unit, cursors[agent_unit])
    watch = journal_since(WATCH_UNIT, cursors[WATCH_UNIT])
    events = []
    for line in watch:
        try:
            events.append(json.loads(line).get("event"))
        except ValueError:
            continue
    return {
        "gap_s": gap,
        "outage_s": round(t_ok - t_reload, 3) if fails and t_ok else 0.0,
        "failing_s": round(t_ok - fails[0], 3) if fails and t_ok else 0.0,
        "failures_after_recovery": len([t for t in fails if t_ok and t > t_ok]),
        "first_failure_after_reload_s": round(fails[0] - t_reload, 3) if fails else None,
        "reconfigure_s": round(t_reload_done - t_reload, 3),
        "failed_polls": len(fails),
        "failed_polls_after_reload": len([t for t in fails if t >= t_reload]),
        "failed_polls_before_reload": len([t for t in fails if t < t_reload]),
        "agent_restarts": sum(1 for line in agent if line.startswith("Started ")),
        "ctld_auth_lines": sum(1 for line in ctld if AUTH_LINE.search(line)),
        "ctld_refusals": sum(1 for line in ctld if REFUSAL_LINE.search(line)),
        "ctld_auth_examples": [line[:160] for line in ctld if AUTH_LINE.search(line)][:3],
        "status_exit_codes_while_waiting": sorted(status_codes),
        "watch_cpu_s_per_min_while_waiting": None if cpu0 is None or cpu_wait is None
        else round((cpu_wait - cpu0) * 60 / (t_wait_end - t_rename), 3),
        "probes": metric_sum(m1, "slurmrestd_access_watch_probes_total")
        - metric_sum(m0, "slurmrestd_access_watch_probes_total"),
        "verifies": metric_sum(m1, "slurmrestd_access_watch_checks_total", 'step="verify"')
        - metric_sum(m0, "slurmrestd_access_watch_checks_total", 'step="verify"'),
        "watch_events": [e for e in events if e not in ("verified",)],
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gaps", required=True, help="comma-separated seconds")
    parser.add_argument("--agent-unit", default="slurm-web-agent.service")
    parser.add_argument("--endpoint", default="/v6.0.0/jobs")
    parser.add_argument("--poll", type=float, default=0.1)
    parser.add_argument("--settle", type=float, default=3.0)
    args = parser.parse_args()
    if args.agent_unit == "slurm-web-agent-uwsgi.service":
        # Its agent listens on uWSGI's unix socket (tests/testbed/standin/uwsgi_client.py),
        # not on 5012: the poller would count an outage all along.
        parser.error("the poller speaks HTTP to 127.0.0.1:5012: not the uWSGI unit's socket")
    gaps = [float(g) for g in args.gaps.split(",") if g.strip()]
    original = enable_metrics()
    poller = Poller(f"http://127.0.0.1:5012{args.endpoint}", args.poll)
    poller.start()
    results = []
    try:
        wait_until(lambda: watch_status()[0] == 0, 60, "`slurmrestd-access status` exit 0")
        for gap in gaps:
            results.append(rotation(gap, args.agent_unit, poller, args.settle))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    finally:
        poller.stop.set()
        restore(original)
    print(json.dumps({"rotations": results, "poll_s": args.poll, "endpoint": args.endpoint}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
