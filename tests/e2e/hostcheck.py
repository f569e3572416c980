"""Assertions about a testbed host's real state, read over SSH (never key contents)."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

from tests.testbed.standin import uwsgi_client

UNITS = ("slurmctld.service", "slurmdbd.service", "slurmrestd.service",
         "slurm-web-agent.service", "slurm-web-agent-uwsgi.service",
         "slurmrestd-access-watch.service")
# Every file the deploy manages, and the installed tool's digest.
MANAGED_FILES = ("/var/spool/slurm/jwt_hs256.key", "/var/lib/slurm-web/slurmrestd.key",
                 "/etc/slurm/slurm.conf", "/etc/slurm/slurmdbd.conf", "/etc/slurm-web/agent.ini",
                 "/etc/systemd/system/slurmrestd.service.d/slurm-web.conf",
                 "/etc/slurmrestd-access/watch.toml",
                 "/etc/systemd/system/slurmrestd-access-watch.service",
                 "/opt/slurmrestd-access/INSTALLED")


def _text(result) -> str:
    out = result.stdout
    return out.decode() if isinstance(out, bytes) else out


def stat(tb, host: str, path: str) -> dict | None:
    """Owner, group, mode and SHA-256 of a file on a host, or None when it does not exist."""
    q = shlex.quote(path)
    res = tb.ssh(host, f"test -e {q} || exit 3; stat -c '%U %G %a %F' {q}; sha256sum < {q}",
                 check=False)
    if res.returncode == 3:
        return None
    owner, group, mode, *kind = _text(res).splitlines()[0].split()
    return {"owner": owner, "group": group, "mode": int(mode, 8), "kind": " ".join(kind),
            "sha256": _text(res).splitlines()[1].split()[0]}


def unit_starts(tb, host: str) -> dict[str, str]:
    """When each unit last became active, and its main PID: a restart changes both."""
    res = tb.ssh(host, "systemctl show -p Id,ActiveEnterTimestampMonotonic,MainPID "
                 + " ".join(UNITS))
    starts, current = {}, {}
    for line in [*_text(res).splitlines(), ""]:
        if not line.strip():
            if current:
                starts[current["Id"]] = (current.get("ActiveEnterTimestampMonotonic"),
                                         current.get("MainPID"))
            current = {}
            continue
        key, _, value = line.partition("=")
        current[key] = value
    return starts


def snapshot(tb, hosts: list[str] | None = None) -> dict:
    """Every file the deploy manages (owner, mode, hash) and every unit's start, per host: a
    change to anything, or a restart, shows."""
    names = hosts if hosts is not None else [h.name for h in tb.hosts]
    return {name: ({p: stat(tb, name, p) for p in MANAGED_FILES}, unit_starts(tb, name))
            for name in names}


# The agent is reached where its unit serves it: HTTP on 127.0.0.1:5012
# (slurm-web-agent.service) or uWSGI's unix socket (slurm-web-agent-uwsgi.service), by
# tests/testbed/standin/uwsgi_client.py run with the host's python3 (fed on stdin, one SSH).
CLIENT_SOURCE = Path(uwsgi_client.__file__).read_bytes()


def agent_command(unit: str, paths: list[str], held: int = 0) -> str:
    """The command line that asks the agent these paths on its host (the client on stdin)."""
    return " ".join(["python3", "-", "--unit", shlex.quote(unit),
                     *(["--held", str(held)] if held else []),
                     *(shlex.quote(p) for p in paths)])


def agent_requests(tb, host: str, paths: list[str], held: int = 0) -> list[dict]:
    """GET each path of the agent on its host: [{"status", "headers", "body"}, ...] (with
    held=N, each path N times over N connections held together: N different uWSGI workers)."""
    res = tb.ssh(host, agent_command(tb.host(host).agent_unit, paths, held),
                 input=CLIENT_SOURCE)
    return json.loads(_text(res))


def _json(answer: dict):
    return json.loads(answer["body"] or "{}")


# The agent's data paths of each release the stand-in can be (its prefix is its release).
DATA_PATHS = ("/v5.2.0/jobs", "/v5.2.0/accounts", "/v6.0.0/jobs", "/v6.0.0/accounts")


def release_prefix(status: dict) -> str:
    """`/v5.2.0` or `/v6.0.0`: the agent's paths, from what its `/standin/status` says."""
    return "/v" + str(status.get("slurmweb_version") or "6.0.0")


