"""Benchmark: the agent's outage per hand rotation of Slurm's key, with the watchdog on duty.

Real Slurm on the testbed (topology `single`), the Slurm-web agent stand-in, this project's
deploy and watchdog. Each rotation, as an administrator does it by hand: a new key renamed over
Slurm's, then after a gap `systemctl restart slurmdbd` and `scontrol reconfigure`. The agent's
data endpoint (`/v6.0.0/jobs`, signed with the key the agent loaded at start) is polled all
along; the outage runs from the reconfigure to the agent's first success again (issue 10:
p95 <= 2 s, max <= 3 s, exactly one agent restart per rotation, a handful of authentication
error lines in slurmctld's journal per rotation).

The measuring runs on the agent host itself (benchmarks/rotation_outage_host.py, fed over SSH):
one clock, no SSH latency in the figures, and the keys never leave the host.

    flock /tmp/sra-testbed.lock sh -c '.venv/bin/python -m tests.testbed up single &&
        .venv/bin/python benchmarks/rotation_outage.py --deploy;
        .venv/bin/python -m tests.testbed down'
    .venv/bin/python benchmarks/rotation_outage.py --gaps 5,5,30        # a short run

Prints one JSON summary on stdout (per-rotation lines on stderr as they come); asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.testbed.testbed import Testbed  # noqa: E402

# 10 rotations, gaps of 5, 30, 90 and 180 s mixed (sum 470 s: the run takes about 10 minutes).
DEFAULT_GAPS = "5,30,90,5,180,30,5,90,30,5"


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summarize(data: dict) -> dict:
    rows = data["rotations"]
    outages = [r["outage_s"] for r in rows]
    restarts = [r["agent_restarts"] for r in rows]
    lines = [r["ctld_auth_lines"] for r in rows]
    # The agent's failed requests after the reconfigure are slurmctld refusals too (the data
    # endpoint goes to slurmctld); the rest are the watchdog's own.
    own = [r["ctld_refusals"] - r["failed_polls_after_reload"] for r in rows]
    waiting = [r["gap_s"] + r["reconfigure_s"] for r in rows]
    probes_per_min = [round(r["probes"] * 60 / w, 1) for r, w in zip(rows, waiting, strict=True)
                      if w > 0]
    return {
        "rotations": len(rows),
        "gaps_s": [r["gap_s"] for r in rows],
        "outage_s": {"p50": round(_pct(outages, 0.5), 3), "p95": round(_pct(outages, 0.95), 3),
                     "max": round(max(outages), 3), "all": outages},
        "agent_failing_s": [r["failing_s"] for r in rows],
        "agent_restarts_per_rotation": restarts,
        "exactly_one_restart_each": all(n == 1 for n in restarts),
        "failures_after_recovery": sum(r["failures_after_recovery"] for r in rows),
        "status_exit_codes_while_waiting": sorted({c for r in rows
                                                   for c in r["status_exit_codes_while_waiting"]}),
        "ctld_auth_lines_per_rotation": lines,
        "ctld_refused_tokens_per_rotation": [r["ctld_refusals"] for r in rows],
        "ctld_refused_tokens_of_the_agent": [r["failed_polls_after_reload"] for r in rows],
        "ctld_refused_tokens_of_the_watchdog": own,
        "ctld_refused_tokens_of_the_watchdog_median": statistics.median(own),
        "ctld_auth_line_example": next((r["ctld_auth_examples"][0] for r in rows
                                        if r["ctld_auth_examples"]), None),
        "watchdog_probes_per_minute_while_waiting": probes_per_min,
        "watchdog_verifies_per_rotation": [r["verifies"] for r in rows],
        "watchdog_cpu_s_per_min_while_waiting": [r["watch_cpu_s_per_min_while_waiting"]
                                                 for r in rows],
        "poll_s": data["poll_s"],
        "endpoint": data["endpoint"],
        "targets": {"p95_s": 2.0, "max_s": 3.0, "restarts_per_rotation": 1},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gaps", default=DEFAULT_GAPS,
                        help=f"seconds from the rename to Slurm's reload, per rotation "
                        f"(default {DEFAULT_GAPS})")
    parser.add_argument("--host", default="hpc1", help="the agent host (topology single)")
    parser.add_argument("--agent-unit", default="slurm-web-agent.service")
    parser.add_argument("--endpoint", default="/v6.0.0/jobs",
                        help="the stand-in's endpoint to poll (/standin/status also works)")
    parser.add_argument("--poll", type=float, default=0.1, help="seconds between agent polls")
    parser.add_argument("--deploy", action="store_true", help="run the deploy first")
    parser.add_argument("--raw", action="store_true", help="print the per-rotation data too")
    args = parser.parse_args()

    testbed = Testbed()
    if args.deploy:
        from tests.e2e.pyinfra_run import run_deploy

        run = run_deploy(testbed.inventory_path("single"))
        if run.returncode != 0:
            raise SystemExit(f"deploy failed:\n{run.output[-4000:]}")
    script = (ROOT / "benchmarks" / "rotation_outage_host.py").read_bytes()
    command = (f"python3 - --gaps {args.gaps} --agent-unit {args.agent_unit} "
               f"--endpoint {args.endpoint} --poll {args.poll}")
    done = testbed.ssh(args.host, command, input=script)
    stdout = done.stdout.decode(errors="replace")
    sys.stderr.write(done.stderr.decode(errors="replace"))
    if done.returncode != 0:
        raise SystemExit(f"the run on {args.host} failed (exit {done.returncode})")
    data = json.loads(stdout.strip().splitlines()[-1])
    summary = summarize(data)
    if args.raw:
        summary["raw"] = data["rotations"]
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
