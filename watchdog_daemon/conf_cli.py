"""`slurmrestd-access conf|agent-ini plan|apply` and `slurmrestd-access preflight`.

The deploy runs these on each host over SSH with `--json` and reads the one JSON document
printed on stdout:

* conf / agent-ini: `{"action", "file", "changed", "before", "after", "warnings"}`, exit 0,
  whether or not a change is pending (`plan` never writes); `before`/`after` hold only the
  managed lines, never the whole file (slurmdbd.conf holds StoragePass);
* preflight: `{"ok", "unit", "socket", "findings": [{"level", "message", "hint", "file",
  "line"}]}`, exit PREFLIGHT_FAILED when a finding is an error;
* on failure: `{"error", "detail", "message", "hint", "exit_code", "file"}` and that exit
  code; `error` is the exit code's documented reason (`change_refused`, `config_invalid`),
  `detail` the kind of failure (`parse_error`, `conflict`, `file_missing`, `write_failed`...).

Without `--json` the same goes to the terminal: a short diff of the managed lines, errors and
hints on stderr.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Callable

from watchdog_daemon.atomicwrite import ChangeError, MergeResult
from watchdog_daemon.dropin import DEFAULT_SOCKET
from watchdog_daemon.exitcodes import ExitCode


def register(subparsers: argparse._SubParsersAction) -> None:
    conf = subparsers.add_parser(
        "conf",
        help="merge AuthAltTypes/AuthAltParameters (JWT) into slurm.conf or slurmdbd.conf",
        description="Merge AuthAltTypes=auth/jwt and AuthAltParameters=jwt_key=PATH into a "
        "Slurm configuration file, keeping every other line as it is.",
    )
    conf_sub = conf.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, help_text in (
        ("plan", "show what would change; never writes"),
        ("apply", "write the change (atomically, owner and mode kept)"),
    ):
        p = conf_sub.add_parser(action, help=help_text)
        p.add_argument("--file", required=True, help="slurm.conf or slurmdbd.conf to merge into")
        p.add_argument(
            "--jwt-key", required=True, metavar="KEYPATH", help="path of Slurm's JWT signing key"
        )
        _add_json(p)
        p.set_defaults(func=_run_conf)

    ini = subparsers.add_parser(
        "agent-ini",
        help="set the [slurmrestd] settings of Slurm-web's agent.ini",
        description="Set uri, auth=jwt, jwt_mode=auto and jwt_key (plus jwt_user and "
        "jwt_lifespan when given) in agent.ini's [slurmrestd] section, keeping the rest.",
    )
    ini_sub = ini.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, help_text in (
        ("plan", "show what would change; never writes"),
        ("apply", "write the change (atomically, owner and mode kept)"),
    ):
        p = ini_sub.add_parser(action, help=help_text)
        p.add_argument("--file", required=True, help="the agent's agent.ini")
        p.add_argument("--uri", required=True, help="e.g. unix:///run/slurmrestd/slurmrestd.socket")
        p.add_argument("--jwt-key", required=True, metavar="PATH", help="the agent's key copy")
        p.add_argument("--jwt-user", default=None, metavar="U")
        p.add_argument("--jwt-lifespan", type=_positive_int, default=None, metavar="N")
        _add_json(p)
        p.set_defaults(func=_run_agent_ini)

    pre = subparsers.add_parser(
        "preflight",
        help="check that this host can take the slurmrestd drop-in",
        description="Check that the slurmrestd unit is installed and that "
        "/etc/default/slurmrestd or /etc/sysconfig/slurmrestd would not break the drop-in.",
    )
    pre.add_argument("--unit", default="slurmrestd.service")
    pre.add_argument("--socket", default=DEFAULT_SOCKET, help="the drop-in's unix socket path")
    _add_json(pre)
    pre.set_defaults(func=_run_preflight)


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


# ------------------------------------------------------------------------------ running


def _run_conf(args: argparse.Namespace) -> int:
    from watchdog_daemon.slurmconf import apply_merge

    return _run_merge(args, lambda dry_run: apply_merge(args.file, args.jwt_key, dry_run=dry_run))


def _run_agent_ini(args: argparse.Namespace) -> int:
    from watchdog_daemon.agentini import apply_agent_ini

    return _run_merge(
        args,
        lambda dry_run: apply_agent_ini(
            args.file,
            uri=args.uri,
            jwt_key=args.jwt_key,
            jwt_user=args.jwt_user,
            jwt_lifespan=args.jwt_lifespan,
            dry_run=dry_run,
        ),
    )


def _run_merge(args: argparse.Namespace, run: Callable[[bool], MergeResult]) -> int:
    dry_run = args.action == "plan"
    try:
        result = run(dry_run)
    except ChangeError as exc:
        if exc.file is None:
            exc.file = args.file
        return _report_error(args, exc.to_dict())
    except OSError as exc:
        # Anything not already turned into a ChangeError (e.g. reading an Include): no file
        # contents in the message, only what failed.
        return _report_error(
            args,
            {
                "error": "config_invalid",
                "detail": "io_error",
                "message": f"{exc.filename or args.file}: {exc.strerror or exc}",
                "hint": "check the path and run as root",
                "exit_code": int(ExitCode.CONFIG_INVALID),
                "file": args.file,
            },
        )
    if args.json:
        _print_json({"action": args.action, **result.to_dict()})
    else:
        _print_human(args.action, result)
    return int(ExitCode.OK)


def _report_error(args: argparse.Namespace, data: dict[str, object]) -> int:
    if args.json:
        _print_json(data)
    else:
        # Same form as the other subcommands: ERROR: <reason>: <message> — <hint>
        hint = f" — {data['hint']}" if data.get("hint") else ""
        print(f"ERROR: {data['error']}: {data['message']}{hint}", file=sys.stderr)
    return int(data["exit_code"])  # type: ignore[call-overload]


def _print_json(data: dict[str, object]) -> None:
    print(json.dumps(data, indent=None, sort_keys=False))


def _print_human(action: str, result: MergeResult) -> None:
    if not result.changed:
        print(f"{result.file}: up to date")
    else:
        verb = "would change" if action == "plan" else "changed"
        # Only the managed lines, never the file (slurmdbd.conf holds StoragePass).
        diff = difflib.unified_diff(
            result.before,
            result.after,
            fromfile=f"{result.file}",
            tofile=f"{result.file} ({verb})",
            lineterm="",
            n=len(result.before) + len(result.after),
        )
        for line in diff:
            if not line.startswith("@@"):  # its numbers would not be the file's line numbers
                print(line)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)


def _run_preflight(args: argparse.Namespace) -> int:
    from watchdog_daemon.preflight import failed, run_preflight

    findings = run_preflight(unit=args.unit, socket_path=args.socket)
    ok = not failed(findings)
    code = int(ExitCode.OK if ok else ExitCode.PREFLIGHT_FAILED)
    if args.json:
        _print_json(
            {
                "ok": ok,
                "unit": args.unit,
                "socket": args.socket,
                "findings": [f.to_dict() for f in findings],
            }
        )
        return code
    for f in findings:
        where = f" ({f.file} line {f.line})" if f.file and f.line else ""
        print(f"{f.level}: {f.message}{where}", file=sys.stderr)
        if f.hint:
            print(f"  hint: {f.hint}", file=sys.stderr)
    print("preflight passed" if ok else "preflight failed")
    return code