def agent_view(tb, host: str) -> dict:
    """Whether the agent (stand-in) serves, read on its own paths, not on any check of ours.

    `accepted`: `/v{release}/jobs` (slurmctld) answers 200 and, where slurm.conf sends
    accounting to slurmdbd, so does `/v{release}/accounts` (slurmdbd), with the Slurm-web
    release the stand-in runs as (5.2.0 or 6.0.0). `reason`: the first agent error. The rest
    is what the stand-in loaded at start (slurmweb, unit, uri, key_sha256...).
    One SSH: what the agent loaded (the stand-in's own facts, its release included), then the
    agent's own data paths of either release (the other's answer 404 and are dropped), which
    ask slurmrestd exactly as Slurm-web's do: /jobs goes to slurmctld, /accounts to slurmdbd.
    """
    status, *data = agent_requests(tb, host, ["/standin/status", *DATA_PATHS])
    view = _json(status)
    prefix = release_prefix(view)
    mine = [a for path, a in zip(DATA_PATHS, data, strict=True) if path.startswith(prefix + "/")]
    for name, answer in zip(("jobs", "accounts"), mine, strict=True):
        view[name] = answer["status"]
        if answer["status"] != 200:
            view.setdefault("errors", {})[name] = _json(answer).get("description", "")
    needed = ["jobs"] + (["accounts"] if view.get("accounting") else [])
    failed = [name for name in needed if view[name] != 200]
    view["accepted"] = not failed
    view["reason"] = "; ".join(f"/{n}: {view['errors'][n]}" for n in failed) or "ok"
    return view


UWSGI_PROCESSES = 5  # Slurm-web's slurm-web-agent.ini


