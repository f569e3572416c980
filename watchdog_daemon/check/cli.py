"""`slurmrestd-access check`: the Slurm-web connect check that a wrong key cannot pass.

It speaks for the Slurm-web release installed (config/slurmweb.py): the REST API version(s) that
release asks for, its agent.ini rules, and its connect-check's success line on stdout, exit 0:
5.x `✅ connection successful (slurm: 24.11.5, cluster: hpc)`, 6.x `✅ connection successful!
(cluster: hpc, slurm: 24.11.5, api: 0.0.42)`; failure `❌ connection failure` on stdout and
`ERROR: <reason>: <message> — <hint>` on stderr, exit the reason's code. With `--json`: one JSON
object on stdout (the same fields), the same exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import TextIO

from watchdog_daemon.check.classify import DEFAULT_SLURM_CONF
from watchdog_daemon.check.result import CheckResult, failure
from watchdog_daemon.check.run import run_check, run_check_with_key
from watchdog_daemon.config.agentconf import (
    DEFAULT_AGENT_INI,
    AgentSettings,
    ConfigError,
    load_installed_agent_settings,
)
from watchdog_daemon.config.slurmweb import VENDOR_DEFINITIONS, add_release_arguments
from watchdog_daemon.keys.keyfile import KeyFileError, read_key


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "check",
        help="prove that slurmrestd, slurmctld and slurmdbd accept the agent's token",
        description="Sign a token with the Slurm-web agent's key copy, as the agent does, and "
        "prove that slurmctld (and slurmdbd, when accounting is used) accept it. A ping that "
        "answers 200 proves nothing; this check makes calls that need the daemons' approval.",
    )
    p.add_argument("--agent-ini", default=DEFAULT_AGENT_INI, metavar="PATH",
                   help=f"the agent's configuration (default {DEFAULT_AGENT_INI})")
    add_release_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--timeout", type=_positive_float, default=10.0, metavar="SECONDS",
                   help="timeout of each call to slurmrestd (default 10)")
    p.add_argument("--total-timeout", type=_positive_float, default=None, metavar="SECONDS",
                   help="timeout of the whole check (default 3 x --timeout)")
    p.add_argument("--accounting", choices=("auto", "yes", "no"), default="auto",
                   help="check slurmdbd too: auto = when slurm.conf uses slurmdbd")
    p.add_argument("--slurm-conf", default=DEFAULT_SLURM_CONF, metavar="PATH",
                   help="read for AccountingStorageType when --accounting auto")
    p.add_argument("--any-api-version", dest="agent_discovery", action="store_false",
                   help="find the API version as any REST client would (newest served), not as "
                   "Slurm-web's agent does (its [slurmrestd] versions): for a Slurm older than "
                   "the agent supports, kept with JWT on purpose for other clients")
    p.add_argument("--no-decoy", dest="decoy", action="store_false",
                   help="skip the call with a token signed with a random key (which must be "
                   "refused; it proves that slurmrestd makes Slurm check tokens)")
    p.add_argument("--key", metavar="PATH", default=None,
                   help="sign with this key file instead of the agent's copy (e.g. the previous "
                   "key after a rotation, which must now be refused: exit 30); read with "
                   "Slurm's rule (no access for others), usually as root")
    p.add_argument("--as-user", metavar="USER", default=None,
                   help="root only: run the check as USER (the agent's user), as `runuser -u "
                   "USER` would; its libraries are loaded before the switch")
    p.set_defaults(func=run)


def load_for_release(args: argparse.Namespace) -> AgentSettings:
    """The agent's settings read for the release installed; ConfigError when either fails."""
    return load_installed_agent_settings(
        args.agent_ini, getattr(args, "slurmweb_release", None),
        getattr(args, "agent_definitions", VENDOR_DEFINITIONS))


def _write(stream: TextIO, text: str) -> None:
    try:
        stream.write(text + "\n")
    except UnicodeEncodeError:  # a non-UTF-8 terminal: keep the line, lose the emoji
        stream.write(text.encode("ascii", "replace").decode("ascii") + "\n")
    stream.flush()


def report(result: CheckResult, *, as_json: bool, out: TextIO, err: TextIO) -> int:
    if as_json:
        _write(out, json.dumps(result.to_dict(), ensure_ascii=False))
    elif result.ok:
        _write(out, result.success_line())
    else:
        _write(out, "❌ connection failure")
        _write(err, result.error_line())
    return int(result.exit_code)


def _become(user: str) -> CheckResult | None:
    from watchdog_daemon.check.run import import_dependencies
    from watchdog_daemon.system.privdrop import NotPermittedError, UserMissingError, become

    import_dependencies()
    try:
        become(user)
    except UserMissingError as exc:
        return failure("user_missing", str(exc))
    except NotPermittedError as exc:
        return failure("permission_denied", str(exc))
    return None


def run(args: argparse.Namespace) -> int:
    if getattr(args, "as_user", None):
        refused = _become(args.as_user)
        if refused is not None:
            return report(refused, as_json=args.json, out=sys.stdout, err=sys.stderr)
    try:
        settings = load_for_release(args)
    except ConfigError as exc:
        result = failure("config_invalid", exc.message, exc.hint)
    else:
        common = {"timeout": args.timeout, "accounting": args.accounting,
                  "slurm_conf": args.slurm_conf, "total_timeout": args.total_timeout,
                  "decoy": args.decoy, "agent_discovery": args.agent_discovery}
        key_path = getattr(args, "key", None)
        if key_path is None:
            result = run_check(settings, **common)
        else:
            try:
                key = read_key(key_path, allow_group=True)
            except KeyFileError as exc:
                result = failure(exc.reason, exc.message, exc.hint)
            else:
                result = run_check_with_key(settings, key, **common)
        if settings.release is not None and result.agent_release is None:
            # Named on every answer (a key problem too): the report shows it per host.
            result = replace(result, agent_series=settings.release.series,
                             agent_release=settings.release.name)
    return report(result, as_json=args.json, out=sys.stdout, err=sys.stderr)


__all__ = ["register", "report", "run"]
