"""Benchmark of the many-cluster commands on the testbed's `fleet` topology (3 clusters, 5 hosts).

    python benchmarks/fleet_bench.py [--repeat N]

Measures wall time (the real pyinfra CLI over SSH, as an administrator runs it) of:
  - a first rollout and a no-change re-run of ONE cluster (`--limit alpha`), from fresh hosts
  - a first rollout and a no-change re-run of ALL 3 clusters, from fresh hosts
  - a coordinated rotation of one cluster (`deploys/rotate_key.py --limit beta`, 3 hosts)
  - the read-only fleet report of all 3 clusters
and the ratios 3 clusters / 1 cluster (target: under 1.5: clusters run in parallel). Uses only
the `fleet` topology (`up fleet --fresh`; never takes other topologies down). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.pyinfra_run import run_deploy  # noqa: E402

INVENTORY = ROOT / ".testbed" / "fleet.py"


def fresh_fleet() -> None:
    subprocess.run([sys.executable, "-m", "tests.testbed", "up", "fleet", "--fresh"], cwd=ROOT,
                   capture_output=True, text=True, check=True)


def timed(deploy: str, *extra: str) -> float:
    run = run_deploy(INVENTORY, deploy, *extra)
    if run.returncode != 0:
        raise SystemExit(f"{deploy} {' '.join(extra)} failed:\n{run.output[-4000:]}")
    return run.seconds


def first_and_reruns(limit: tuple[str, ...], repeat: int) -> dict:
    fresh_fleet()
    first = timed("deploys/slurmrestd_access.py", *limit)
    reruns = [timed("deploys/slurmrestd_access.py", *limit) for _ in range(repeat)]
    return {"first_s": round(first, 2), "rerun_s": [round(r, 2) for r in reruns],
            "rerun_median_s": round(statistics.median(reruns), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="no-change re-runs (median)")
    args = parser.parse_args()
    one = first_and_reruns(("--limit", "alpha"), args.repeat)
    three = first_and_reruns((), args.repeat)
    rotations = [timed("deploys/rotate_key.py", "--limit", "beta") for _ in range(args.repeat)]
    start = time.monotonic()
    report = subprocess.run([sys.executable, "-m", "deploys.report", str(INVENTORY)], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    report_s = time.monotonic() - start
    if report.returncode != 0:
        raise SystemExit(f"the fleet report found problems:\n{report.stdout}")
    print(json.dumps({
        "one_cluster_alpha": one,
        "three_clusters": three,
        "ratio_first_3_over_1": round(three["first_s"] / one["first_s"], 2),
        "ratio_rerun_3_over_1": round(three["rerun_median_s"] / one["rerun_median_s"], 2),
        "rotation_beta_s": [round(r, 2) for r in rotations],
        "rotation_beta_median_s": round(statistics.median(rotations), 2),
        "report_3_clusters_s": round(report_s, 2),
    }, indent=2))


if __name__ == "__main__":
    main()
