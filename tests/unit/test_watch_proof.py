"""watch/proof.py: the decisions behind `status` 0 (pure parts, then the Prover on fakes)."""

from __future__ import annotations

import pytest

from tests.unit.test_watch_support import AGENT, FakeSystemctl
from watchdog_daemon.exitcodes import ExitCode
from watchdog_daemon.system.systemctl import SystemctlError, UnitState
from watchdog_daemon.watch.proof import (
    Prover,
    slurm_proof_from_probe,
    slurm_proof_from_verdict,
    started_after,
    unit_proof,
)
from watchdog_daemon.watch.verdict import ProbeResult, Verdict

NOW_WALL, NOW_MONO = 1_000_000.0, 5_000.0  # wall clock and CLOCK_MONOTONIC, same instant


def active(start_mono_s: float | None, name: str = AGENT, state: str = "active") -> UnitState:
    return UnitState(name, "loaded", state, "enabled",
                     None if start_mono_s is None else int(start_mono_s * 1e6))


@pytest.mark.parametrize("start, copy_written, expected", [
    (4_990.0, NOW_WALL - 20, True),   # started 10 s ago, copy written 20 s ago
    (4_970.0, NOW_WALL - 20, False),  # started 30 s ago, before the copy
    (4_980.0, NOW_WALL - 20, True),   # the same instant
    (None, NOW_WALL - 20, False),     # never started (systemd says 0)
])
def test_started_after(start, copy_written, expected):
    us = None if start is None else int(start * 1e6)
    assert started_after(us, copy_written, now_wall=NOW_WALL, now_monotonic=NOW_MONO) is expected


def proof(units, states, copy_mtime=NOW_WALL - 20, configured=None):
    return unit_proof(configured, units, states, copy_mtime, now_wall=NOW_WALL,
                      now_monotonic=NOW_MONO)


def test_an_active_unit_started_after_its_copy_is_no_problem():
    assert proof([AGENT], [active(4_990.0)]) is None


@pytest.mark.parametrize("state", ["inactive", "failed", "activating"])
def test_a_unit_not_active_is_named(state):
    got = proof([AGENT], [active(4_990.0, state=state)])
    assert (got.reason, got.exit_code) == ("agent_unit_not_active", ExitCode.AGENT_NOT_ACTIVE)
    assert AGENT in got.message and state in got.message


def test_no_unit_in_use_names_what_was_looked_at():
    got = proof([], [], configured=None)
    assert (got.reason, got.exit_code) == ("agent_not_in_use", ExitCode.AGENT_NOT_ACTIVE)
    assert "slurm-web-agent.service" in got.message
    assert "slurm-web-agent-uwsgi.service" in got.message


def test_a_unit_started_before_its_copy_may_run_an_older_key():
    got = proof([AGENT], [active(4_970.0)])
    assert (got.reason, got.exit_code) == ("agent_started_before_copy",
                                           ExitCode.RESTART_PENDING)


def test_a_missing_copy_is_left_to_the_slurm_part():
    assert proof([AGENT], [active(4_970.0)], copy_mtime=None) is None


@pytest.mark.parametrize("result, expected", [
    (ProbeResult(accepted=frozenset({"slurmctld", "slurmdbd"})), ("ok", 0)),
    (ProbeResult(accepted=frozenset({"slurmdbd"}), refused=frozenset({"slurmctld"})),
     ("refused_by_slurmctld", ExitCode.REJECTED_BY_SLURMCTLD)),
    (ProbeResult(accepted=frozenset({"slurmctld"}), refused=frozenset({"slurmdbd"})),
     ("refused_by_slurmdbd", ExitCode.REJECTED_BY_SLURMDBD)),
    (ProbeResult(error=Verdict(False, "socket_missing", ExitCode.SOCKET_MISSING, "no socket")),
     ("socket_missing", ExitCode.SOCKET_MISSING)),
    (ProbeResult(usable=False), None),
    (ProbeResult(), None),  # asked nobody: the check decides
])
def test_probe_answers(result, expected):
    got = slurm_proof_from_probe(result, [AGENT])
    assert (None if got is None else (got.reason, got.exit_code)) == expected


def test_check_answers():
    refused = Verdict(False, "rejected_by_slurmdbd", ExitCode.REJECTED_BY_SLURMDBD, "no",
                      rejected=True)
    assert slurm_proof_from_verdict(refused, []).reason == "refused_by_slurmdbd"
    assert slurm_proof_from_verdict(Verdict(True, "ok"), []).ok is True
    odd = slurm_proof_from_verdict(Verdict(False, "weird", 0, "?"), [])
    assert (odd.ok, odd.exit_code) == (False, ExitCode.INTERNAL_ERROR)


class Calls:
    def __init__(self, probe: ProbeResult, check: Verdict) -> None:
        self.probe_result, self.check_result = probe, check
        self.probes = self.checks = 0

    def probe(self, skip):
        assert skip == frozenset()
        self.probes += 1
        return self.probe_result

    def check(self):
        self.checks += 1
        return self.check_result


def prover(tmp_path, calls, systemctl=None):
    copy = tmp_path / "copy.key"
    copy.write_bytes(b"k" * 32)
    return Prover(systemctl=systemctl or FakeSystemctl(), configured_units=None, copy_path=copy,
                  probe=calls.probe, agent_check=calls.check)


def test_the_cheap_probe_when_it_can_the_check_otherwise(tmp_path):
    calls = Calls(ProbeResult(accepted=frozenset({"slurmctld"})), Verdict(True, "ok"))
    assert prover(tmp_path, calls).prove().ok and (calls.probes, calls.checks) == (1, 0)
    calls = Calls(ProbeResult(usable=False), Verdict(False, "socket_missing", 20, "gone"))
    got = prover(tmp_path, calls).prove()
    assert (got.reason, calls.checks) == ("socket_missing", 1)


def test_slurm_is_not_asked_when_the_unit_is_down(tmp_path):
    calls = Calls(ProbeResult(accepted=frozenset({"slurmctld"})), Verdict(True, "ok"))
    got = prover(tmp_path, calls, FakeSystemctl({AGENT: "failed"})).prove()
    assert got.reason == "agent_unit_not_active" and calls.probes == calls.checks == 0


def test_systemctl_failing_is_said_not_guessed(tmp_path):
    systemctl = FakeSystemctl()
    systemctl.raise_on_show = SystemctlError("systemctl show: Timeout")
    got = prover(tmp_path, Calls(ProbeResult(), Verdict(True, "ok")), systemctl).prove()
    assert (got.reason, got.exit_code) == ("systemctl_failed", ExitCode.INTERNAL_ERROR)
    assert "Timeout" in got.message
