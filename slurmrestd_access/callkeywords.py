"""The keywords a deploy function was called with, for what looks at other hosts than the one
being prepared: the cluster plans, a failed cluster's stop, the per-cluster summary.

A call covers the whole inventory (pyinfra calls the deploy function once per host with the
same keywords), so the keywords are kept per run (per pyinfra State).
"""

from __future__ import annotations

from typing import Any

_by_state: dict[int, dict[str, Any]] = {}


def remember(state: Any, keywords: dict[str, Any]) -> None:
    _by_state[id(state)] = {k: v for k, v in keywords.items() if v is not None}


def cluster_of(state: Any, host: Any) -> Any:
    """The host's cluster: the call's `cluster` keyword, else its host data."""
    return _by_state.get(id(state), {}).get("cluster") or host.data.get("cluster")


def keywords_of(state: Any) -> dict[str, Any]:
    """The keywords of this run's deploy call (empty when called without)."""
    return dict(_by_state.get(id(state), {}))
