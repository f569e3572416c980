"""Run the project's deploys with the real pyinfra CLI, over SSH, as an administrator would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class DeployRun:
    returncode: int
    output: str
    seconds: float

    def totals(self) -> dict[str, int]:
        """The 'Grand total' row of pyinfra's results table: changed, errors, unchanged ops."""
        for line in self.output.splitlines()[::-1]:
            if line.strip().startswith("Grand total"):
                cells = line.split()[2:]
                values = [0 if c == "-" else int(c) for c in cells]
                return dict(zip(("hosts", "changed", "errors", "unchanged"), values, strict=False))
        raise AssertionError(f"no results table in pyinfra output:\n{self.output[-3000:]}")

    def planned_changes(self) -> list[str]:
        """Operations that a --dry run says would change (not counting `_if` conditionals)."""
        lines = self.output.splitlines()
        try:
            start = next(i for i, line in enumerate(lines) if "--> Detected changes" in line)
        except StopIteration:
            raise AssertionError(
                f"no change table in --dry output:\n{self.output[-3000:]}"
            ) from None
        changed = []
        for line in lines[start + 2:]:
            if not line.strip():
                break
            cells = re.split(r"\s{2,}", line.strip())
            if len(cells) >= 3 and cells[-2] != "-":
                changed.append(cells[0])
        return changed


def run_deploy(inventory: Path, deploy: str = "deploys/slurmrestd_access.py", *extra: str,
               timeout: int = 900, env: dict[str, str] | None = None) -> DeployRun:
    # -y: no prompt; but a dry run must keep pyinfra's change detection, which -y skips.
    yes = [] if "--dry" in extra else ["-y"]
    cmd = [sys.executable, "-m", "pyinfra", *yes, str(inventory), deploy, *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1", **(env or {})}
    start = time.monotonic()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=env, check=False)
    output = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)
    return DeployRun(done.returncode, output, time.monotonic() - start)


def report_cmd() -> list[str]:
    """The fleet report, as installed: the package's console script beside this Python."""
    return [str(Path(sys.executable).parent / "slurmrestd-access-report")]


def rollout_cmd() -> list[str]:
    """The staged rollout, as installed: the package's console script beside this Python."""
    return [str(Path(sys.executable).parent / "slurmrestd-access-rollout")]
