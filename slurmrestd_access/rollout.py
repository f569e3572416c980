"""Staged rollout: the canary clusters first, the rest only when they all succeeded.

    slurmrestd-access-rollout INVENTORY [--canary CLUSTER_OR_GROUP ...] [--dry] [-- PYINFRA_ARGS]

(or `python -m slurmrestd_access.rollout`). Runs the real pyinfra CLI (`pyinfra -y INVENTORY
slurmrestd_access.deploys.slurmrestd_access --limit CANARY`),
then, when every canary cluster succeeded, the same with `--exclude CANARY` for the others, and
prints the combined per-cluster summary. Arguments after `--` go to both pyinfra runs (e.g.
`--parallel 10`, `-v`).

Exit: 0 every cluster ok; 1 some cluster failed; 2 usage; 3 a canary failed, so nothing else
was touched.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from slurmrestd_access import __version__
from slurmrestd_access.fleet import rollout_plan as rp
from slurmrestd_access.fleet.summary import from_json, merge, render
from slurmrestd_access.fleet.summary_hook import SUMMARY_ENV


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slurmrestd-access-rollout",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("inventory")
    p.add_argument("--canary", action="append", default=[], metavar="NAME",
                   help="a cluster, group or host deployed first; may be repeated")
    p.add_argument("--dry", action="store_true", help="only show what each stage would change")
    p.add_argument("--deploy", default=rp.DEPLOY, help=argparse.SUPPRESS)
    return p


def run_stage(stage: rp.Stage, args: argparse.Namespace, extra: list[str]) -> rp.StageResult:
    command = rp.pyinfra_command(sys.executable, args.inventory, stage, extra, args.dry,
                                 args.deploy)
    print(f"--> rollout: {stage.name} stage: {' '.join(command[1:])}", flush=True)
    with tempfile.TemporaryDirectory(prefix="sra-rollout-") as tmp:
        out = Path(tmp) / "summary.json"
        env = {**os.environ, SUMMARY_ENV: str(out)}
        done = subprocess.run(command, env=env, check=False)
        summaries = tuple(from_json(out.read_text())) if out.exists() else None
    if args.dry and summaries is None:
        summaries = ()  # a dry run changes nothing and has nothing to summarise
    result = rp.settle_empty_rest(rp.StageResult(stage, done.returncode, summaries))
    if result.summaries == () and summaries is None:
        print("--> rollout: no cluster outside the canaries: nothing more to deploy", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return rp.EXIT_USAGE if exc.code else 0
    if not Path(args.inventory).exists():
        print(f"rollout: no inventory file {args.inventory}", file=sys.stderr)
        return rp.EXIT_USAGE
    results: list[rp.StageResult] = []
    for stage in rp.stages(args.canary):
        result = run_stage(stage, args, extra)
        results.append(result)
        if result.summaries is None:
            print(f"--> rollout: {rp.missing_summary_note(result)}", flush=True)
        if not rp.should_continue(result):
            print("--> rollout: a canary failed: the other clusters were NOT touched", flush=True)
            break
    combined = merge(*(r.summaries or () for r in results))
    if args.dry:
        print("\n--> Rollout summary: dry run, nothing was changed; each stage's \"Detected "
              "changes\" table above lists what it would change", flush=True)
    else:
        sys.stdout.write("\n" + render(combined, title="Rollout summary"))
    code = rp.final_exit(results)
    print(f"--> rollout: exit {code}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
