"""`slurmrestd-access watch` (the key-rotation daemon) and `slurmrestd-access status`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from watchdog_daemon import __version__
from watchdog_daemon.exitcodes import ExitCode
from watchdog_daemon.watch.config import (
    DEFAULT_CONFIG_PATH,
    WatchConfig,
    WatchConfigError,
    load_watch_config,
)


def register(subparsers: Any) -> None:
    watch = subparsers.add_parser(
        "watch", help="keep the agent's key copy in step with Slurm's key (systemd daemon)",
        description="Watch Slurm's JWT key; when it changes and Slurm accepts it, install the "
        "agent's copy atomically and restart the agent unit in use.",
    )
    watch.add_argument("--config", type=Path, default=None,
                       help=f"TOML config (default {DEFAULT_CONFIG_PATH}; missing = defaults)")
    watch.add_argument("--check-config", action="store_true",
                       help="validate the configuration and agent.ini, then exit")
    watch.add_argument("--print-unit", action="store_true",
                       help="print the hardened systemd unit for this configuration and exit")
    watch.set_defaults(func=cmd_watch)

    status = subparsers.add_parser(
        "status", help="print the watch daemon's current state (JSON); exit 0 only while the "
        "agent can serve now")
    status.add_argument("--config", type=Path, default=None, help="TOML config of the daemon")
    status.add_argument("--state-file", type=Path, default=None,
                        help="state file to read (default: from the config)")
    status.add_argument("--json", action="store_true",
                        help="JSON on standard output (the default; for scripts that say so)")
    status.set_defaults(func=cmd_status)


def _error(reason: str, message: str, code: ExitCode, hint: str = "") -> int:
    print(f"❌ {message}", file=sys.stderr)
    if hint:
        print(f"   hint: {hint}", file=sys.stderr)
    _json_log("error", "watch_config_invalid" if code == ExitCode.CONFIG_INVALID else reason,
              reason=reason, message=message, exit_code=int(code))
    return int(code)


def _json_log(level: str, event: str, **fields: Any) -> None:
    try:
        import structlog

        getattr(structlog.get_logger("slurmrestd-access.watch"), level)(event, **fields)
    except Exception:  # noqa: S110 - stderr already has the message
        pass


def configure_logging() -> None:
    """The project's structlog setup: JSON lines on stderr (the journal), no locals."""
    from watchdog_daemon.logging_setup import configure_logging as configure

    configure()


def validate(config: WatchConfig) -> tuple[str, str, ExitCode, str] | None:
    """Start-time checks that turn a silent months-long misbehaviour into a clear error."""
    from watchdog_daemon.config.agentconf import ConfigError, load_installed_agent_settings
    from watchdog_daemon.keys.keyfile import KeyFileError
    from watchdog_daemon.keys.keywrite import resolve_owner

    try:
        settings = load_installed_agent_settings(config.agent_ini, config.slurmweb_release)
    except ConfigError as exc:
        return ("config_invalid", str(exc), ExitCode.CONFIG_INVALID, "")
    if Path(settings.jwt_key) != config.copy_path:
        return ("config_invalid",
                f"agent.ini jwt_key is {settings.jwt_key} but the watch config's copy_path is "
                f"{config.copy_path}: the agent would never read the synced key",
                ExitCode.CONFIG_INVALID,
                f"set copy_path = \"{settings.jwt_key}\" in "
                f"{config.config_path or DEFAULT_CONFIG_PATH} (or fix agent.ini)")
    try:
        resolve_owner(config.copy_owner, config.copy_group, config.copy_path)
    except KeyFileError as exc:
        return (exc.reason, exc.message, exc.exit_code, exc.hint)
    return None


def cmd_watch(args: argparse.Namespace) -> int:
    configure_logging()
    try:
        config = load_watch_config(args.config)
    except WatchConfigError as exc:
        return _error("config_invalid", str(exc), ExitCode.CONFIG_INVALID)
    if args.print_unit:
        from watchdog_daemon.watch.unit import render_unit

        sys.stdout.write(render_unit(config))
        return int(ExitCode.OK)
    problem = validate(config)
    if problem is not None:
        return _error(problem[0], problem[1], problem[2], problem[3])
    if args.check_config:
        print(json.dumps({"ok": True, "key_path": str(config.key_path),
                          "copy_path": str(config.copy_path),
                          "warnings": list(config.warnings)}))
        return int(ExitCode.OK)

    from watchdog_daemon.watch.daemon import StartConfigError, WatchDaemon

    try:
        daemon = WatchDaemon(config)
        return daemon.run()
    except StartConfigError as exc:
        # e.g. the metrics port is taken: a clear error at start, not a half-running daemon.
        # The only exit with CONFIG_INVALID after validate(): systemd does not restart it.
        return _error("config_invalid", f"cannot start: {exc}", ExitCode.CONFIG_INVALID,
                      f"fix {config.config_path or DEFAULT_CONFIG_PATH}")
    except OSError as exc:
        # A runtime I/O error the daemon could not get past (it logged and retried first). Not
        # a configuration problem: an exit code that systemd restarts.
        return _error("io_error", f"stopped by an I/O error: {exc.strerror or exc}",
                      ExitCode.IO_ERROR, "systemd restarts the daemon; see the journal for "
                      "the runtime_io_error events before this one")


def cmd_status(args: argparse.Namespace) -> int:
    from watchdog_daemon.watch.state import pid_alive, read_state

    state_file = args.state_file
    if state_file is None:
        try:
            state_file = load_watch_config(args.config).state_file
        except WatchConfigError as exc:
            print(f"❌ {exc}", file=sys.stderr)
            return int(ExitCode.CONFIG_INVALID)
    state = read_state(state_file)
    if state is None:
        print(json.dumps({"running": False, "state_file": str(state_file),
                          "tool_version": __version__,
                          "message": "no state: is slurmrestd-access-watch.service running?"},
                         indent=2))
        return int(ExitCode.WATCH_NOT_READY)
    from watchdog_daemon.watch.health import health, proof_age

    # The pid AND its start time: a dead daemon's pid may belong to another process by now.
    state["running"] = pid_alive(state.get("pid"), state.get("pid_start"))
    # 0 only while the agent can serve now: the copy in step, and the daemon's last proof
    # recent and good; otherwise the most specific reason's code (docs/watchdog.md's table).
    code, reason = health(state) if state["running"] else (int(ExitCode.WATCH_NOT_READY),
                                                           "watch_not_running")
    age = proof_age(state)
    # Which release of the tool answers: what the fleet report lists per host.
    state.update(status_exit_code=code, status_reason=reason, agent_serving=code == 0,
                 tool_version=__version__,
                 proof_age_seconds=None if age is None else round(age, 1))
    print(json.dumps(state, indent=2, sort_keys=True))
    return code
