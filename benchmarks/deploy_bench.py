"""Benchmark of the deploy: wall time and remote commands per host, first run and no-change re-run.

    .venv/bin/python benchmarks/deploy_bench.py [single split ...] [--repeat N]

For each topology: a fresh testbed (`down` then `up`, so the first run starts from the state an
administrator starts from), a first deploy, then N no-change re-runs. Remote commands are
counted from pyinfra's --debug log ("Running command on HOST") plus file uploads. The yardstick
(issue 3): an idempotent Ansible playbook took 8.7 s (first) and 6.8 s (no change) on one host.
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

from tests.e2e.pyinfra_run import run_deploy  # noqa: E402

COMMAND_LINE = re.compile(r"Running command on (\S+?):")
UPLOAD_LINE = re.compile(r"\[(\S+)\] Uploading: ")


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


def bench(topology: str, repeat: int) -> dict:
    testbed("down", topology)
    testbed("up", topology)
    inventory = ROOT / ".testbed" / f"{topology}.py"
    first = run_deploy(inventory, "deploys/slurmrestd_access.py", "--debug")
    if first.returncode != 0:
        raise SystemExit(f"first deploy failed:\n{first.output[-4000:]}")
    reruns = [run_deploy(inventory) for _ in range(repeat)]
    if any(r.returncode != 0 or r.totals()["changed"] for r in reruns):
        raise SystemExit("a re-run failed or changed something")
    counted = run_deploy(inventory, "deploys/slurmrestd_access.py", "--debug")
    return {
        "topology": topology,
        "first_run_s": round(first.seconds, 2),
        "first_run_commands_per_host": commands_per_host(first.output),
        "rerun_s": [round(r.seconds, 2) for r in reruns],
        "rerun_median_s": round(statistics.median(r.seconds for r in reruns), 2),
        "rerun_commands_per_host": commands_per_host(counted.output),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topologies", nargs="*", default=["single", "split"])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    results = [bench(t, args.repeat) for t in args.topologies]
    testbed("down", *args.topologies)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
