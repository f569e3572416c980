from deploys.lib.settings import settings_from_host_data
from deploys.lib.watchconf import render_watch_toml, render_watch_unit, watch_config


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
