"""Assertions about a testbed host's real state, read over SSH (never key contents)."""

from __future__ import annotations

import json
import shlex

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


# One SSH: what the agent loaded (the stand-in's own facts), then the agent's own data paths,
# which ask slurmrestd exactly as Slurm-web's do: /jobs goes to slurmctld, /accounts to slurmdbd.
_AGENT_VIEW = """
import json, sys, urllib.error, urllib.request
def get(path):
    try:
        r = urllib.request.urlopen("http://127.0.0.1:5012" + path, timeout=30)
        return r.status, json.loads(r.read().decode())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode() or "{}")
_, facts = get("/standin/status")
# The agent's paths carry its own release (/v5.2.0/, /v6.0.0/).
prefix = "/v" + facts.get("slurmweb_version", "6.0.0")
for name in ("jobs", "accounts"):
    code, body = get(prefix + "/" + name)
    facts[name] = code
    if code != 200:
        facts.setdefault("errors", {})[name] = body.get("description", "")
json.dump(facts, sys.stdout)
"""


def agent_view(tb, host: str) -> dict:
    """Whether the agent (stand-in) serves, read on its own paths, not on any check of ours.

    `accepted`: `/v{release}/jobs` (slurmctld) answers 200 and, where slurm.conf sends
    accounting to slurmdbd, so does `/v{release}/accounts` (slurmdbd), with the Slurm-web
    release the stand-in runs as (5.2.0 or 6.0.0). `reason`: the first agent error. The rest
    is what the stand-in loaded at start (slurmweb, unit, uri, key_sha256...).
    """
    res = tb.ssh(host, f"python3 -c {shlex.quote(_AGENT_VIEW)}")
    view = json.loads(_text(res))
    needed = ["jobs"] + (["accounts"] if view.get("accounting") else [])
    failed = [name for name in needed if view[name] != 200]
    view["accepted"] = not failed
    view["reason"] = "; ".join(f"/{n}: {view['errors'][n]}" for n in failed) or "ok"
    return view


def grep_lines(tb, host: str, path: str, pattern: str) -> list[str]:
    res = tb.ssh(host, f"grep -iE {shlex.quote(pattern)} {shlex.quote(path)} || true")
    return [line for line in _text(res).splitlines() if line.strip()]


def agent_get(tb, host: str, path: str) -> tuple[int, object]:
    """GET a path of the agent (stand-in) on its host: (HTTP status, JSON body)."""
    script = ("import json,sys,urllib.request,urllib.error\n"
              "try:\n"
              f"    r = urllib.request.urlopen('http://127.0.0.1:5012{path}', timeout=30)\n"
              "    print(r.status); print(r.read().decode())\n"
              "except urllib.error.HTTPError as e:\n"
              "    print(e.code); print(e.read().decode())\n")
    res = tb.ssh(host, f"python3 -c {shlex.quote(script)}")
    status, _, body = _text(res).partition("\n")
    return int(status), json.loads(body)


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
