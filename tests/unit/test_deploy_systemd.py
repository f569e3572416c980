"""The deploy's systemd steps on fake hosts: every unit file and link is written before the one
daemon-reload, so that systemd is left with nothing pending (NeedDaemonReload=no)."""

from __future__ import annotations

from slurmrestd_access.watchconf import WATCH_CONFIG_PATH, WATCH_UNIT, WATCH_UNIT_PATH
from tests.unit.fakedeploy import deploy, deployed_host

HOST = "@fake/hpc1"


def first_deploy_host():
    """The watchdog not installed yet, slurmrestd enabled by its package but not running."""
    host = deployed_host()
    for path in (WATCH_CONFIG_PATH, WATCH_UNIT_PATH):
        del host.files[path]
    del host.units[WATCH_UNIT]
    host.units["slurmrestd.service"] = ("inactive", "enabled")
    return host


def test_units_are_enabled_before_the_one_daemon_reload(tmp_path):
    run = deploy(tmp_path, {"hpc1": first_deploy_host()})
    assert run.returncode == 0, run.output[-3000:]
    reloads = run.ran(HOST, "systemctl daemon-reload")
    enables = run.ran(HOST, "systemctl enable")
    assert len(reloads) == 1, run.commands[HOST]
    # `enable --no-reload` after the reload would leave every unit with NeedDaemonReload=yes.
    assert enables and max(enables) < reloads[0], run.commands[HOST]
    assert WATCH_UNIT in run.commands[HOST][enables[0]]
    assert "slurmrestd.service" not in run.commands[HOST][enables[0]]  # already enabled
    starts = run.ran(HOST, "systemctl start")
    assert starts and min(starts) > reloads[0]


def test_a_unit_file_change_alone_reloads_once_and_enables_nothing(tmp_path):
    host = deployed_host()
    owner, group, mode, _ = host.files[WATCH_UNIT_PATH]
    host.files[WATCH_UNIT_PATH] = (owner, group, mode, "0" * 64)  # an older unit
    run = deploy(tmp_path, {"hpc1": host})
    assert run.returncode == 0, run.output[-3000:]
    assert len(run.ran(HOST, "systemctl daemon-reload")) == 1
    assert run.ran(HOST, "systemctl enable") == []


def test_a_no_change_run_reloads_nothing(tmp_path):
    run = deploy(tmp_path, {"hpc1": deployed_host()})
    assert run.returncode == 0, run.output[-3000:]
    assert run.ran(HOST, "daemon-reload") == [] and run.ran(HOST, "systemctl enable") == []
