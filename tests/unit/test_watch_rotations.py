"""Issue 10 on a fake clock: rotations in quick succession, late reloads, failing restarts.

The pipeline runs on real key files (tmp dirs) with fakes for Slurm and systemctl, driven as the
daemon's worker drives it (a run per trigger, a retry when it asks for one), while the clock
jumps: ten minutes of rotations take well under a second."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from tests.unit.test_watch_support import (  # noqa: F401 - autouse: real threads
    AGENT,
    FakeSlurm,
    FakeSystemctl,
    RecordingKeyStore,
    install_copy,
    new_key,
    refuse_gevent_patched_process,
    write_key,
)
from watchdog_daemon.exitcodes import ExitCode
from watchdog_daemon.watch.config import WatchConfig
from watchdog_daemon.watch.health import health, sync_health
from watchdog_daemon.watch.pipeline import Pipeline
from watchdog_daemon.watch.trigger import Batch


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.counts: dict[str, int] = {}

    def log(self, level: str, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    def count(self, name: str, **labels: str) -> None:
        key = name + "".join(f",{k}={v}" for k, v in sorted(labels.items()))
        self.counts[key] = self.counts.get(key, 0) + 1

    def persist(self) -> None:
        pass

    def names(self) -> list[str]:
        return [e for e, _ in self.events]


class TimedSystemctl(FakeSystemctl):
    def __init__(self, clock: Clock, units: dict[str, str] | None = None) -> None:
        super().__init__(units)
        self.clock = clock
        self.restart_times: list[float] = []

    def restart(self, unit: str, *, timeout: float) -> None:
        super().restart(unit, timeout=timeout)
        self.restart_times.append(self.clock.now)


class World:
    def __init__(self, tmp_path, **overrides: Any) -> None:
        key_dir, copy_dir = tmp_path / "spool", tmp_path / "lib"
        key_dir.mkdir()
        copy_dir.mkdir()
        self.old = new_key("old")
        cfg = WatchConfig(key_path=key_dir / "jwt_hs256.key",
                          copy_path=copy_dir / "slurmrestd.key", copy_owner="nobody",
                          copy_group="nogroup", agent_ini=tmp_path / "agent.ini",
                          state_file=tmp_path / "state.json")
        self.config = replace(cfg, **overrides)
        write_key(self.config.key_path, self.old)
        install_copy(self.config.copy_path, self.old)
        self.clock = Clock()
        self.slurm = FakeSlurm(self.old, self.config.copy_path)
        self.systemctl = TimedSystemctl(self.clock)
        self.sink = Sink()
        self.pipeline = Pipeline(self.config, keys=RecordingKeyStore(), verifier=self.slurm.verify,
                                 agent_check=self.slurm.agent_check, probe=self.slurm.probe,
                                 systemctl=self.systemctl, sink=self.sink, clock=self.clock,
                                 wall_clock=self.clock, sleep=self.clock.sleep,
                                 rand=lambda: 0.5)
        self._actions: list[tuple[float, int, Callable[[], bool]]] = []
        self._seq = 0

    def at(self, when: float, action: Callable[[], bool]) -> None:
        """`action` at `when`; it returns True when it is a key change the watcher reports."""
        heapq.heappush(self._actions, (when, self._seq, action))
        self._seq += 1

    def rename(self, when: float, key: bytes) -> None:
        self.at(when, lambda: (write_key(self.config.key_path, key), True)[1])

    def reload(self, when: float, key: bytes) -> None:
        """scontrol reconfigure + slurmdbd restart: Slurm accepts `key`, no longer the old."""
        self.at(when, lambda: (self.slurm.accept_only(key), False)[1])

    def run_until(self, end: float) -> None:
        batch: Batch | None = Batch(frozenset({"start"}), False)
        next_run: float | None = 0.0
        while True:
            next_action = self._actions[0][0] if self._actions else float("inf")
            if next_run is not None and next_run <= next_action and next_run <= end:
                self.clock.now = max(self.clock.now, next_run)
                delay = self.pipeline.run(batch or Batch(frozenset({"retry"}), False))
                batch = None
                next_run = None if delay is None else self.clock.now + delay
                continue
            if next_action > end:
                self.clock.now = max(self.clock.now, end)
                return
            when, _seq, action = heapq.heappop(self._actions)
            self.clock.now = max(self.clock.now, when)
            if action():
                batch = Batch(frozenset({"events"}), False)
                next_run = self.clock.now

    def health(self) -> tuple[int, str]:
        status = self.pipeline.status
        status.circuit = self.pipeline.circuit.state.value
        return sync_health(status.to_dict())


def test_six_rotations_in_ten_minutes_each_followed_within_a_probe_interval(tmp_path):
    w = World(tmp_path)
    gaps = [5, 30, 90, 5, 30, 60]  # rename -> Slurm's reload, as an administrator does it
    reloads: list[float] = []
    keys = []
    for n, gap in enumerate(gaps):
        key = new_key(f"k{n}")
        keys.append(key)
        w.rename(n * 100.0, key)
        w.reload(n * 100.0 + gap, key)
        reloads.append(n * 100.0 + gap)
    checks: list[tuple[int, str, int]] = []
    for n in range(len(gaps)):
        # Just before the reload the agent still serves on its copy: status 0.
        w.run_until(reloads[n] - 0.01)
        checks.append((n, w.pipeline.status.state, w.health()[0]))
        w.run_until(reloads[n] + 5.0)
        assert w.pipeline.status.state == "in_sync", (n, w.pipeline.status)
        assert w.config.copy_path.read_bytes() == keys[n]
        assert w.health() == (0, "in_sync")
    w.run_until(600.0)
    assert checks == [(n, "waiting_for_slurm", 0) for n in range(len(gaps))]
    assert w.systemctl.restarts == [AGENT] * 6  # exactly one per rotation, none refused
    outages = [t - r for t, r in zip(w.systemctl.restart_times, reloads, strict=True)]
    assert all(0 <= o <= w.config.probe_interval + 1e-6 for o in outages), outages
    # A handful of slurmctld authentication errors per rotation (new key refused once, the
    # copy refused once at the switch, the verify's decoy), not one per retry.
    assert w.slurm.ctld_refusals <= 3 * len(gaps), w.slurm.ctld_refusals
    assert len(w.slurm.verified) == 2 * len(gaps)  # at the rename, at the switch


def test_slurmdbd_restarted_minutes_after_reconfigure_is_followed_too(tmp_path):
    w = World(tmp_path)
    key = new_key("split")
    w.rename(0.0, key)
    w.at(20.0, lambda: (w.slurm.reload_ctld(key), False)[1])  # scontrol reconfigure
    w.at(140.0, lambda: (w.slurm.reload_dbd(key), False)[1])  # systemctl restart slurmdbd
    w.run_until(19.9)
    assert w.health()[0] == 0
    w.run_until(139.9)
    # slurmctld refuses the agent's copy, slurmdbd the new key: neither works; say so.
    assert w.pipeline.status.state == "waiting_for_slurm"
    assert w.pipeline.status.agent_key == "refused_by_slurmctld"
    assert w.health()[0] == ExitCode.REJECTED_BY_SLURMCTLD
    assert w.systemctl.restarts == []
    assert w.slurm.ctld_refusals <= 3  # slurmctld is no longer asked with the old copy
    w.run_until(145.0)
    assert w.systemctl.restart_times and w.systemctl.restart_times[0] - 140.0 <= 0.5 + 1e-6
    assert w.pipeline.status.state == "in_sync" and w.health()[0] == 0


def test_slurmctld_restart_while_waiting_is_not_a_switch_until_it_answers(tmp_path):
    from watchdog_daemon.watch.verdict import Verdict

    w = World(tmp_path)
    key = new_key("ctldrestart")
    w.rename(0.0, key)
    down = Verdict(False, "controller_unreachable", ExitCode.CONTROLLER_UNREACHABLE,
                   "slurmrestd could not reach slurmctld")

    def ctld_down() -> bool:
        w.slurm.probe_error = down
        return False

    def ctld_up_with_new_key() -> bool:
        w.slurm.probe_error = None
        w.slurm.accept_only(key)
        return False

    w.at(30.0, ctld_down)
    w.at(33.0, ctld_up_with_new_key)
    w.run_until(32.0)
    assert w.pipeline.status.state == "verify_failed"
    assert w.health()[0] == ExitCode.CONTROLLER_UNREACHABLE  # may not be serving: say so
    assert len(w.slurm.verified) == 1  # errors do not make it try the new key
    w.run_until(40.0)
    assert w.systemctl.restart_times[0] - 33.0 <= 0.5 + 1e-6
    assert w.pipeline.status.state == "in_sync"


def test_failing_restarts_open_the_circuit_and_status_says_so(tmp_path):
    w = World(tmp_path, circuit_threshold=3, circuit_cooldown=600.0, restart_spacing=2.0)
    w.systemctl.fail_restart = None  # the unit never comes back
    key = new_key("broken")
    w.rename(0.0, key)
    w.reload(10.0, key)
    w.run_until(9.0)
    assert w.health()[0] == 0
    w.run_until(120.0)
    assert w.pipeline.status.state == "circuit_open"
    assert len(w.systemctl.restart_attempts) == 3  # then it stops
    assert w.health() == (ExitCode.CIRCUIT_OPEN, "circuit_open")
    assert w.config.copy_path.read_bytes() == key  # the copy is right all the same
    # After the cool-down one trial; it works: closed, in sync.
    w.systemctl.fail_restart = 0
    w.run_until(10.0 + 700.0)
    assert w.pipeline.status.state == "in_sync" and w.pipeline.circuit.failures == 0
    assert w.health()[0] == 0
    assert "circuit_closed" in w.sink.names()


def test_a_check_failing_after_the_restart_counts_as_a_failed_restart(tmp_path):
    w = World(tmp_path, circuit_threshold=1)
    key = new_key("checkfails")
    w.slurm.accept_any = True
    w.rename(0.0, key)
    real = w.slurm.agent_check
    calls = {"n": 0}

    def flaky_check():
        calls["n"] += 1
        if calls["n"] == 1:
            from watchdog_daemon.watch.verdict import Verdict

            return Verdict(False, "controller_unreachable", ExitCode.CONTROLLER_UNREACHABLE,
                           "no answer")
        return real()

    w.pipeline.agent_check = flaky_check
    w.run_until(0.5)
    assert w.systemctl.restarts == [AGENT]
    assert w.pipeline.circuit.failures == 1 and w.health()[0] == ExitCode.CIRCUIT_OPEN
    assert ("agent_restart_failed", "check") in [(e, f.get("step")) for e, f in w.sink.events]
    w.run_until(60.0)  # the re-check succeeds: the agent works, the circuit closes
    assert w.pipeline.status.state == "in_sync" and w.health()[0] == 0
    assert w.systemctl.restarts == [AGENT]  # a re-check, not another restart


def test_restart_pending_is_not_serving(tmp_path):
    w = World(tmp_path, restart_spacing=5.0)
    k1, k2 = new_key("one"), new_key("two")
    w.slurm.accept_any = True
    w.rename(0.0, k1)
    w.rename(1.0, k2)
    w.run_until(2.0)
    assert w.pipeline.status.restart_pending
    assert w.health() == (ExitCode.RESTART_PENDING, "restart_pending")
    w.run_until(10.0)
    assert w.systemctl.restart_times == [0.0, 5.0] and w.health()[0] == 0


@pytest.mark.parametrize("state, expected", [
    ({"state": "in_sync"}, 0),
    ({"state": "waiting_for_slurm", "agent_key": "accepted", "exit_code": 30}, 0),
    ({"state": "waiting_for_slurm", "agent_key": "refused_by_slurmctld", "exit_code": 31}, 30),
    ({"state": "waiting_for_slurm", "agent_key": "refused_by_slurmdbd", "exit_code": 30}, 31),
    ({"state": "waiting_for_slurm", "agent_key": None, "exit_code": 30}, 30),
    ({"state": "in_sync", "restart_pending": "abc"}, ExitCode.RESTART_PENDING),
    ({"state": "restart_pending", "restart_pending": "abc", "circuit": "open"},
     ExitCode.CIRCUIT_OPEN),
    ({"state": "agent_check_failed", "exit_code": 32}, 32),
    ({"state": "verify_failed", "exit_code": 20}, 20),
    ({"state": "error", "exit_code": 0}, ExitCode.INTERNAL_ERROR),
    ({"state": "starting"}, ExitCode.WATCH_NOT_READY),
])
def test_sync_health_table(state, expected):
    assert sync_health(state)[0] == expected


GOOD_PROOF = {"proof_at": 1000.0, "proof_exit_code": 0, "proof_reason": "ok",
              "proof_max_age": 150.0}


@pytest.mark.parametrize("proof, now, expected", [
    (GOOD_PROOF, 1100.0, (0, "in_sync")),
    ({}, 1000.0, (ExitCode.WATCH_NOT_READY, "not_proven_yet")),  # in sync, nothing proven yet
    (GOOD_PROOF, 1151.0, (ExitCode.PROOF_TOO_OLD, "proof_too_old")),  # the daemon is stuck
    ({**GOOD_PROOF, "proof_max_age": None}, 1001.0, (ExitCode.PROOF_TOO_OLD, "proof_too_old")),
    ({**GOOD_PROOF, "proof_exit_code": 54, "proof_reason": "agent_unit_not_active"}, 1001.0,
     (ExitCode.AGENT_NOT_ACTIVE, "agent_unit_not_active")),
    ({**GOOD_PROOF, "proof_exit_code": 31, "proof_reason": "refused_by_slurmdbd"}, 1001.0,
     (ExitCode.REJECTED_BY_SLURMDBD, "refused_by_slurmdbd")),
    ({**GOOD_PROOF, "proof_exit_code": True}, 1001.0, (ExitCode.INTERNAL_ERROR, "ok")),
    # A proof older than the last sync says nothing about now, good or bad.
    ({**GOOD_PROOF, "proof_pending": True}, 1001.0, (ExitCode.WATCH_NOT_READY, "proof_pending")),
    ({**GOOD_PROOF, "proof_exit_code": 30, "proof_reason": "refused_by_slurmctld",
      "proof_pending": True}, 1001.0, (ExitCode.WATCH_NOT_READY, "proof_pending")),
])
def test_health_needs_a_recent_good_proof(proof, now, expected):
    assert health({"state": "in_sync", **proof}, now) == expected


def test_a_proof_never_hides_what_the_pipeline_says():
    state = {"state": "in_sync", "restart_pending": "abc", **GOOD_PROOF}
    assert health(state, 1001.0) == (ExitCode.RESTART_PENDING, "restart_pending")


def test_a_proof_is_too_old_after_one_interval_and_two_checks_at_their_timeout():
    assert WatchConfig().proof_max_age == 60 + 6 * 10
    assert WatchConfig(health_interval=5, check_timeout=3).proof_max_age == 5 + 18
