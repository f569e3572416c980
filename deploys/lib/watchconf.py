"""What the deploy writes for the watchdog on an agent host: watch.toml and the unit. Pure.

The watchdog's config repeats the deploy's own paths and owners for this host, so that the
daemon watches exactly what the deploy set up, even where the host data differs from the
documentation's defaults.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from deploys.lib.settings import Settings
from watchdog_daemon.watch.config import DEFAULT_CONFIG_PATH, WatchConfig, config_from_mapping
from watchdog_daemon.watch.unit import UNIT_NAME, render_unit

WATCH_UNIT = UNIT_NAME
WATCH_UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
WATCH_CONFIG_PATH = str(DEFAULT_CONFIG_PATH)


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_watch_toml(settings: Settings) -> str:
    lines = [
        "# Written by the slurmrestd-access deploy: the same paths as its host data.",
        f"key_path = {_toml_string(settings.jwt_key_path)}",
        f"copy_path = {_toml_string(settings.agent_key_path)}",
        f"copy_owner = {_toml_string(settings.agent_user)}",
        f"copy_group = {_toml_string(settings.agent_group)}",
        f'copy_mode = "{settings.agent_key_mode:04o}"',
        f"agent_ini = {_toml_string(settings.agent_ini)}",
        # Timing (probe_interval, restart_spacing, circuit_*) stays the daemon's default: no
        # restart_budget/restart_window any more, which the daemon would only warn about.
    ]
    if settings.agent_unit:
        lines.append(f"agent_units = [{_toml_string(settings.agent_unit)}]")
    return "\n".join(lines) + "\n"


def watch_config(settings: Settings) -> WatchConfig:
    """The config the daemon will load from render_watch_toml (validates it, too)."""
    return config_from_mapping(tomllib.loads(render_watch_toml(settings)),
                               source=Path(WATCH_CONFIG_PATH))


def render_watch_unit(settings: Settings) -> str:
    return render_unit(watch_config(settings), exec_path=settings.tool_link)
