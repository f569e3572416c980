"""`slurmrestd-access`: the one command-line tool of the host side.

Each subcommand lives in its own module and registers itself here; imports are lazy so that
the quick subcommands used by the deploy's facts stay quick.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from watchdog_daemon import __version__
from watchdog_daemon.exitcodes import ExitCode

# module name -> help line. Each module exposes `register(subparsers)` which adds its parser(s)
# and sets `func` (args -> int exit code) as the parser default.
SUBCOMMAND_MODULES: dict[str, str] = {
    "check.cli": "check: prove slurmrestd and Slurm accept the agent's token",
    "keys.cli": "key: create, install and fingerprint JWT signing keys",
    "config.cli": "conf, agent-ini, preflight, plan: merge Slurm and agent settings",
    "watch.cli": "watch, status: the key-rotation watchdog",
    "system.cli": "agent: the Slurm-web agent unit(s) in use, listed or restarted",
    "system.surveycli": "survey: what the deploy reads of this host, with its plan and check",
}
# command -> its module: a command line naming one only imports that module. Every tool run
# costs Python's start-up on the host, and the deploy runs the tool a dozen times.
COMMAND_MODULES: dict[str, str] = {
    "check": "check.cli",
    "key": "keys.cli",
    "conf": "config.cli",
    "agent-ini": "config.cli",
    "preflight": "config.cli",
    "plan": "config.cli",
    "watch": "watch.cli",
    "status": "watch.cli",
    "agent": "system.cli",
    "survey": "system.surveycli",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with `only` the parser of the module of that one command."""
    parser = argparse.ArgumentParser(
        prog="slurmrestd-access",
        description="Host side of slurmrestd-access (Slurm-web agent, slurmrestd, JWT keys).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules = [only] if only else list(SUBCOMMAND_MODULES)
    for module_name in modules:
        # A module that cannot be imported is a broken install: it fails loudly here rather
        # than leaving its commands out of the tool without a word.
        importlib.import_module(f"watchdog_daemon.{module_name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else ""
    parser = build_parser(COMMAND_MODULES.get(command))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["ExitCode", "build_parser", "main"]
