"""Staged rollout decisions (slurmrestd_access/fleet/rollout_plan.py) and the command line
(deploys/rollout)."""

from __future__ import annotations

from deploys import rollout
from slurmrestd_access.fleet import rollout_plan as rp
from slurmrestd_access.fleet.summary import ClusterSummary

OK = (ClusterSummary("alpha", "changed"),)
FAILED = (ClusterSummary("alpha", "failed", failures=(("a1", "boom"),)),)


def result(stage: str, code: int, summaries) -> rp.StageResult:
    return rp.StageResult(rp.Stage(stage, ()), code, summaries)


def test_canaries_are_limited_first_and_excluded_after():
    canary, rest = rp.stages(["alpha", "canary"])
    assert canary.selection == ("--limit", "alpha", "--limit", "canary")
    assert rest.selection == ("--exclude", "alpha", "--exclude", "canary")
    assert [s.name for s in rp.stages([])] == ["all"]


def test_pyinfra_command():
    stage = rp.stages(["alpha"])[0]
    cmd = rp.pyinfra_command("py", "inv.py", stage, ["--parallel", "4"], dry=False)
    assert cmd == ["py", "-m", "pyinfra", "-y", "inv.py",
                   "slurmrestd_access.deploys.slurmrestd_access",
                   "--limit", "alpha", "--parallel", "4"]
    assert "--dry" in rp.pyinfra_command("py", "inv.py", stage, [], dry=True)


def test_a_failed_canary_stops_the_rollout_with_exit_3():
    canary = result("canary", 1, FAILED)
    assert not rp.should_continue(canary)
    assert rp.final_exit([canary]) == rp.EXIT_CANARY_FAILED


def test_a_canary_without_summary_counts_as_failed():
    canary = result("canary", 1, None)
    assert not rp.should_continue(canary) and rp.final_exit([canary]) == 3
    assert "without a per-cluster summary" in rp.missing_summary_note(canary)


def test_exit_codes_after_good_canaries():
    canary = result("canary", 0, OK)
    assert rp.should_continue(canary)
    assert rp.final_exit([canary, result("rest", 0, (ClusterSummary("b", "unchanged"),))]) == 0
    rest_failed = result("rest", 1, (ClusterSummary("b", "failed", failures=(("b1", "x"),)),))
    assert rp.final_exit([canary, rest_failed]) == rp.EXIT_FAILED
    assert rp.final_exit([result("all", 1, FAILED)]) == rp.EXIT_FAILED
    assert rp.final_exit([result("all", 0, OK)]) == rp.EXIT_OK


def test_a_rest_stage_that_selected_nothing_is_success_with_nothing_to_do():
    """Every cluster of the inventory was a canary: pyinfra's rest run has no host, exits 0,
    and no deploy ran to write a summary."""
    canary = result("canary", 0, OK)
    empty = rp.settle_empty_rest(result("rest", 0, None))
    assert empty.summaries == () and empty.ok
    assert rp.final_exit([canary, empty]) == rp.EXIT_OK
    # Anything else without a summary is still unknown, hence a failure.
    assert rp.settle_empty_rest(result("rest", 1, None)).summaries is None
    assert rp.settle_empty_rest(result("canary", 0, None)).summaries is None
    assert rp.final_exit([canary, rp.settle_empty_rest(result("rest", 1, None))]) == 1


def test_usage_errors_exit_2(tmp_path, capsys):
    assert rollout.main(["--nonsense"]) == rp.EXIT_USAGE
    assert rollout.main([str(tmp_path / "absent.py")]) == rp.EXIT_USAGE
