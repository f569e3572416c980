"""Benchmark of the many-cluster commands on the testbed's `fleet` topology (3 clusters, 5 hosts).

    python benchmarks/fleet_bench.py [--repeat N] [--first N]

Measures wall time (the real pyinfra CLI over SSH, as an administrator runs it) of:
  - a first rollout and a no-change re-run of ONE cluster (`--limit alpha`, one host; and
    `--limit beta`, the slowest alone: three hosts), from fresh hosts
  - a first rollout and a no-change re-run of ALL 3 clusters, from fresh hosts
  - a coordinated rotation of one cluster (`deploys/rotate_key.py --limit beta`, 3 hosts)
  - the read-only fleet report of all 3 clusters
and the ratios 3 clusters / 1 cluster (target: under 1.5: clusters run in parallel). First
rollouts are medians of N, each from fresh hosts; for each, the share of the machine's CPU
time that was busy (near 1: the run waited for CPUs, not for daemons). The workstation's
wheelhouse is made ready before anything is timed (once per workstation and tool version,
reported apart); the tool-install step of a first rollout is also shown apart, since the
testbed's five hosts share this machine's two CPUs, which a real fleet does not. Uses only
the `fleet` topology (`up fleet --fresh`; never takes other topologies down). Prints JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.warm import warm_wheelhouse  # noqa: E402

INVENTORY = ROOT / ".testbed" / "fleet.py"
INSTALL_STEP = "Install the slurmrestd-access host tool"


def fresh_fleet(attempts: int = 3) -> None:
    # A booting host now and then never brings its network up (systemd "Failed to spawn
    # executor" on this machine): take the fleet down and boot it again.
    for attempt in range(attempts):
        done = subprocess.run([sys.executable, "-m", "tests.testbed", "up", "fleet", "--fresh"],
                              cwd=ROOT, capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return
        print(f"fleet did not come up (attempt {attempt + 1}): {done.stderr.strip()[-300:]}",
              file=sys.stderr)
        subprocess.run([sys.executable, "-m", "tests.testbed", "down", "fleet"], cwd=ROOT,
                       capture_output=True, check=False)
    raise SystemExit("the fleet did not come up")


def cpu_ticks() -> list[int]:
    """This machine's CPU time so far (the first line of /proc/stat), in clock ticks."""
    with open("/proc/stat") as stat:
        return [int(v) for v in stat.readline().split()[1:9]]


def busy_share(before: list[int], after: list[int]) -> float:
    """Of all CPU time there was meanwhile, the share not idle: near 1 means the run waited
    for CPUs (the testbed's hosts and pyinfra all share this machine's), not for daemons."""
    spent = [b - a for a, b in zip(before, after, strict=True)]
    idle = spent[3] + spent[4]  # idle, iowait
    return round(1 - idle / max(sum(spent), 1), 2)


LAST_BUSY: list[float] = []


def run(deploy: str, *extra: str) -> tuple[float, float]:
    """Wall time of `pyinfra -y INVENTORY DEPLOY EXTRA`, and the time of its tool-install step
    (from pyinfra's "Starting operation" lines, timestamped as they arrive). The machine's busy
    share during the run goes to LAST_BUSY."""
    cmd = [sys.executable, "-m", "pyinfra", "-y", str(INVENTORY), deploy, *extra]
    ticks = cpu_ticks()
    start = time.monotonic()
    marks: list[tuple[float, str]] = []
    tail: list[str] = []
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env={**os.environ, "NO_COLOR": "1"}) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail = [*tail[-200:], line]
            if "--> Starting operation:" in line or "--> Results:" in line:
                marks.append((time.monotonic() - start, line))
    seconds = time.monotonic() - start
    LAST_BUSY[:] = [busy_share(ticks, cpu_ticks())]
    if proc.returncode != 0:
        raise SystemExit(f"{deploy} {' '.join(extra)} failed:\n{''.join(tail)}")
    install = next((b[0] - a[0] for a, b in itertools.pairwise(marks)
                    if INSTALL_STEP in a[1]), 0.0)
    return seconds, install


def first_and_reruns(limit: tuple[str, ...], repeat: int, firsts: int) -> dict:
    runs, busy = [], []
    for _ in range(firsts):
        fresh_fleet()
        runs.append(run("deploys/slurmrestd_access.py", *limit))
        busy.append(LAST_BUSY[0])
    reruns = [run("deploys/slurmrestd_access.py", *limit)[0] for _ in range(repeat)]
    first = statistics.median(r[0] for r in runs)
    install = statistics.median(r[1] for r in runs)
    return {"first_s": [round(r[0], 2) for r in runs], "first_median_s": round(first, 2),
            "first_cpu_busy_share": busy,
            "first_tool_install_median_s": round(install, 2),
            "first_without_install_median_s": round(
                statistics.median(r[0] - r[1] for r in runs), 2),
            "rerun_s": [round(r, 2) for r in reruns],
            "rerun_median_s": round(statistics.median(reruns), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="no-change re-runs (median)")
    parser.add_argument("--first", type=int, default=3, help="first rollouts (median)")
    args = parser.parse_args()
    fresh_fleet()
    wheelhouse_s = warm_wheelhouse("alpha1")
    one = first_and_reruns(("--limit", "alpha"), args.repeat, args.first)
    # The slowest cluster alone (3 hosts, the key pushed to its slurmdbd host): with perfect
    # parallelism, all 3 clusters would take as long as it does.
    slowest = first_and_reruns(("--limit", "beta"), args.repeat, args.first)
    three = first_and_reruns((), args.repeat, args.first)
    rotations = [run("deploys/rotate_key.py", "--limit", "beta")[0] for _ in range(args.repeat)]
    start = time.monotonic()
    report = subprocess.run([sys.executable, "-m", "slurmrestd_access.report", str(INVENTORY)],
                            cwd=ROOT,
                            capture_output=True, text=True, check=False)
    report_s = time.monotonic() - start
    if report.returncode != 0:
        raise SystemExit(f"the fleet report found problems:\n{report.stdout}")
    print(json.dumps({
        "one_cluster_alpha": one,
        "one_cluster_beta_the_slowest": slowest,
        "three_clusters": three,
        "wheelhouse_ready_s": round(wheelhouse_s, 2),
        "ratio_first_3_over_1": round(three["first_median_s"] / one["first_median_s"], 2),
        "ratio_first_without_install_3_over_1": round(
            three["first_without_install_median_s"] / one["first_without_install_median_s"], 2),
        "ratio_rerun_3_over_1": round(three["rerun_median_s"] / one["rerun_median_s"], 2),
        "ratio_first_3_over_slowest_1": round(
            three["first_median_s"] / slowest["first_median_s"], 2),
        "workstation_cpus": os.cpu_count(),
        "rotation_beta_s": [round(r, 2) for r in rotations],
        "rotation_beta_median_s": round(statistics.median(rotations), 2),
        "report_3_clusters_s": round(report_s, 2),
    }, indent=2))


if __name__ == "__main__":
    main()
