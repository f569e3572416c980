"""Per-cluster outcome of a run: unchanged, changed or failed (with the host and reason). Pure.

A cluster is set up as a whole (see operations.stop_if_cluster_failed), so it is also reported
as a whole: failed when any of its hosts failed, naming the host(s) that failed first (the
others only stopped because of them), else changed when any host changed something.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from watchdog_daemon import __version__

Status = Literal["unchanged", "changed", "failed"]

# Exit codes of the commands that print a summary (pyinfra itself exits 1 on any failure).
EXIT_OK = 0
EXIT_FAILED = 1


@dataclass(frozen=True)
class HostOutcome:
    host: str
    cluster: str
    changed: bool = False
    failed: bool = False
    reason: str | None = None
    # Failed only because another host of its cluster failed first: not a cause.
    stopped_by_cluster: bool = False


@dataclass(frozen=True)
class ClusterSummary:
    cluster: str
    status: Status
    hosts: tuple[str, ...] = ()
    changed_hosts: tuple[str, ...] = ()
    # (host, reason) of the hosts that failed by themselves, or of every failed host when
    # none did (so a failed cluster always names at least one host).
    failures: tuple[tuple[str, str], ...] = field(default=())

    def line(self) -> str:
        if self.status != "failed":
            return f"{self.cluster}: {self.status}"
        causes = "; ".join(f"{h}: {r}" for h, r in self.failures)
        return f"{self.cluster}: failed ({causes})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "status": self.status,
            "hosts": list(self.hosts),
            "changed_hosts": list(self.changed_hosts),
            "failures": [{"host": h, "reason": r} for h, r in self.failures],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterSummary:
        status = data["status"]
        if status not in ("unchanged", "changed", "failed"):
            raise ValueError(f"unknown cluster status {status!r}")
        return cls(
            cluster=str(data["cluster"]),
            status=status,
            hosts=tuple(data.get("hosts", ())),
            changed_hosts=tuple(data.get("changed_hosts", ())),
            failures=tuple((f["host"], f["reason"]) for f in data.get("failures", ())),
        )


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def summarise(outcomes: Iterable[HostOutcome]) -> list[ClusterSummary]:
    """One summary per cluster, sorted by cluster name."""
    by_cluster: dict[str, list[HostOutcome]] = {}
    for outcome in outcomes:
        by_cluster.setdefault(outcome.cluster, []).append(outcome)
    summaries = []
    for cluster in sorted(by_cluster):
        members = sorted(by_cluster[cluster], key=lambda o: o.host)
        failed = [o for o in members if o.failed]
        causes = [o for o in failed if not o.stopped_by_cluster] or failed
        changed = tuple(o.host for o in members if o.changed)
        status: Status = "failed" if failed else ("changed" if changed else "unchanged")
        summaries.append(ClusterSummary(
            cluster=cluster,
            status=status,
            hosts=tuple(o.host for o in members),
            changed_hosts=changed,
            failures=tuple((o.host, _one_line(o.reason or "failed (see the output above)"))
                           for o in causes),
        ))
    return summaries


def merge(*runs: Iterable[ClusterSummary]) -> list[ClusterSummary]:
    """Combine the summaries of several runs (e.g. canaries, then the rest): the last wins."""
    combined: dict[str, ClusterSummary] = {}
    for run in runs:
        for summary in run:
            combined[summary.cluster] = summary
    return [combined[name] for name in sorted(combined)]


def exit_code(summaries: Iterable[ClusterSummary]) -> int:
    return EXIT_FAILED if any(s.status == "failed" for s in summaries) else EXIT_OK


def render(summaries: Iterable[ClusterSummary], title: str = "Per-cluster summary") -> str:
    summaries = list(summaries)
    if not summaries:
        return f"--> {title}: no cluster in this run\n"
    lines = [f"--> {title}:"]
    lines.extend(f"    {s.line()}" for s in summaries)
    # Which release did this: what a site pins, and what `status` shows on each host.
    lines.append(f"--> slurmrestd-access {__version__}")
    return "\n".join(lines) + "\n"


def to_json(summaries: Iterable[ClusterSummary]) -> str:
    summaries = list(summaries)
    return json.dumps({"clusters": [s.to_dict() for s in summaries],
                       "exit_code": exit_code(summaries)}, indent=2) + "\n"


def from_json(text: str) -> list[ClusterSummary]:
    data = json.loads(text)
    return [ClusterSummary.from_dict(c) for c in data.get("clusters", [])]