def agent_workers(tb, host: str) -> dict[int, dict]:
    """Every uWSGI worker of the agent, by pid: what it loaded (`/standin/status`: key_sha256,
    app_loaded_pid...) and what its data paths answer (`jobs`, `accounts`: HTTP status).

    Each path is asked over 5 connections held together, which 5 different workers serve
    (uwsgi_client.held_gets); a worker that served one path but not another has None there.
    """
    release = _json(agent_requests(tb, host, ["/standin/status"])[0])
    prefix = release_prefix(release)
    paths = ["/standin/status", f"{prefix}/jobs", f"{prefix}/accounts"]
    answers = agent_requests(tb, host, paths, held=UWSGI_PROCESSES)
    workers: dict[int, dict] = {}
    for i, answer in enumerate(answers):
        name = paths[i // UWSGI_PROCESSES].rsplit("/", 1)[1]
        worker = workers.setdefault(int(answer["headers"]["x-standin-pid"]),
                                    {"key_sha256": None, "jobs": None, "accounts": None})
        if name == "status":
            worker.update(_json(answer))
        else:
            worker[name] = answer["status"]
    return workers


def assert_every_worker_serves(tb, host: str, key_sha256: str, wait: float = 10) -> dict:
    """All 5 uWSGI workers of the host's agent run with the key copy `key_sha256`, loaded by
    the unit's main process (the uWSGI master, before it forked them), and each answers 200
    on /jobs (slurmctld) and /accounts (slurmdbd). Retried for `wait` s (a just restarted
    master may still be forking); returns the workers, by pid."""
    unit = tb.host(host).agent_unit
    deadline = time.monotonic() + wait
    while True:
        master = int(_text(tb.ssh(host, f"systemctl show -p MainPID --value {unit}")).strip())
        workers = agent_workers(tb, host)
        wrong = {pid: {k: w.get(k) for k in ("key_sha256", "app_loaded_pid", "jobs",
                                             "accounts")}
                 for pid, w in workers.items()
                 if (w["key_sha256"], w.get("app_loaded_pid"), w["jobs"], w["accounts"])
                 != (key_sha256, master, 200, 200)}
        if (len(workers) == UWSGI_PROCESSES and master not in workers and not wrong) or (
                time.monotonic() > deadline):
            break
        time.sleep(1)
    assert len(workers) == UWSGI_PROCESSES, f"{host}: {len(workers)} workers answered: {workers}"
    assert master not in workers  # the master loads the application; workers serve
    assert not wrong, f"{host}: workers not serving with {key_sha256[:12]} (master {master}): " \
                      f"{wrong}"
    return workers


def grep_lines(tb, host: str, path: str, pattern: str) -> list[str]:
    res = tb.ssh(host, f"grep -iE {shlex.quote(pattern)} {shlex.quote(path)} || true")
    return [line for line in _text(res).splitlines() if line.strip()]


def agent_get(tb, host: str, path: str) -> tuple[int, object]:
    """GET a path of the agent (stand-in) on its host: (HTTP status, JSON body)."""
    (answer,) = agent_requests(tb, host, [path])
    return answer["status"], _json(answer)


def unit_state(tb, host: str, unit: str) -> str:
    res = tb.ssh(host, f"systemctl show -p ActiveState --value {shlex.quote(unit)}")
    return _text(res).strip()


WATCH_UNIT = "slurmrestd-access-watch.service"
WATCH_FILES = ("/etc/systemd/system/slurmrestd-access-watch.service",
               "/etc/slurmrestd-access/watch.toml")


def watchdog(tb, host: str) -> dict:
    """The rotation watchdog on a host: systemd's view of its unit, its files, and what
    `slurmrestd-access status` says (exit code and reason)."""
    show = _text(tb.ssh(host, f"systemctl show -p LoadState,ActiveState,UnitFileState "
                              f"{WATCH_UNIT}"))
    unit = dict(line.split("=", 1) for line in show.splitlines() if "=" in line)
    status = tb.ssh(host, "slurmrestd-access status", check=False)
    try:
        state = json.loads(_text(status) or "{}")
    except ValueError:
        state = {}
    return {"load": unit.get("LoadState"), "active": unit.get("ActiveState"),
            "unit_file": unit.get("UnitFileState"),
            "files": [p for p in WATCH_FILES if stat(tb, host, p) is not None],
            "status_exit": status.returncode, "status_reason": state.get("status_reason"),
            "proof": state.get("proof_reason")}


# What `watchdog` reads where the deploy runs the watchdog (an agent host holding Slurm's key),
# and where it must not (an agent host without the key: no state file, no process). Healthy is
# status 0 on a good proof: the agent unit active and started after its copy, Slurm accepting
# the copy (status 0 needs that proof: in_sync alone is not enough).
WATCHDOG_HEALTHY = {"load": "loaded", "active": "active", "unit_file": "enabled",
                    "files": list(WATCH_FILES), "status_exit": 0, "status_reason": "in_sync",
                    "proof": "ok"}
WATCHDOG_ABSENT = {"load": "not-found", "active": "inactive", "unit_file": "", "files": [],
                   "status_exit": 50, "status_reason": None, "proof": None}


def journal(tb, host: str, unit: str) -> str:
    return _text(tb.ssh(host, f"journalctl -b -u {shlex.quote(unit)} --no-pager -o cat"))
# ---- systemd: no reload left pending, and how many reloads a run made ---------------------------

# PID 1 logs this line once per daemon-reload (systemd 257, Debian 13).
_RELOAD_DONE = "Reloading finished in"


def daemon_reloads(tb, host: str) -> int:
    """How many daemon-reloads systemd has done on a host since it booted (from its journal)."""
    res = tb.ssh(host, f"journalctl -b _PID=1 -o cat --no-pager | grep -c '^{_RELOAD_DONE}' "
                 "|| true")
    return int(_text(res).strip() or 0)


def units_needing_reload(tb, host: str) -> list[str]:
    """Loaded units for which systemd says `NeedDaemonReload=yes` (a unit file, drop-in or
    link changed on disk since systemd last read them)."""
    res = tb.ssh(host, "systemctl show -p Id,NeedDaemonReload -- $(systemctl list-units --all "
                 "--plain --no-legend | awk '{print $1}')")
    pending, current = [], ""
    for line in _text(res).splitlines():
        key, _, value = line.partition("=")
        if key == "Id":
            current = value
        elif key == "NeedDaemonReload" and value == "yes":
            pending.append(current)
    return pending


def reload_counts(tb) -> dict[str, int]:
    """daemon_reloads of every host of a topology: take it before a run, pass it to
    assert_systemd_settled after."""
    return {h.name: daemon_reloads(tb, h.name) for h in tb.hosts}


def systemd_problems(tb, before: dict[str, int], most: int) -> list[str]:
    """After a deploy, rotation or watchdog action: units of any host that need a daemon-reload,
    and hosts reloaded more than `most` times since `before` (0 for a run that changed no unit
    file, link or drop-in)."""
    problems = []
    for h in tb.hosts:
        pending = units_needing_reload(tb, h.name)
        if pending:
            problems.append(f"{h.name}: NeedDaemonReload=yes for {len(pending)} units, e.g. "
                            f"{pending[:5]}")
        reloads = daemon_reloads(tb, h.name) - before[h.name]
        if reloads > most:
            problems.append(f"{h.name}: {reloads} daemon-reloads (at most {most} expected)")
    return problems


def assert_systemd_settled(tb, before: dict[str, int], most: int) -> None:
    problems = systemd_problems(tb, before, most)
    assert not problems, "\n".join(problems)
