"""`slurmrestd-access agent units|restart`: the Slurm-web agent unit(s) in use on this host.

One rule (agentunits) decides which unit is in use, for the deploy, the rotation, the report
and the watchdog alike; this command lets the workstation side apply it on the host, with the
same systemctl calls the watchdog makes. Output: one JSON object {"units", "restarted"} (or
{"error", "message", "hint", "exit_code"}); exit 0, or INTERNAL_ERROR when systemctl failed.
"""

from __future__ import annotations

import argparse
import json
import sys

from watchdog_daemon.exitcodes import ExitCode
from watchdog_daemon.system.agentunits import agent_units_in_use, restart_agent_units
from watchdog_daemon.system.systemctl import SubprocessSystemctl, SystemctlError


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    agent = subparsers.add_parser(
        "agent", help="the Slurm-web agent unit(s) in use: list or restart them",
        description="Installed, not masked, and enabled or running: an enabled agent that "
        "failed (for want of its key) is in use; a stopped, disabled one is not ours to start.")
    sub = agent.add_subparsers(dest="agent_command", metavar="ACTION", required=True)
    for name, text in (("units", "print the agent unit(s) in use"),
                       ("restart", "restart the agent unit(s) in use; wait until active")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--unit", action="append", default=None, metavar="UNIT",
                       help="the agent unit (repeatable); default: Slurm-web's two units")
        p.add_argument("--timeout", type=_positive, default=60.0, metavar="SECONDS")
        p.add_argument("--json", action="store_true", help="accepted; the output is JSON anyway")
        p.set_defaults(func=_run, restart=name == "restart")


def _run(args: argparse.Namespace) -> int:
    systemctl = SubprocessSystemctl()
    try:
        if args.restart:
            report = restart_agent_units(systemctl, args.unit, timeout=args.timeout)
        else:
            report = {"units": agent_units_in_use(systemctl, args.unit)[0], "restarted": []}
    except SystemctlError as exc:
        unit = " ".join(args.unit or [])
        print(json.dumps({"error": "internal_error", "message": str(exc),
                          "hint": f"see journalctl -u {unit or 'slurm-web-agent*'}",
                          "exit_code": int(ExitCode.INTERNAL_ERROR)}))
        print(f"ERROR: {exc}", file=sys.stderr)
        return ExitCode.INTERNAL_ERROR
    print(json.dumps(report))
    return ExitCode.OK
