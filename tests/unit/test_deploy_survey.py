"""The survey a deploy shares between operations: what an operation records is what later
operations see, only while executing, and unknown content never passes for known."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from slurmrestd_access import survey
from slurmrestd_access.hoststate import HostState, RemoteFile, UnitState

KEY = "/var/spool/slurm/jwt_hs256.key"


@pytest.fixture
def executing(monkeypatch):
    phase = SimpleNamespace(is_executing=True)
    monkeypatch.setattr(survey, "host", SimpleNamespace(name="h1"))
    monkeypatch.setattr(survey, "state", phase)
    monkeypatch.setattr(survey, "_cache", {})
    monkeypatch.setattr(survey, "_plans", {})
    hs = HostState(tool_digest="old", files={
        KEY: RemoteFile(KEY, True, "regular file", "slurm", "slurm", 0o600, "a" * 64),
        "/etc/slurm/slurm.conf": RemoteFile("/etc/slurm/slurm.conf", True, "regular file",
                                            "root", "root", 0o644, "b" * 64)},
        units={"slurmrestd.service": UnitState("slurmrestd.service", "loaded", "inactive",
                                               "disabled")})
    survey._cache[("h1", True)] = hs
    survey._cache[("h1", False)] = HostState(tool_digest="old")
    survey._plans[("h1", True)] = {"conf": []}
    return hs, phase


def test_a_written_file_is_seen_as_written(executing):
    hs, _ = executing
    survey.record(files=survey.written("/x", "root", "root", 0o644, "c" * 64))
    assert hs.file("/x").matches("c" * 64, "root", "root", 0o644)


def test_content_not_known_never_matches_a_hash(executing):
    hs, _ = executing
    survey.record(files=survey.content_changed(hs, "/etc/slurm/slurm.conf"))
    merged = hs.file("/etc/slurm/slurm.conf")
    assert (merged.owner, merged.mode, merged.sha256) == ("root", 0o644, None)
    assert not merged.matches("b" * 64, "root", "root", 0o644)
    survey.record(files=survey.written(KEY, "slurm", "slurm", 0o600, None))
    assert not hs.file(KEY).matches("a" * 64, "slurm", "slurm", 0o600)


def test_started_units_are_active_and_enabled_when_enabled(executing):
    hs, _ = executing
    survey.record(units=survey.running("slurmrestd.service"))
    assert (hs.unit("slurmrestd.service").active, hs.unit("slurmrestd.service").unit_file) == (
        "active", "disabled")
    survey.record(units=survey.running("slurmrestd.service", "other.service", enabled=True))
    assert hs.unit("slurmrestd.service").unit_file == "enabled"
    assert hs.unit("other.service").active == "active"


def test_a_new_tool_drops_the_old_tool_s_plan(executing):
    hs, _ = executing
    survey.record(tool_digest="new")
    assert hs.tool_digest == "new"
    assert ("h1", True) not in survey._plans


def test_nothing_is_recorded_while_planning(executing):
    hs, phase = executing
    phase.is_executing = False
    survey.record(files=survey.written("/x", "root", "root", 0o644, "c" * 64),
                  tool_digest="new")
    assert not survey._cache[("h1", False)].file("/x").exists
    assert survey._cache[("h1", False)].tool_digest == "old"
    assert not hs.file("/x").exists
