"""Assertions about a testbed host's real state, read over SSH (never key contents)."""

from __future__ import annotations

import json
import shlex

UNITS = ("slurmctld.service", "slurmdbd.service", "slurmrestd.service",
         "slurm-web-agent.service", "slurm-web-agent-uwsgi.service")


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


def standin_status(tb, host: str) -> dict:
    """What the Slurm-web agent stand-in reports about slurmrestd accepting its token."""
    res = tb.ssh(host, "python3 -c \"import urllib.request,sys;"
                 "sys.stdout.write(urllib.request.urlopen("
                 "'http://127.0.0.1:5012/standin/status', timeout=30).read().decode())\"")
    return json.loads(_text(res))


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


def journal(tb, host: str, unit: str) -> str:
    return _text(tb.ssh(host, f"journalctl -b -u {shlex.quote(unit)} --no-pager -o cat"))
