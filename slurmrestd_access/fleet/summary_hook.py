"""Print the per-cluster summary at the end of a `pyinfra INVENTORY deploys/...` run.

pyinfra's CLI ends with `sys.exit` after its results table (exit 1 when any host failed), and
offers no hook after it, so the summary is printed by an `atexit` handler registered by the
deploy file. Everything it needs is in pyinfra's state: which operations changed or failed on
which host; the reasons of our own failures come from hostfail. With `SRA_SUMMARY_JSON=PATH`
the summary is also written there as JSON (the staged rollout reads it).
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import Any

from pyinfra.api.state import StateStage

from slurmrestd_access import callkeywords, hostfail
from slurmrestd_access.cluster import roles_of
from slurmrestd_access.fleet.summary import HostOutcome, render, summarise, to_json

SUMMARY_ENV = "SRA_SUMMARY_JSON"

_installed: set[int] = set()


def _first_error(state: Any, host: Any) -> str | None:
    """`<operation>: <last stderr line>` of the first operation that failed on this host."""
    ops = state.ops.get(host, {})
    for op_hash in state.get_op_order():
        data = ops.get(op_hash)
        if data is None or not data.operation_meta.is_complete():
            continue
        meta = data.operation_meta
        if meta.did_error():
            name = ", ".join(sorted(state.get_op_meta(op_hash).names)) or "operation"
            stderr = [line for line in meta.stderr_lines if line.strip()]
            if stderr:
                return f"{name}: {stderr[-1]}"
            # pyinfra keeps no output of a command it timed out: say so, as a likely cause.
            timeout = data.global_arguments.get("_timeout")
            hint = f" (timed out after {timeout}s?)" if timeout else ""
            return f"{name} failed without an error message{hint}; see the output above"
    return None


def host_outcomes(state: Any) -> list[HostOutcome]:
    outcomes = []
    for host in state.inventory:
        cluster = callkeywords.cluster_of(state, host)
        if not cluster or not roles_of(host.groups) or not state.is_host_in_limit(host):
            continue
        ops = state.ops.get(host, {})
        changed = any(
            d.operation_meta.is_complete() and d.operation_meta.did_change() for d in ops.values()
        )
        failed = host in state.failed_hosts
        reason, stopped = None, False
        if failed:
            own = hostfail.failures.get(host.name)
            if own is not None:
                reason, stopped = own.reason, own.stopped_by_cluster
            else:
                reason = _first_error(state, host) or (
                    "could not connect (see the output above)" if not ops else None)
        outcomes.append(HostOutcome(host.name, str(cluster), changed=changed, failed=failed,
                                    reason=reason, stopped_by_cluster=stopped))
    return outcomes


def _report(state: Any) -> None:
    # A dry run or a run stopped before execution has nothing to summarise, unless hosts
    # already failed (connection, preparation).
    if state.current_stage < StateStage.Execute and not state.failed_hosts:
        return
    summaries = summarise(host_outcomes(state))
    sys.stdout.write("\n" + render(summaries))
    sys.stdout.flush()
    path = os.environ.get(SUMMARY_ENV)
    if path:
        with open(path, "w", encoding="utf-8") as out:
            out.write(to_json(summaries))


def install(state: Any) -> None:
    """Called by the deploy file (once per host): print the summary once, at the end."""
    if id(state) in _installed:
        return
    _installed.add(id(state))
    atexit.register(_report, state)
