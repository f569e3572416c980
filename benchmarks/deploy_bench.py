"""Benchmark of the deploy: wall time and remote commands per host, first run and no-change re-run.

    .venv/bin/python benchmarks/deploy_bench.py [single split ...] [--repeat N] [--first N]
                                                [--sudo [--sudo-rule nopasswd|password]]

For each topology: the workstation's wheelhouse made ready and timed apart (it is built once per
workstation and tool version, not per deploy), then N first deploys, each on a fresh testbed
(`down` then `up`: the state an administrator starts from), then N no-change re-runs. Remote
commands are counted from pyinfra's --debug log ("Running command on HOST"). The yardstick
(issue 3): an idempotent Ansible playbook took 8.7 s (first) and 6.8 s (no change) on one host.
With --sudo, each topology is also deployed as the testbed's unprivileged `admin` through sudo
(`.testbed/<topology>-sudo.py`: each host's own rule, with or without a password), and the
re-run's median over sudo is given as a ratio of root's (issue 11: at most 1.2), from re-runs
taken in turns, root then sudo, on the same hosts.
The floor: as many runs of benchmarks/floor_deploy.py (pyinfra with one `true` per host) on the
same hosts, in turns with the re-runs; `rerun_over_floor` is the re-runs' median over the
floor's (issue 23: at most 1.3).
Prints one JSON object; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.warm import warm_wheelhouse  # noqa: E402
from tests.e2e.pyinfra_run import run_deploy  # noqa: E402
from tests.testbed.topology import load_catalog  # noqa: E402

COMMAND_LINE = re.compile(r"Running command on (\S+?):")


def testbed(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "tests.testbed", *args], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return done.stdout


def commands_per_host(output: str) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for line in output.splitlines():
        if m := COMMAND_LINE.search(line):
            counts[m.group(1)] += 1
    return dict(sorted(counts.items()))


def inventory_of(topology: str, sudo: bool) -> Path:
    return ROOT / ".testbed" / f"{topology}{'-sudo' if sudo else ''}.py"


# With --sudo-rule, every host's sudo rule for admin (`up` sets each host's default again).
SUDO_RULE: list[str] = []


def up(topology: str) -> None:
    testbed("up", topology)
    if SUDO_RULE:
        testbed("sudo-mode", topology, SUDO_RULE[0])


def first_deploy(topology: str, *extra: str, sudo: bool = False):
    testbed("down", topology)
    up(topology)
    inventory = inventory_of(topology, sudo)
    first = run_deploy(inventory, "deploys/slurmrestd_access.py", *extra)
    if first.returncode != 0:
        raise SystemExit(f"first deploy failed:\n{first.output[-4000:]}")
    return first


def bench(topology: str, repeat: int, firsts: int, sudo: bool = False) -> dict:
    up(topology)
    # The testbed's hosts share one image: one Python version and machine.
    warm_s = warm_wheelhouse(load_catalog().topology(topology).hosts[0].name)
    counted_first = first_deploy(topology, "--debug", sudo=sudo)  # --debug slows it: not timed
    first_runs = [first_deploy(topology, sudo=sudo).seconds for _ in range(firsts)]
    inventory = inventory_of(topology, sudo)
    # In turns, so that a change of the machine's load during the benchmark weighs on both.
    reruns, floors = [], []
    for _ in range(repeat):
        reruns.append(run_deploy(inventory))
        floors.append(run_deploy(inventory, "benchmarks/floor_deploy.py"))
    if any(r.returncode != 0 or r.totals()["changed"] for r in reruns):
        raise SystemExit("a re-run failed or changed something")
    if any(f.returncode != 0 for f in floors):
        raise SystemExit(f"the floor deploy failed:\n{floors[0].output[-3000:]}")
    rerun_median = statistics.median(r.seconds for r in reruns)
    floor_median = statistics.median(f.seconds for f in floors)
    counted = run_deploy(inventory, "deploys/slurmrestd_access.py", "--debug")
    return {
        "topology": topology,
        "as": (f"admin over sudo ({SUDO_RULE[0] if SUDO_RULE else 'each host its own rule'})"
               if sudo else "root"),
        "wheelhouse_ready_s": round(warm_s, 2),
        "first_run_s": [round(t, 2) for t in first_runs],
        "first_run_median_s": round(statistics.median(first_runs), 2),
        "first_run_commands_per_host": commands_per_host(counted_first.output),
        "rerun_s": [round(r.seconds, 2) for r in reruns],
        "rerun_median_s": round(rerun_median, 2),
        "floor_s": [round(f.seconds, 2) for f in floors],
        "floor_median_s": round(floor_median, 2),
        "rerun_over_floor": round(rerun_median / floor_median, 2),
        "rerun_commands_per_host": commands_per_host(counted.output),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topologies", nargs="*", default=["single", "split"])
    parser.add_argument("--repeat", type=int, default=5, help="no-change re-runs")
    parser.add_argument("--first", type=int, default=3, help="first deploys, each on fresh hosts")
    parser.add_argument("--sudo", action="store_true",
                        help="also as the unprivileged admin through sudo, next to root")
    parser.add_argument("--sudo-rule", choices=("nopasswd", "password"),
                        help="admin's sudo rule on every host (default: each host's own)")
    args = parser.parse_args()
    SUDO_RULE[:] = [args.sudo_rule] if args.sudo_rule else []
    results = []
    for t in args.topologies:
        results.append(bench(t, args.repeat, args.first))
        if args.sudo:
            over_sudo = bench(t, args.repeat, args.first, sudo=True)
            # The ratio from re-runs taken in turns on the same hosts, so that a change of the
            # machine's load during the benchmark weighs on both alike.
            as_root, as_admin = [], []
            for _ in range(args.repeat):
                as_root.append(run_deploy(inventory_of(t, False)).seconds)
                as_admin.append(run_deploy(inventory_of(t, True)).seconds)
            over_sudo["rerun_in_turns_s"] = {"root": [round(x, 2) for x in as_root],
                                             "sudo": [round(x, 2) for x in as_admin]}
            over_sudo["rerun_vs_root"] = round(
                statistics.median(as_admin) / statistics.median(as_root), 2)
            over_sudo["first_run_vs_root"] = round(
                over_sudo["first_run_median_s"] / results[-1]["first_run_median_s"], 2)
            results.append(over_sudo)
    testbed("down", *args.topologies)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
