"""A stand-in for `systemctl`, for the unit tests that run the watchdog as a process on a machine
whose systemd has no Slurm-web agent (tests/unit/test_watch_cli.py).

It answers the three calls the tool makes (watchdog_daemon/system/systemctl.py): `show -p ...
-- UNIT`, `reset-failed -- UNIT`, `restart --no-ask-password -- UNIT`, from a JSON file of unit
states that the test edits (`{"unit": {"active": "active", "unit_file": "enabled",
"started_us": N}}`); a restart makes the unit active with its start time now, on the same
CLOCK_MONOTONIC as systemd's `ExecMainStartTimestampMonotonic`.

    python -m tests.fakes.fake_systemctl run STATE_FILE -- watch --config ...

runs `slurmrestd-access` with this fake as its systemctl.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def now_us() -> int:
    return time.monotonic_ns() // 1000


def write_units(path: Path, units: dict[str, dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(units))
    os.replace(tmp, path)


def set_unit(path: Path, unit: str, *, active: str, started: bool = False) -> None:
    """What `systemctl start|stop UNIT` would leave: the test's way to act on the agent."""
    units = json.loads(path.read_text())
    entry = units.setdefault(unit, {"unit_file": "enabled"})
    entry["active"] = active
    if started:
        entry["started_us"] = now_us()
    write_units(path, units)


def answer(state_file: Path, argv: list[str]) -> int:
    units = json.loads(state_file.read_text())
    unit = argv[-1]
    verb = argv[0]
    entry = units.get(unit)
    if verb == "show":
        if entry is None:
            print("LoadState=not-found\nActiveState=inactive\nUnitFileState=")
            return 0
        print(f"LoadState=loaded\nActiveState={entry['active']}\n"
              f"UnitFileState={entry.get('unit_file', 'enabled')}\n"
              f"ExecMainStartTimestampMonotonic={entry.get('started_us', 0)}")
        return 0
    if verb == "reset-failed":
        return 0
    if verb == "restart":
        if entry is None:
            print(f"Failed to restart {unit}: Unit {unit} not found.", file=sys.stderr)
            return 5
        set_unit(state_file, unit, active="active", started=True)
        return 0
    print(f"fake_systemctl: {verb} is not faked", file=sys.stderr)
    return 1


def run(state_file: Path, tool_argv: list[str]) -> int:
    """`slurmrestd-access TOOL_ARGV` with this fake as its systemctl."""
    from watchdog_daemon import cli
    from watchdog_daemon.system import systemctl

    shim_dir = Path(tempfile.mkdtemp(prefix="fake-systemctl-"))
    shim = shim_dir / "systemctl"
    shim.write_text(f"#!/bin/sh\ncd {REPO}\nexec {sys.executable} -m tests.fakes.fake_systemctl "
                    f"answer {state_file} \"$@\"\n")
    shim.chmod(stat.S_IRWXU)
    systemctl.SYSTEMCTL = str(shim)
    return cli.main(tool_argv)


def main(argv: list[str]) -> int:
    if argv[0] == "answer":
        return answer(Path(argv[1]), argv[2:])
    if argv[0] == "run":
        rest = argv[2:]
        return run(Path(argv[1]), rest[1:] if rest[:1] == ["--"] else rest)
    print("usage: fake_systemctl answer STATE ARGS... | run STATE -- TOOL ARGS...",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
