"""Judging the fleet report's facts (slurmrestd_access/fleet/report.py)."""

from __future__ import annotations

import hashlib
import json

from slurmrestd_access.cluster import ClusterPlan
from slurmrestd_access.fleet.report import (
    NO_WATCHDOG,
    WATCH_UNIT,
    HostFacts,
    evaluate,
    evaluate_host,
    exit_code,
    render_table,
    to_dict,
)
from slurmrestd_access.hoststate import HostState, RemoteFile, UnitState
from slurmrestd_access.settings import Settings
from watchdog_daemon.config.dropin import render_dropin

S = Settings(cluster="beta", agent_unit="slurm-web-agent.service")
KEY = "a" * 64
DROPIN = hashlib.sha256(render_dropin(socket_path=S.slurmrestd_socket).encode()).hexdigest()


def state(files=(), units=(), tool_version="") -> HostState:
    hs = HostState(tool_digest="d1", tool_version=tool_version)
    for f in files:
        hs.files[f.path] = f
    for u in units:
        hs.units[u.name] = u
    return hs


def key_file(sha=KEY, mode=0o600):
    return RemoteFile(S.jwt_key_path, True, "regular file", "slurm", "slurm", mode, sha)


def copy_file(sha=KEY, mode=0o400):
    return RemoteFile(S.agent_key_path, True, "regular file", "slurm-web", "slurm-web", mode, sha)


def active(name):
    return UnitState(name, "loaded", "active", "enabled")


def present():
    return {"exit_code": 0, "changed": False}


def beta(ctl_key=KEY, db_key=KEY, copy=None, check=None, watch=None, conf=None):
    plan = ClusterPlan("beta", ["ctl"], ["db"], ["rest"], ["ctl"])
    rest_units = [active("slurmrestd.service"), active("slurm-web-agent.service")]
    if watch:
        rest_units.append(watch)
    facts = {
        "ctl": HostFacts("ctl", "beta", frozenset({"slurmctld", "compute"}), S,
                         state=state([key_file(ctl_key)]), conf={S.slurm_conf: present()}),
        "db": HostFacts("db", "beta", frozenset({"slurmdbd"}), S, state=state([key_file(db_key)]),
                        conf={S.slurmdbd_conf: conf or present()}),
        "rest": HostFacts(
            "rest", "beta", frozenset({"slurmrestd"}), S,
            state=state([copy or copy_file(), RemoteFile(S.slurmrestd_dropin, True,
                         "regular file", "root", "root", 0o644, DROPIN)], rest_units),
            conf={S.slurm_conf: present()}, check=check or {"exit_code": 0}),
    }
    return evaluate({"beta": plan}, facts)


def test_a_healthy_cluster():
    reports = beta()
    assert exit_code(reports) == 0
    rest = reports[0].rows[2]
    assert rest.cells["copy"] == "aaaaaaaaaaaa slurm-web:slurm-web 0400"
    # The agent host does not hold Slurm's key: no watchdog there, and that is right.
    assert rest.cells["watchdog"] == NO_WATCHDOG and rest.cells["check"] == "ok"
    assert "beta: OK" in render_table(reports)
    # The release each host runs: known from its dist-info, else "?" (installed, not named).
    assert rest.cells["tool"] == "?" and "TOOL" in render_table(reports).splitlines()[0]


def test_the_report_names_each_hosts_release():
    plan = ClusterPlan("beta", ["ctl"], ["ctl"], ["ctl"], ["ctl"])
    named = HostFacts("ctl", "beta", frozenset({"slurmctld"}), S,
                      state=state([key_file()], tool_version="0.2.0"),
                      conf={S.slurm_conf: present()})
    assert evaluate_host(named, plan).cells["tool"] == "0.2.0"
    bare = HostFacts("ctl", "beta", frozenset({"slurmctld"}), S, state=HostState(),
                     conf={S.slurm_conf: present()})
    row = evaluate_host(bare, plan)
    assert row.cells["tool"] == "missing" and row.to_dict()["tool"] == "missing"


def test_the_slurm_web_release_is_the_checks_and_unknown_without_it():
    reports = beta(check={"exit_code": 0, "slurmweb": "Slurm-web 5.2.0"})
    rest = reports[0].rows[2]
    assert rest.cells["slurmweb"] == "5.2.0" and rest.to_dict()["slurmweb"] == "5.2.0"
    assert "SLURMWEB" in render_table(reports).splitlines()[0]
    assert reports[0].rows[0].cells["slurmweb"] == "-"  # not an agent host
    reports = beta(check={"exit_code": 10, "reason": "config_invalid", "message": "m"})
    assert reports[0].rows[2].cells["slurmweb"] == "?"


