"""The per-cluster summary of a run (slurmrestd_access/fleet/summary.py)."""

from __future__ import annotations

import json

from slurmrestd_access.fleet.summary import (
    ClusterSummary,
    HostOutcome,
    exit_code,
    from_json,
    merge,
    render,
    summarise,
    to_json,
)
from watchdog_daemon import __version__


def test_unchanged_changed_and_failed_clusters():
    outcomes = [
        HostOutcome("a1", "alpha"),
        HostOutcome("b1", "beta", changed=True),
        HostOutcome("b2", "beta"),
        HostOutcome("g1", "gamma", changed=True, failed=True,
                    reason="Restart slurmctld.service: did not answer"),
    ]
    alpha, beta, gamma = summarise(outcomes)
    assert (alpha.status, beta.status, gamma.status) == ("unchanged", "changed", "failed")
    assert beta.changed_hosts == ("b1",)
    assert gamma.line() == "gamma: failed (g1: Restart slurmctld.service: did not answer)"
    assert exit_code([alpha, beta]) == 0
    assert exit_code([alpha, beta, gamma]) == 1


def test_a_failed_cluster_names_the_cause_not_the_hosts_stopped_because_of_it():
    outcomes = [
        HostOutcome("ctl", "beta", failed=True, reason="boom"),
        HostOutcome("db", "beta", failed=True, reason="cluster beta: not continuing",
                    stopped_by_cluster=True),
        HostOutcome("rest", "beta", failed=True, reason="cluster beta: not continuing",
                    stopped_by_cluster=True),
    ]
    (beta,) = summarise(outcomes)
    assert beta.failures == (("ctl", "boom"),)


def test_a_failed_host_without_reason_still_names_the_host():
    (only,) = summarise([HostOutcome("x", "c", failed=True, stopped_by_cluster=True)])
    assert only.failures[0][0] == "x" and "see the output above" in only.failures[0][1]


def test_reasons_are_one_short_line():
    (c,) = summarise([HostOutcome("x", "c", failed=True, reason="line one\n  line two " * 50)])
    reason = c.failures[0][1]
    assert "\n" not in reason and len(reason) <= 300


def test_json_round_trip_and_render():
    summaries = summarise([HostOutcome("a1", "alpha", changed=True),
                           HostOutcome("g1", "gamma", failed=True, reason="r")])
    text = to_json(summaries)
    assert json.loads(text)["exit_code"] == 1
    assert from_json(text) == summaries
    out = render(summaries)
    assert "alpha: changed" in out and "gamma: failed (g1: r)" in out
    assert out.splitlines()[-1] == f"--> slurmrestd-access {__version__}"
    assert "no cluster" in render([])


def test_merge_keeps_the_latest_run_per_cluster():
    first = [ClusterSummary("alpha", "changed"), ClusterSummary("beta", "failed",
                                                                  failures=(("b", "x"),))]
    second = [ClusterSummary("beta", "unchanged"), ClusterSummary("gamma", "changed")]
    merged = merge(first, second)
    assert [(s.cluster, s.status) for s in merged] == [
        ("alpha", "changed"), ("beta", "unchanged"), ("gamma", "changed")]
