"""A failure on one host fails only that host and its cluster; the others finish.

Runs the real pyinfra CLI (in a subprocess: pyinfra_cli patches gevent into the process) on
pyinfra's @fake connector, with the deploy's own failure wrapper (hostfail) and summary hook.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

INVENTORY = '''
_d = {"fake_delay": 0}
a = [("@fake/a1", {**_d, "cluster": "a"}), ("@fake/a2", {**_d, "cluster": "a"})]
b = [("@fake/b1", {**_d, "cluster": "b"})]
c = [("@fake/c1", {**_d, "cluster": "c",
      "fake_responses": {"false": {"success": False, "stderr": "c1 went wrong"}}})]
slurmctld = ["@fake/a1", "@fake/b1", "@fake/c1"]
slurmrestd = ["@fake/a2", "@fake/b1", "@fake/c1"]
'''

DEPLOY = '''
from pyinfra import host, state
from pyinfra.api import OperationError, StringCommand, operation

from slurmrestd_access.fleet import summary_hook
from slurmrestd_access.hostfail import host_local
from slurmrestd_access.operations import stop_if_cluster_failed
from slurmrestd_access.settings import Settings

summary_hook.install(state)


@operation()
@host_local
def step(n):
    stop_if_cluster_failed(Settings(cluster=host.data.get("cluster")))
    if host.name == "@fake/a1" and n == 2 and state.is_executing:
        raise OperationError("boom on a1")
    if host.name == "@fake/c1" and n == 1:
        yield StringCommand("false")
    if host.name == "@fake/b1" and n == 0:
        return
    yield StringCommand("echo", f"step{n}")


for i in range(4):
    step(name=f"step {i}", n=i)
'''


def run(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    (tmp_path / "inv.py").write_text(INVENTORY)
    (tmp_path / "dep.py").write_text(DEPLOY)
    out = tmp_path / "summary.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SRA_SUMMARY_JSON": str(out),
           "NO_COLOR": "1"}
    done = subprocess.run([sys.executable, "-m", "pyinfra", "-y", "inv.py", "dep.py", *extra],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    return done, json.loads(out.read_text())


def test_failures_stay_in_their_cluster_and_the_run_exits_non_zero(tmp_path):
    done, summary = run(tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    status = {c["cluster"]: c for c in summary["clusters"]}
    assert status["a"]["status"] == "failed"
    assert status["a"]["failures"] == [{"host": "@fake/a1", "reason": "boom on a1"}]
    assert status["b"]["status"] == "changed"
    assert status["c"]["failures"] == [{"host": "@fake/c1", "reason": "step 1: c1 went wrong"}]
    # b1 went on to the last step after a1 and c1 failed; a2 stopped with its cluster.
    assert "a: failed (@fake/a1: boom on a1)" in done.stdout
    assert "cluster a: not continuing because @fake/a1 failed" in output
    last = output.split("Starting operation: step 3")[1]
    assert "[@fake/b1] Success" in last


def test_a_run_limited_to_a_healthy_cluster_exits_zero(tmp_path):
    done, summary = run(tmp_path, "--limit", "b")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [c["cluster"] for c in summary["clusters"]] == ["b"]
    assert "b: changed" in done.stdout