def test_a_copy_with_a_wrong_mode():
    (report,) = beta(copy=copy_file(mode=0o440))
    assert not report.ok
    assert any("should be slurm-web:slurm-web 0400" in p for p in report.all_problems())


def test_a_key_that_differs_between_two_hosts_of_a_cluster():
    (report,) = beta(db_key="b" * 64)
    assert any("differs between the cluster's hosts: ctl aaaaaaaaaaaa, db bbbbbbbbbbbb" in p
               for p in report.problems)


def test_a_copy_that_differs_from_the_key_and_a_failed_check():
    (report,) = beta(copy=copy_file(sha="c" * 64),
                     check={"exit_code": 30, "reason": "rejected_by_slurmctld", "message": "m"})
    problems = report.all_problems()
    assert any("copy on rest (cccccccccccc) differs" in p for p in problems)
    assert report.rows[2].cells["check"] == "rejected_by_slurmctld (30)"


def test_missing_authalt_lines_and_a_stopped_watchdog():
    (report,) = beta(conf={"exit_code": 0, "changed": True},
                     watch=UnitState(WATCH_UNIT, "loaded", "failed", "enabled"))
    assert report.rows[1].cells["authalt"] == "MISSING slurmdbd.conf"
    assert any(WATCH_UNIT in p for p in report.all_problems())


def test_a_host_whose_commands_cannot_run_as_root_says_why_not_unreachable():
    plan = ClusterPlan("alpha", ["a1"], ["a1"], ["a1"], ["a1"])
    why = "admin may not become root with sudo on a1 (sudo said: x): grant it"
    (report,) = evaluate({"alpha": plan}, {"a1": HostFacts(
        "a1", "alpha", frozenset({"slurmctld"}), S, no_root=why)})
    assert report.rows[0].cells["check"] == "no root"
    assert report.all_problems() == [f"a1: {why}"]


def test_an_unreachable_host_and_json():
    plan = ClusterPlan("alpha", ["a1"], ["a1"], ["a1"], ["a1"])
    reports = evaluate({"alpha": plan, "other": ClusterPlan("other", ["o"], [], ["o"])},
                       {"a1": HostFacts("a1", "alpha", frozenset({"slurmctld"}), S,
                                        error="could not connect over SSH")})
    assert [r.name for r in reports] == ["alpha"]  # only clusters in --limit
    data = json.loads(json.dumps(to_dict(reports)))
    assert data["ok"] is False
    assert data["clusters"][0]["hosts"][0]["check"] == "unreachable"


def one_host(watch=None) -> list:
    """alpha: one host with every role, which holds the key: the watchdog belongs there."""
    plan = ClusterPlan("alpha", ["a1"], ["a1"], ["a1"], ["a1"])
    units = [active("slurmrestd.service"), active("slurm-web-agent.service")]
    if watch:
        units.append(watch)
    facts = {"a1": HostFacts(
        "a1", "alpha", frozenset({"slurmctld", "slurmdbd", "slurmrestd", "compute"}), S,
        state=state([key_file(), copy_file(), RemoteFile(S.slurmrestd_dropin, True,
                     "regular file", "root", "root", 0o644, DROPIN)], units),
        conf={S.slurm_conf: present(), S.slurmdbd_conf: present()}, check={"exit_code": 0})}
    return evaluate({"alpha": plan}, facts)


def test_the_watchdog_is_required_on_an_agent_host_that_holds_the_key():
    (ok,) = one_host(watch=active(WATCH_UNIT))
    assert ok.ok and ok.rows[0].cells["watchdog"] == "active"
    (missing,) = one_host()
    assert missing.rows[0].cells["watchdog"] == "not installed"
    assert [p for p in missing.all_problems() if WATCH_UNIT in p] == [
        f"a1: {WATCH_UNIT} is not installed: a change of Slurm's key on this host would not "
        "reach the agent; run the deploy (it installs the watchdog on agent hosts that hold the "
        "key)"]
    (stopped,) = one_host(watch=UnitState(WATCH_UNIT, "loaded", "inactive", "disabled"))
    assert not stopped.ok and stopped.rows[0].cells["watchdog"] == "inactive"


def test_a_watchdog_left_on_an_agent_host_without_the_key_is_named_with_the_fix():
    # What an older deploy installed on beta's agent host: running, saying key_missing.
    (report,) = beta(watch=active(WATCH_UNIT))
    assert not report.ok
    assert report.rows[2].cells["watchdog"] == "active (not needed)"
    (problem,) = report.all_problems()
    assert problem.startswith(f"rest: {WATCH_UNIT} is installed on an agent host that does not "
                              "hold Slurm's key")
    assert "run the deploy, which removes it (stop, disable)" in problem
    assert "slurmrestd_access.deploys.rotate_key" in problem
