"""Staged rollout decisions: which pyinfra runs, in which order, and the final exit code. Pure.

Stage 1 runs the deploy on the canaries only (`--limit` each); stage 2, only when every canary
cluster succeeded, on everything else (`--exclude` each canary: pyinfra's own matching, so a
canary may be a cluster, any group or a host pattern). Without canaries: one run over all.
"""

from __future__ import annotations

from dataclasses import dataclass

from slurmrestd_access.fleet.summary import ClusterSummary

EXIT_OK = 0  # every cluster deployed (changed or unchanged)
EXIT_FAILED = 1  # some cluster failed (canaries were fine, or there were none)
EXIT_USAGE = 2
EXIT_CANARY_FAILED = 3  # a canary failed: nothing else was touched

# The deploy function, found by pyinfra from any directory (no checkout needed).
DEPLOY = "slurmrestd_access.deploys.slurmrestd_access"


@dataclass(frozen=True)
class Stage:
    name: str  # "canary" | "rest" | "all"
    selection: tuple[str, ...]  # pyinfra arguments that select the hosts


@dataclass(frozen=True)
class StageResult:
    stage: Stage
    returncode: int
    summaries: tuple[ClusterSummary, ...] | None  # None: pyinfra ended without a summary

    @property
    def ok(self) -> bool:
        if self.summaries is None:
            return False
        return self.returncode == 0 and all(s.status != "failed" for s in self.summaries)


def stages(canaries: list[str]) -> list[Stage]:
    if not canaries:
        return [Stage("all", ())]
    limit = tuple(a for c in canaries for a in ("--limit", c))
    exclude = tuple(a for c in canaries for a in ("--exclude", c))
    return [Stage("canary", limit), Stage("rest", exclude)]


def pyinfra_command(python: str, inventory: str, stage: Stage, extra: list[str],
                    dry: bool, deploy: str = DEPLOY) -> list[str]:
    # -y: a staged rollout is not interactive; --dry keeps pyinfra's change detection instead.
    mode = ["--dry"] if dry else ["-y"]
    return [python, "-m", "pyinfra", *mode, inventory, deploy, *stage.selection, *extra]


def should_continue(result: StageResult) -> bool:
    """The rest is touched only when every canary cluster succeeded."""
    return result.stage.name != "canary" or result.ok


def final_exit(results: list[StageResult]) -> int:
    for result in results:
        if result.stage.name == "canary" and not result.ok:
            return EXIT_CANARY_FAILED
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def settle_empty_rest(result: StageResult) -> StageResult:
    """A rest stage that selected no host (every cluster was a canary) ends with pyinfra's exit
    0 and no summary, since no deploy ran: that is success with nothing to do, not a missing
    summary. Any other stage without a summary stays unknown (None)."""
    if result.stage.name == "rest" and result.returncode == 0 and result.summaries is None:
        return StageResult(result.stage, 0, ())
    return result


def missing_summary_note(result: StageResult) -> str:
    return (f"the {result.stage.name} run ended (pyinfra exit {result.returncode}) without a "
            "per-cluster summary: see its output above (inventory error, nothing reachable...)")
