"""The one `slurmrestd-access plan` per host: its arguments, and that it answers as the single
commands the deploy later applies with would."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slurmrestd_access.settings import SettingsError, settings_from_host_data
from slurmrestd_access.toolplan import agent_ini_args, conf_files, plan_args, plan_problems
from watchdog_daemon import cli

ROOT = Path(__file__).resolve().parents[2]
ALL = frozenset({"slurmctld", "slurmdbd", "slurmrestd", "compute"})


def tool(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "watchdog_daemon.cli", *args, "--json"],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    data = json.loads(done.stdout)
    data.setdefault("exit_code", done.returncode)
    return data


@pytest.fixture
def site(tmp_path: Path):
    (tmp_path / "slurm.conf").write_text("ClusterName=hpc\nAuthAltTypes=auth/foo\n")
    (tmp_path / "slurmdbd.conf").write_text("DbdHost=db\nStoragePass=s3cret\n")
    os.chmod(tmp_path / "slurmdbd.conf", 0o600)
    (tmp_path / "agent.ini").write_text("[service]\ncluster = hpc\n")
    return settings_from_host_data("h", {
        "cluster": "hpc", "slurm_conf": str(tmp_path / "slurm.conf"),
        "slurmdbd_conf": str(tmp_path / "slurmdbd.conf"),
        "agent_ini": str(tmp_path / "agent.ini"), "jwt_user": "slurm", "jwt_lifespan": 600,
        "slurmweb_release": "6.0",  # no Slurm-web on this machine: named, as host data may
    })


@pytest.mark.parametrize(("roles", "files"), [
    (ALL, ["slurm.conf", "slurmdbd.conf"]),
    (frozenset({"slurmdbd"}), ["slurmdbd.conf"]),
    (frozenset({"slurmrestd"}), ["slurm.conf"]),
    (frozenset({"compute"}), ["slurm.conf"]),
])
def test_conf_files_by_role(site, roles, files):
    assert [Path(f).name for f in conf_files(site, roles)] == files


def test_plan_arguments_are_the_tool_s(site):
    args = cli.build_parser("config.cli").parse_args(["plan", *plan_args(site, ALL)])
    assert args.preflight_unit == site.slurmrestd_unit
    assert args.socket == site.slurmrestd_socket
    assert args.conf == [site.slurm_conf, site.slurmdbd_conf]
    assert args.jwt_key == site.jwt_key_path
    assert (args.agent_ini, args.uri, args.agent_jwt_key) == (
        site.agent_ini, site.socket_uri, site.agent_key_path)
    assert (args.jwt_user, args.jwt_lifespan) == ("slurm", 600)


def test_a_dbd_host_is_asked_for_its_file_only(site):
    args = cli.build_parser("config.cli").parse_args(["plan", *plan_args(site, frozenset({
        "slurmdbd"}))])
    assert args.conf == [site.slurmdbd_conf]
    assert args.preflight_unit is None and args.agent_ini is None


def test_the_plan_says_what_the_single_commands_say(site):
    plan = tool("plan", *plan_args(site, ALL))
    for file, part in zip(conf_files(site, ALL), plan["conf"], strict=True):
        assert part == tool("conf", "plan", "--file", file, "--jwt-key", site.jwt_key_path)
    single = tool("agent-ini", "plan", *agent_ini_args(site))
    assert plan["agent_ini"] == single
    assert "jwt_lifespan = 600" in single["after"]
    assert plan["preflight"]["unit"] == site.slurmrestd_unit
    assert "s3cret" not in json.dumps(plan)


def test_a_clean_plan_stops_nothing():
    plan = {"conf": [{"file": "/etc/slurm/slurm.conf", "changed": True, "exit_code": 0}],
            "preflight": {"ok": True, "findings": [], "exit_code": 0},
            "agent_ini": {"changed": False, "exit_code": 0}}
    assert plan_problems(plan, agent_host=True) == []
    assert plan_problems({"conf": []}, agent_host=False) == []


def test_every_problem_of_the_plan_is_named():
    plan = {
        "conf": [{"file": "/etc/slurm/slurm.conf", "exit_code": 40, "message": "line 3: indented "
                  "Include", "hint": "start it at the beginning"},
                 {"file": "/etc/slurm/slurmdbd.conf", "exit_code": 0}],
        "preflight": {"exit_code": 41, "findings": [
            {"level": "warning", "message": "meh"},
            {"level": "error", "message": "SLURMRESTD_LISTEN set", "hint": "remove it"}]},
        "agent_ini": {"file": "/etc/slurm-web/agent.ini", "exit_code": 10,
                      "message": "[service] cluster is missing"},
    }
    assert plan_problems(plan, agent_host=True) == [
        "SLURMRESTD_LISTEN set — remove it",
        "cannot merge into /etc/slurm/slurm.conf: line 3: indented Include — start it at the "
        "beginning",
        "cannot merge into /etc/slurm-web/agent.ini: [service] cluster is missing",
    ]
    # Not the agent host: its preflight and agent.ini are not this host's business.
    assert plan_problems(plan, agent_host=False) == [plan_problems(plan, True)[1]]


def test_a_tool_that_could_not_look_is_a_problem():
    assert plan_problems({"exit_code": 1, "error": "unreadable_output"}, agent_host=False) == [
        "the host tool could not look at this host: unreadable_output"]
    assert plan_problems({"conf": []}, agent_host=True) == [
        "preflight: no preflight report", "cannot merge into ?: no agent.ini plan"]


def test_the_controller_is_asked_with_the_hosts_slurm_conf():
    """scontrol finds slurm.conf at its compiled-in path; a host whose slurm.conf is elsewhere
    (and a sudo shell, whose env_reset drops SLURM_CONF) must be told where."""
    from slurmrestd_access.settings import settings_from_host_data
    from slurmrestd_access.toolplan import controller_up

    default = settings_from_host_data("h", {"cluster": "hpc"})
    assert controller_up(default).startswith("SLURM_CONF=/etc/slurm/slurm.conf scontrol ping")
    llnl = settings_from_host_data("h", {"cluster": "hpc",
                                         "slurm_conf": "/etc/slurm-llnl/slurm.conf"})
    assert "SLURM_CONF=/etc/slurm-llnl/slurm.conf scontrol ping" in controller_up(llnl)


def test_the_release_host_data_names_reaches_every_command_that_reads_agent_ini(site):
    """slurmweb_release (where nothing on the host names the release): the check, the
    agent-ini merge, the plan and the watchdog's config all get it; without it, none does."""
    from slurmrestd_access.toolplan import check_args
    from slurmrestd_access.watchconf import render_watch_toml, watch_config

    assert site.slurmweb_release == "6.0"
    for args in (list(check_args(site)), agent_ini_args(site), plan_args(site, ALL)):
        assert args.count("--slurmweb-release") == 1, args
        assert args[args.index("--slurmweb-release") + 1] == "6.0", args
    assert 'slurmweb_release = "6.0"' in render_watch_toml(site)
    assert watch_config(site).slurmweb_release == "6.0"
    bare = dataclasses.replace(site, slurmweb_release=None)
    assert "--slurmweb-release" not in [*check_args(bare), *agent_ini_args(bare),
                                        *plan_args(bare, ALL)]
    assert "slurmweb_release" not in render_watch_toml(bare)


@pytest.mark.parametrize("value", ["4.2", "5.2", "6.0", "5.2.1"])
def test_slurmweb_release_values_taken(value):
    assert settings_from_host_data("h", {"cluster": "c", "slurmweb_release": value}) \
        .slurmweb_release == value


@pytest.mark.parametrize("value", ["3.1", "7.0", "latest", 5.2, True])
def test_slurmweb_release_values_refused_by_name(value):
    with pytest.raises(SettingsError, match=r"slurmweb_release=.* is not a Slurm-web release"):
        settings_from_host_data("h", {"cluster": "c", "slurmweb_release": value})
