"""Which agent hosts the deploy gives the rotation watchdog, on fake hosts: only those that hold
Slurm's key. On a split layout (slurmrestd apart from slurmctld/slurmdbd) the agent host gets
none, and one an earlier deploy installed there is taken away, once."""

from __future__ import annotations

from slurmrestd_access.watchconf import WATCH_CONFIG_PATH, WATCH_UNIT, WATCH_UNIT_PATH
from tests.unit.fakedeploy import KEY, deploy, deployed_host

CTL, DB, REST = "@fake/ctl", "@fake/db", "@fake/rest"


def split(rest_leftover: bool = False) -> dict:
    """ctl (slurmctld, compute), db (slurmdbd), rest (slurmrestd): deployed already."""
    hosts = {
        "ctl": deployed_host(roles=("slurmctld", "compute")),
        "db": deployed_host(roles=("slurmdbd",)),
        "rest": deployed_host(roles=("slurmrestd",)),
    }
    rest = hosts["rest"]
    del rest.files[KEY]  # the agent host holds only the agent's copy
    if not rest_leftover:
        for path in (WATCH_CONFIG_PATH, WATCH_UNIT_PATH):
            del rest.files[path]
        del rest.units[WATCH_UNIT]
    return hosts


def actions(run, host: str) -> list[str]:
    """The commands that act on the host (not the survey, which reads every unit's state)."""
    return [c for c in run.commands.get(host, []) if "export LC_ALL=C" not in c]


def watch_commands(run, host: str) -> list[str]:
    return [c for c in actions(run, host) if WATCH_UNIT in c or "watch.toml" in c]


def test_the_agent_host_without_the_key_gets_no_watchdog(tmp_path):
    hosts = split()
    # A first deploy there: nothing of the watchdog's is written, enabled or started.
    hosts["rest"].units["slurmrestd.service"] = ("inactive", "disabled")
    run = deploy(tmp_path, hosts)
    assert run.returncode == 0, run.output[-3000:]
    assert watch_commands(run, REST) == [], run.commands[REST]
    assert any("systemctl enable --no-reload slurmrestd.service" in c
               for c in run.commands[REST])


def test_a_no_change_rerun_on_the_split_layout_touches_nothing(tmp_path):
    run = deploy(tmp_path, split())
    assert run.returncode == 0, run.output[-3000:]
    assert watch_commands(run, REST) == []
    assert [c for c in actions(run, REST) if "systemctl " in c] == []


def test_a_leftover_watchdog_is_removed_before_the_one_daemon_reload(tmp_path):
    run = deploy(tmp_path, split(rest_leftover=True))
    assert run.returncode == 0, run.output[-3000:]
    removal = run.ran(REST, f"systemctl disable --no-reload {WATCH_UNIT}")
    assert len(removal) == 1, run.commands[REST]
    script = run.commands[REST][removal[0]]
    assert f"systemctl stop {WATCH_UNIT}" in script
    assert f"rm -f {WATCH_UNIT_PATH} {WATCH_CONFIG_PATH}" in script
    reloads = run.ran(REST, "systemctl daemon-reload")
    assert len(reloads) == 1 and reloads[0] > removal[0], run.commands[REST]
    # Nothing else about the watchdog: no start, restart, enable or wait.
    assert watch_commands(run, REST) == [script]


def test_a_dry_run_shows_the_removal_and_runs_nothing(tmp_path):
    run = deploy(tmp_path, split(rest_leftover=True), "--dry")
    assert run.returncode == 0, run.output[-3000:]
    line = next(x for x in run.output.splitlines() if f"No {WATCH_UNIT} on a host" in x)
    assert "1 (@fake/rest)" in line, run.output[-3000:]  # the change table: one change there
    assert watch_commands(run, REST) == []


def test_agent_hosts_that_hold_the_key_keep_their_watchdog(tmp_path):
    # One host with every role: the watchdog's files are compared, and it runs (no change).
    hosts = {"hpc1": deployed_host()}
    hosts["hpc1"].units[WATCH_UNIT] = ("inactive", "enabled")
    run = deploy(tmp_path, hosts)
    assert run.returncode == 0, run.output[-3000:]
    assert run.ran("@fake/hpc1", f"systemctl start --no-block {WATCH_UNIT}")
    assert run.ran("@fake/hpc1", "systemctl disable") == []
