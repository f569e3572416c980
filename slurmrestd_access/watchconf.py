"""What the deploy writes for the watchdog on an agent host: watch.toml and the unit; and what it
removes from an agent host that must not run it. Pure.

The watchdog's config repeats the deploy's own paths and owners for this host, so that the
daemon watches exactly what the deploy set up, even where the host data differs from the
documentation's defaults.
"""

from __future__ import annotations

import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

from slurmrestd_access.hoststate import HostState
from slurmrestd_access.settings import Settings
from watchdog_daemon.watch.config import DEFAULT_CONFIG_PATH, WatchConfig, config_from_mapping
from watchdog_daemon.watch.unit import UNIT_NAME, render_unit

WATCH_UNIT = UNIT_NAME
WATCH_UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
WATCH_CONFIG_PATH = str(DEFAULT_CONFIG_PATH)
# The daemon's default state file (the deploy's watch.toml keeps it), read by `status`.
WATCH_STATE_FILE = str(WatchConfig.__dataclass_fields__["state_file"].default)


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
        f"slurm_conf = {_toml_string(settings.slurm_conf)}",
        f"health_interval = {settings.watch_health_interval}",
        # Other timing (probe_interval, circuit_*) stays the daemon's default: no
        # restart_budget/restart_window any more, which the daemon would only warn about.
    ]
    if settings.watch_restart_spacing is not None:
        lines.append(f"restart_spacing = {settings.watch_restart_spacing:g}")
    if settings.watch_metrics:
        lines.append(f"metrics = {_toml_string(settings.watch_metrics)}")
    if settings.agent_unit:
        lines.append(f"agent_units = [{_toml_string(settings.agent_unit)}]")
    if settings.slurmweb_release:
        lines.append(f"slurmweb_release = {_toml_string(settings.slurmweb_release)}")
    return "\n".join(lines) + "\n"


def watch_config(settings: Settings) -> WatchConfig:
    """The config the daemon will load from render_watch_toml (validates it, too)."""
    return config_from_mapping(tomllib.loads(render_watch_toml(settings)),
                               source=Path(WATCH_CONFIG_PATH))


def render_watch_unit(settings: Settings) -> str:
    return render_unit(watch_config(settings), exec_path=settings.tool_link)


@dataclass(frozen=True)
class WatchdogLeftover:
    """What an earlier deploy left of the watchdog on an agent host that must not run it (one
    that does not hold Slurm's key: see ClusterPlan.watchdog_hosts)."""

    stop: bool  # running, or failed, in systemd's memory: stop it (and forget the failure)
    disable: bool  # enabled: `systemctl disable` removes the wants link
    files: tuple[str, ...]  # the unit file and watch.toml the deploy wrote

    def describe(self) -> str:
        parts = (["stop"] if self.stop else []) + (["disable"] if self.disable else [])
        parts += [f"remove {f}" for f in self.files]
        return ", ".join(parts)


def watchdog_leftover(hs: HostState) -> WatchdogLeftover | None:
    """None when the host's survey shows no trace of the watchdog (a re-run changes nothing).

    Decided on states, not on existence, so that a re-run finds nothing more to do whatever
    is left: a unit still active or failed is stopped, an enabled one disabled, and only the
    files the deploy wrote are removed. A mask (a symlink to /dev/null at the unit's path) is
    the administrator's and is kept.
    """
    unit = hs.unit(WATCH_UNIT)
    stop = unit.active not in ("inactive", "")
    disable = unit.unit_file in ("enabled", "enabled-runtime")
    ours = (WATCH_UNIT_PATH, WATCH_CONFIG_PATH)
    files = tuple(p for p in ours if hs.file(p).kind == "regular file")
    if not (stop or disable or files):
        return None
    return WatchdogLeftover(stop=stop, disable=disable, files=files)


def removal_script(leftover: WatchdogLeftover) -> str:
    """One shell script: stop and disable the unit, then remove its files and its state.

    `--no-reload`: the deploy's one daemon-reload follows (after every unit file change).
    """
    q = shlex.quote
    unit = q(WATCH_UNIT)
    lines = ["set -e"]
    if leftover.disable:
        lines.append(f"systemctl disable --no-reload {unit}")
    if leftover.stop:
        # (Stopped, or not active anyway: a unit whose file is already gone may say "not loaded".)
        lines.append(f"systemctl stop {unit} || ! systemctl is-active -q {unit}")
        # A failed unit stays listed as failed after its file is gone, until this.
        lines.append(f"systemctl reset-failed {unit} 2>/dev/null || true")
    if leftover.files:
        lines.append("rm -f " + " ".join(q(f) for f in leftover.files))
    state_dir, config_dir = (p.rsplit("/", 1)[0] for p in (WATCH_STATE_FILE, WATCH_CONFIG_PATH))
    # Its state (RuntimeDirectoryPreserve=yes keeps it after the stop), so that `status` says
    # plainly that no watchdog runs here; the directories only when nothing else is in them.
    lines.append(f"rm -f {q(WATCH_STATE_FILE)}")
    lines.append(f"rmdir {q(state_dir)} {q(config_dir)} 2>/dev/null || true")
    return "\n".join(lines)
