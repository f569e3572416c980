"""One survey per host and phase, reused by every operation until one of them changes the host."""

from __future__ import annotations

from pyinfra import host, state

from deploys.lib.facts import HostState
from deploys.lib.hoststate import HostState as HostStateData
from deploys.lib.settings import AGENT_UNITS, Settings
from deploys.lib.watchconf import WATCH_CONFIG_PATH, WATCH_UNIT, WATCH_UNIT_PATH

_cache: dict[tuple[str, bool], HostStateData] = {}


def survey(settings: Settings) -> HostStateData:
    key = (host.name, state.is_executing)
    if key not in _cache:
        _cache[key] = host.get_fact(
            HostState,
            files=(settings.jwt_key_path, settings.agent_key_path, settings.slurmrestd_dropin,
                   settings.slurm_conf, settings.slurmdbd_conf, settings.agent_ini,
                   WATCH_CONFIG_PATH, WATCH_UNIT_PATH),
            units=(settings.slurmctld_unit, settings.slurmdbd_unit, settings.slurmrestd_unit,
                   *AGENT_UNITS, WATCH_UNIT),
            users=(settings.jwt_key_owner, settings.agent_user),
            groups=(settings.jwt_key_group, settings.agent_group),
            tool_prefix=settings.tool_prefix,
            slurm_conf=settings.slurm_conf,
        )
    return _cache[key]


def forget() -> None:
    """Called by an operation that is about to change this host: the next survey is fresh."""
    _cache.pop((host.name, state.is_executing), None)
