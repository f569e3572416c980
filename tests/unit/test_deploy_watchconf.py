import pytest

from slurmrestd_access.hoststate import HostState, RemoteFile, UnitState
from slurmrestd_access.settings import SettingsError, settings_from_host_data
from slurmrestd_access.watchconf import (
    WATCH_CONFIG_PATH,
    WATCH_STATE_FILE,
    WATCH_UNIT,
    WATCH_UNIT_PATH,
    removal_script,
    render_watch_toml,
    render_watch_unit,
    watch_config,
    watchdog_leftover,
)


def test_watch_config_follows_the_host_data():
    s = settings_from_host_data("h", {"cluster": "c", "agent_key_path": '/srv/s"w/key',
                                      "agent_unit": "slurm-web-agent-uwsgi.service"})
    cfg = watch_config(s)
    assert str(cfg.copy_path) == '/srv/s"w/key'
    assert str(cfg.key_path) == "/var/spool/slurm/jwt_hs256.key"
    assert cfg.copy_mode == 0o400 and cfg.copy_owner == "slurm-web"
    assert cfg.agent_units == ("slurm-web-agent-uwsgi.service",)
    assert "agent_units" in render_watch_toml(s)


def test_default_watch_config_is_auto_agent_unit_and_unit_runs_the_linked_tool():
    s = settings_from_host_data("h", {"cluster": "c"})
    assert watch_config(s).agent_units is None
    unit = render_watch_unit(s)
    assert "ExecStart=/usr/local/bin/slurmrestd-access watch" in unit
    assert "ReadWritePaths=-/var/lib/slurm-web" in unit
    assert "Type=notify" in unit


def test_rendered_watch_config_has_nothing_deprecated_and_restarts_every_key():
    s = settings_from_host_data("h", {"cluster": "c"})
    text = render_watch_toml(s)
    cfg = watch_config(s)
    assert cfg.warnings == ()
    assert "restart_budget" not in text and "restart_window" not in text
    assert cfg.restart_spacing <= 3.0 and cfg.probe_interval <= 1.0


# -- what is left of a watchdog on an agent host that must not run it (no key there) ----------


def host_with(unit=None, unit_file_kind="regular file", config=True) -> HostState:
    hs = HostState()
    if unit:
        hs.units[WATCH_UNIT] = UnitState(WATCH_UNIT, *unit)
    if unit_file_kind:
        hs.files[WATCH_UNIT_PATH] = RemoteFile(WATCH_UNIT_PATH, True, unit_file_kind, "root",
                                               "root", 0o644, "0" * 64)
    if config:
        hs.files[WATCH_CONFIG_PATH] = RemoteFile(WATCH_CONFIG_PATH, True, "regular file", "root",
                                                 "root", 0o644, "1" * 64)
    return hs


def test_no_trace_of_the_watchdog_means_nothing_to_do():
    hs = host_with(unit=("not-found", "inactive", ""), unit_file_kind=None, config=False)
    assert watchdog_leftover(hs) is None
    assert watchdog_leftover(HostState()) is None  # not even in the survey


def test_what_an_earlier_deploy_installed_is_stopped_disabled_and_removed():
    leftover = watchdog_leftover(host_with(unit=("loaded", "active", "enabled")))
    assert leftover is not None and leftover.stop and leftover.disable
    assert leftover.files == (WATCH_UNIT_PATH, WATCH_CONFIG_PATH)
    script = removal_script(leftover).splitlines()
    assert script[0] == "set -e"
    disable = script.index(f"systemctl disable --no-reload {WATCH_UNIT}")
    stop = next(i for i, line in enumerate(script)
                if line.startswith(f"systemctl stop {WATCH_UNIT}"))
    remove = script.index(f"rm -f {WATCH_UNIT_PATH} {WATCH_CONFIG_PATH}")
    assert disable < remove and stop < remove  # systemctl needs the unit file to disable it
    assert f"rm -f {WATCH_STATE_FILE}" in script
    assert "daemon-reload" not in "\n".join(script)  # the deploy's one reload follows


@pytest.mark.parametrize(("unit", "stop", "disable"), [
    (("not-found", "failed", ""), True, False),  # file gone without a reload, failed in memory
    (("not-found", "active", ""), True, False),  # still running from a deleted file
    (("loaded", "inactive", "enabled"), False, True),  # a unit file elsewhere (not ours)
    (("loaded", "inactive", "disabled"), None, None),  # stopped and disabled: nothing to do
])
def test_a_unit_is_stopped_and_disabled_by_its_states_not_by_its_file(unit, stop, disable):
    leftover = watchdog_leftover(host_with(unit=unit, unit_file_kind=None, config=False))
    if stop is None:
        assert leftover is None  # e.g. its file lives elsewhere: a re-run does not touch it
        return
    assert leftover is not None and (leftover.stop, leftover.disable) == (stop, disable)
    assert leftover.files == ()
    script = removal_script(leftover)
    assert ("systemctl disable" in script) is disable
    assert ("systemctl stop" in script) is stop


def test_a_masked_watchdog_keeps_its_mask_only_the_config_goes():
    hs = host_with(unit=("masked", "inactive", "masked"), unit_file_kind="symbolic link")
    leftover = watchdog_leftover(hs)
    assert leftover is not None and not leftover.stop and not leftover.disable
    assert leftover.files == (WATCH_CONFIG_PATH,)
    assert WATCH_UNIT_PATH not in removal_script(leftover)


def test_the_watchdog_and_the_deploys_check_read_the_slurm_conf_of_the_host_data():
    """A site whose slurm.conf is elsewhere: the watchdog (watch.toml) and every check the
    deploy, the rotation and the report run (check_args) read that file for accounting."""
    from slurmrestd_access.toolplan import check_args

    s = settings_from_host_data("h", {"cluster": "c", "slurm_conf": "/etc/slurm-llnl/slurm.conf"})
    assert str(watch_config(s).slurm_conf) == "/etc/slurm-llnl/slurm.conf"
    args = check_args(s)
    assert args[args.index("--slurm-conf") + 1] == "/etc/slurm-llnl/slurm.conf"
    default = settings_from_host_data("h", {"cluster": "c"})
    assert str(watch_config(default).slurm_conf) == "/etc/slurm/slurm.conf"


def test_the_watchdogs_health_interval_comes_from_the_host_data():
    assert watch_config(settings_from_host_data("h", {"cluster": "c"})).health_interval == 60
    s = settings_from_host_data("h", {"cluster": "c", "watch_health_interval": 5})
    assert watch_config(s).health_interval == 5
    with pytest.raises(SettingsError):
        settings_from_host_data("h", {"cluster": "c", "watch_health_interval": 0})
