"""`slurmrestd-access conf|agent-ini plan|apply`, `preflight` and `plan`.

The deploy runs these on each host over SSH with `--json` and reads the one JSON document
printed on stdout:

* conf / agent-ini: `{"action", "file", "changed", "before", "after", "warnings"}`, exit 0,
  whether or not a change is pending (`plan` never writes); `before`/`after` hold only the
  managed lines, never the whole file (slurmdbd.conf holds StoragePass);
* preflight: `{"ok", "unit", "socket", "findings": [{"level", "message", "hint", "file",
  "line"}]}`, exit PREFLIGHT_FAILED when a finding is an error;
* on failure: `{"error", "detail", "message", "hint", "exit_code", "file"}` and that exit
  code; `error` is the exit code's documented reason (`change_refused`, `config_invalid`),
  `detail` the kind of failure (`parse_error`, `conflict`, `file_missing`, `write_failed`...);
* plan: all of the above that the deploy needs for one host, from one run of the tool (each
  run costs the host Python's start-up): `{"preflight": {...}, "conf": [{...}, ...],
  "agent_ini": {...}}`, each part the JSON its own command prints plus its `exit_code`; the
  command itself exits 0 once it could look at everything.

Without `--json` the same goes to the terminal: a short diff of the managed lines, errors and
hints on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import sys
from collections.abc import Callable

from watchdog_daemon.config.atomicwrite import ChangeError, MergeResult
from watchdog_daemon.config.dropin import DEFAULT_SOCKET
from watchdog_daemon.config.slurmweb import (
    AgentRelease,
    ReleaseError,
    add_release_arguments,
    detect,
)
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
        add_release_arguments(p)
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
    pre.add_argument("--allow-unsupported-slurm", action="store_true",
                     help="do not refuse a Slurm older than 24.05 (Slurm-web's agent cannot use "
                     "it; JWT for other REST clients)")
    pre.add_argument("--agent-ini", default=None, metavar="FILE",
                     help="on the agent's host: also refuse a Slurm-web release that cannot "
                     "work with this Slurm (read with this agent.ini)")
    add_release_arguments(pre)
    _add_json(pre)
    pre.set_defaults(func=_run_preflight)

    plan = subparsers.add_parser(
        "plan",
        help="the preflight, conf plan and agent-ini plan of one host, as one JSON document",
        description="What the deploy decides from, in one run: the preflight (with "
        "--preflight-unit), a conf plan for each --conf file, and an agent-ini plan (with "
        "--agent-ini). Never writes. Always prints JSON.",
    )
    plan.add_argument("--preflight-unit", default=None, metavar="UNIT")
    plan.add_argument("--socket", default=DEFAULT_SOCKET, help="the drop-in's unix socket path")
    plan.add_argument("--conf", action="append", default=[], metavar="FILE",
                      help="slurm.conf or slurmdbd.conf (repeatable)")
    plan.add_argument("--jwt-key", default=None, metavar="KEYPATH",
                      help="path of Slurm's JWT signing key (with --conf)")
    plan.add_argument("--agent-ini", default=None, metavar="FILE")
    plan.add_argument("--uri", default=None)
    plan.add_argument("--agent-jwt-key", default=None, metavar="PATH",
                      help="the agent's key copy (with --agent-ini)")
    plan.add_argument("--jwt-user", default=None, metavar="U")
    plan.add_argument("--jwt-lifespan", type=_positive_int, default=None, metavar="N")
    plan.add_argument("--allow-unsupported-slurm", action="store_true",
                      help="do not refuse a Slurm-web release this Slurm cannot serve")
    add_release_arguments(plan)
    _add_json(plan)
    plan.set_defaults(func=_run_plan)


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


def _conf_merge(file: str, jwt_key: str) -> Callable[[bool], MergeResult]:
    from watchdog_daemon.config.slurmconf import apply_merge

    return lambda dry_run: apply_merge(file, jwt_key, dry_run=dry_run)


def _agent_ini_merge(file: str, uri: str, jwt_key: str, jwt_user: str | None,
                     jwt_lifespan: int | None, release: AgentRelease | None = None
                     ) -> Callable[[bool], MergeResult]:
    from watchdog_daemon.config.agentini import apply_agent_ini

    return lambda dry_run: apply_agent_ini(
        file, uri=uri, jwt_key=jwt_key, jwt_user=jwt_user, jwt_lifespan=jwt_lifespan,
        dry_run=dry_run, release=release,
    )


def _release(args: argparse.Namespace) -> tuple[AgentRelease | None, ReleaseError | None]:
    try:
        return detect(args.slurmweb_release, definitions_path=args.agent_definitions), None
    except ReleaseError as exc:
        return None, exc


def _release_report(release: AgentRelease | None, error: ReleaseError | None) -> dict:
    if release is None:
        assert error is not None
        return {"ok": False, "message": error.message, "hint": error.hint}
    return {"ok": True, **release.to_dict()}


def _agent_api_versions(agent_ini: str, release: AgentRelease) -> tuple[str, ...]:
    """What the agent will ask slurmrestd for with this agent.ini (its release's defaults when
    the file cannot be read: the agent-ini plan says why)."""
    from watchdog_daemon.config.agentconf import ConfigError, load_agent_settings

    try:
        return load_agent_settings(agent_ini, release).api_versions
    except ConfigError:
        return release.default_api_versions()


def _slurmweb_finding(args: argparse.Namespace, release: AgentRelease | None,
                      error: ReleaseError | None, version: str | None) -> list:
    from watchdog_daemon.config.preflight import slurmweb_finding

    versions = _agent_api_versions(args.agent_ini, release) if release is not None else ()
    finding = slurmweb_finding(release, error, versions, version,
                               getattr(args, "allow_unsupported_slurm", False))
    return [finding] if finding is not None else []


def _run_conf(args: argparse.Namespace) -> int:
    if args.action == "plan" and args.json:
        # The same document as `plan`'s part for this file (configless facts included).
        report = conf_plan_report(args.file, args.jwt_key)
        _print_json(report)
        return int(report["exit_code"])
    return _run_merge(args, _conf_merge(args.file, args.jwt_key))


def _run_agent_ini(args: argparse.Namespace) -> int:
    release, error = _release(args)
    if release is None:
        assert error is not None
        return _report_error(args, {"file": args.file, "error": "config_invalid",
                                    "message": error.message, "hint": error.hint,
                                    "exit_code": int(ExitCode.CONFIG_INVALID)})
    return _run_merge(args, _agent_ini_merge(args.file, args.uri, args.jwt_key, args.jwt_user,
                                             args.jwt_lifespan, release))


def merge_report(
    action: str, file: str, run: Callable[[bool], MergeResult]
) -> tuple[dict[str, object], MergeResult | None]:
    """Run a merge (plan: dry run) and say what came of it as the JSON the commands print."""
    try:
        result = run(action == "plan")
    except ChangeError as exc:
        if exc.file is None:
            exc.file = file
        return exc.to_dict(), None
    except OSError as exc:
        # Anything not already turned into a ChangeError (e.g. reading an Include): no file
        # contents in the message, only what failed.
        return {
            "error": "config_invalid",
            "detail": "io_error",
            "message": f"{exc.filename or file}: {exc.strerror or exc}",
            "hint": "check the path and run as root",
            "exit_code": int(ExitCode.CONFIG_INVALID),
            "file": file,
        }, None
    return {"action": action, **result.to_dict()}, result


def _run_merge(args: argparse.Namespace, run: Callable[[bool], MergeResult]) -> int:
    report, result = merge_report(args.action, args.file, run)
    if result is None:
        return _report_error(args, report)
    if args.json:
        _print_json(report)
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


def preflight_report(unit: str, socket_path: str, release: bool = False,
                     allow_unsupported: bool = False, args: argparse.Namespace | None = None,
                     agent_release: tuple[AgentRelease | None, ReleaseError | None] | None = None
                     ) -> tuple[dict[str, object], list]:
    """The preflight's findings; with `release`, also whether this host's Slurm is supported;
    with `args.agent_ini`, whether the Slurm-web release installed (`agent_release`, detected
    here when not given) can work with it."""
    from watchdog_daemon.config.preflight import failed, release_finding, run_preflight
    from watchdog_daemon.config.slurmrelease import read_release

    findings = run_preflight(unit=unit, socket_path=socket_path)
    version = None
    if release:
        version = read_release()
        finding = release_finding(version, allow_unsupported)
        findings = ([finding] if finding else []) + findings
    agent: dict | None = None
    if args is not None and getattr(args, "agent_ini", None):
        if version is None:
            version = read_release()
        detected, error = agent_release if agent_release is not None else _release(args)
        agent = _release_report(detected, error)
        findings = _slurmweb_finding(args, detected, error, version) + findings
    ok = not failed(findings)
    report: dict[str, object] = {
        "ok": ok,
        "unit": unit,
        "socket": socket_path,
        "findings": [f.to_dict() for f in findings],
        "exit_code": int(ExitCode.OK if ok else ExitCode.PREFLIGHT_FAILED),
    }
    if release:
        report["slurm"] = version
    if agent is not None:
        report["slurmweb"] = agent
    return report, findings


def _run_preflight(args: argparse.Namespace) -> int:
    report, findings = preflight_report(args.unit, args.socket, release=True,
                                        allow_unsupported=args.allow_unsupported_slurm, args=args)
    code = int(report.pop("exit_code"))  # type: ignore[call-overload]
    if args.json:
        _print_json(report)
        return code
    for f in findings:
        where = f" ({f.file} line {f.line})" if f.file and f.line else ""
        print(f"{f.level}: {f.message}{where}", file=sys.stderr)
        if f.hint:
            print(f"  hint: {f.hint}", file=sys.stderr)
    print("preflight passed" if code == 0 else "preflight failed")
    return code


def _run_plan(args: argparse.Namespace) -> int:
    if args.conf and not args.jwt_key:
        return _usage(args, "--conf needs --jwt-key")
    if args.agent_ini and not (args.uri and args.agent_jwt_key):
        return _usage(args, "--agent-ini needs --uri and --agent-jwt-key")
    plan: dict[str, object] = {}
    # Detected once (a package manager query) for the preflight and the agent-ini plan.
    release, error = _release(args) if args.agent_ini else (None, None)
    if args.preflight_unit:
        plan["preflight"] = preflight_report(args.preflight_unit, args.socket, args=args,
                                             agent_release=(release, error))[0]
    if args.agent_ini:
        plan["slurmweb"] = _release_report(release, error)
    conf_reports = [conf_plan_report(file, args.jwt_key) for file in args.conf]
    plan["conf"] = conf_reports
    if args.agent_ini and release is None:
        assert error is not None
        plan["agent_ini"] = {"file": args.agent_ini, "error": "config_invalid",
                             "message": error.message, "hint": error.hint,
                             "exit_code": int(ExitCode.CONFIG_INVALID)}
    elif args.agent_ini:
        report, _ = merge_report("plan", args.agent_ini, _agent_ini_merge(
            args.agent_ini, args.uri, args.agent_jwt_key, args.jwt_user, args.jwt_lifespan,
            release))
        report.setdefault("exit_code", int(ExitCode.OK))
        plan["agent_ini"] = report
    _print_json(plan)
    return int(ExitCode.OK)


def conf_plan_report(file: str, jwt_key: str) -> dict:
    """The plan for one Slurm config file, and what it says about configless Slurm: on a
    configless host (no local slurm.conf, the cache sackd or slurmd keep), that nothing is merged
    here and which file Slurm reads instead; on a controller, whether it serves its files."""
    from watchdog_daemon.config.configless import serves_configless, slurm_conf_to_read
    from watchdog_daemon.config.slurmconf import configured_value, configured_values

    if os.path.basename(file) == "slurm.conf":
        reads = slurm_conf_to_read(file)
        if reads != file:
            # Never created here: slurmrestd would then read it instead of the cluster's file.
            return {"action": "plan", "file": file, "configless": True, "reads": reads,
                    "changed": False, "before": [], "after": [], "warnings": [],
                    "exit_code": int(ExitCode.OK)}
    report, _ = merge_report("plan", file, _conf_merge(file, jwt_key))
    report.setdefault("exit_code", int(ExitCode.OK))
    if os.path.basename(file) == "slurm.conf" and report["exit_code"] == 0:
        # The merge read it a moment ago: a failure here has nothing to add to what it said.
        with contextlib.suppress(ChangeError, OSError):
            report["configless_server"] = serves_configless(
                configured_value(file, "SlurmctldParameters"))
            # The controllers, primary first ("name" or "name(address)"): the deploy's restart
            # order takes the primary from the inventory and checks it against this.
            report["slurmctld_hosts"] = [v.split("(", 1)[0].strip()
                                         for v in configured_values(file, "SlurmctldHost")]
    return report


def _usage(args: argparse.Namespace, message: str) -> int:
    return _report_error(args, {"error": "usage", "message": message, "hint": "",
                                "exit_code": int(ExitCode.USAGE)})
