"""The one rule for "the agent unit in use", shared by the deploy, rotation, report and
watchdog; and the `agent` command that applies it on a host."""

from __future__ import annotations

import json
import subprocess

import pytest

from slurmrestd_access.hoststate import UnitState as SurveyedUnit
from watchdog_daemon.system import cli as agent_cli
from watchdog_daemon.system.agentunits import AGENT_UNITS, choose, restart_agent_units, unit_in_use
from watchdog_daemon.system.systemctl import SubprocessSystemctl, UnitState

NATIVE, UWSGI = AGENT_UNITS


@pytest.mark.parametrize(
    ("states", "in_use"),
    [
        (("loaded", "active", "enabled"), True),
        (("loaded", "active", "disabled"), True),  # started by hand: in use
        (("loaded", "activating", "enabled"), True),
        (("loaded", "failed", "enabled"), True),  # crashed for want of its key
        (("loaded", "inactive", "enabled"), True),
        (("loaded", "inactive", "disabled"), False),  # stopped on purpose
        (("loaded", "failed", "disabled"), False),
        (("masked", "inactive", "masked"), False),
        (("loaded", "active", "masked-runtime"), False),
        (("not-found", "inactive", ""), False),
    ],
)
def test_the_rule(states, in_use):
    assert unit_in_use(*states) is in_use
    # The deploy's survey and the watchdog's systemctl read the same states the same way.
    assert SurveyedUnit(NATIVE, *states).in_use is in_use


def test_configured_unit_goes_through_the_same_rule():
    described = {"custom.service": ("loaded", "inactive", "disabled")}
    assert choose("custom.service", described.get) == []
    described["custom.service"] = ("loaded", "failed", "enabled")
    assert choose("custom.service", described.get) == ["custom.service"]
    assert choose(None, {UWSGI: ("loaded", "active", "enabled")}.get) == [UWSGI]


class _Systemctl:
    def __init__(self, states):
        self.states, self.restarted = states, []

    def show(self, unit):
        load, active, ufs = self.states.get(unit, ("not-found", "inactive", ""))
        return UnitState(unit, load, active, ufs)

    def restart(self, unit, *, timeout):
        self.restarted.append(unit)
        self.states[unit] = ("loaded", "active", self.states[unit][2])


def test_restart_brings_back_a_failed_enabled_agent_and_leaves_a_stopped_one():
    fake = _Systemctl({NATIVE: ("loaded", "failed", "enabled"),
                       UWSGI: ("loaded", "inactive", "disabled")})
    report = restart_agent_units(fake, None, timeout=5)
    assert report == {"units": [NATIVE], "restarted": [NATIVE]}
    assert fake.restarted == [NATIVE]


def test_a_restart_resets_a_failed_state_first():
    calls = []

    def runner(argv, timeout):
        calls.append(argv[1:])
        return subprocess.CompletedProcess(argv, 0, "", "")

    SubprocessSystemctl(runner=runner).restart(NATIVE, timeout=5)
    assert calls == [["reset-failed", "--", NATIVE],
                     ["restart", "--no-ask-password", "--", NATIVE]]


def test_agent_command_prints_json(monkeypatch, capsys):
    fake = _Systemctl({NATIVE: ("loaded", "failed", "enabled")})
    monkeypatch.setattr(agent_cli, "SubprocessSystemctl", lambda: fake)
    from watchdog_daemon.cli import main

    assert main(["agent", "units"]) == 0
    assert json.loads(capsys.readouterr().out) == {"units": [NATIVE], "restarted": []}
    assert main(["agent", "restart", "--unit", NATIVE, "--timeout", "5"]) == 0
    assert json.loads(capsys.readouterr().out) == {"units": [NATIVE], "restarted": [NATIVE]}
