"""pyinfra facts of the deploy: the host survey and the host-side tool's JSON reports."""

from __future__ import annotations

import json
import shlex

from pyinfra.api import FactBase

from slurmrestd_access.hoststate import HostState as HostStateData
from slurmrestd_access.hoststate import parse_survey, survey_script
from watchdog_daemon.system.surveycli import EXIT_MARK


class HostState(FactBase):
    """Files (owner, group, mode, sha256: never content), units, users and versions, in one call."""

    def command(
        self,
        files: tuple[str, ...],
        units: tuple[str, ...],
        users: tuple[str, ...],
        groups: tuple[str, ...],
        tool_prefix: str,
        slurm_conf: str = "/etc/slurm/slurm.conf",
        keys: tuple[str, ...] = (),
        tool: str = "",
    ) -> str:
        return survey_script(list(files), list(units), list(users), list(groups), tool_prefix,
                             slurm_conf, keys, tool)

    def process(self, output: list[str]) -> HostStateData:
        return parse_survey(output)


class ToolReport(FactBase):
    """Runs `slurmrestd-access ARGS --json` and returns its JSON with the exit code.

    The tool exits non-zero to say "failed check" or "refused": that is data here, not a fact
    error, so the exit code is captured rather than letting pyinfra fail the fact.
    """

    def command(self, tool: str, args: tuple[str, ...], as_user: str | None = None) -> str:
        cmd = " ".join(shlex.quote(a) for a in (tool, *args, "--json"))
        if as_user:
            cmd = f"runuser -u {shlex.quote(as_user)} -- {cmd}"
        return f"{cmd} 2>/dev/null; echo {EXIT_MARK}$?"

    def process(self, output: list[str]) -> dict:
        exit_code = 1
        body: list[str] = []
        for line in output:
            if line.startswith(EXIT_MARK):
                exit_code = int(line[len(EXIT_MARK):] or 1)
            else:
                body.append(line)
        text = "\n".join(body).strip()
        try:
            report = json.loads(text) if text else {}
        except json.JSONDecodeError:
            report = {"error": "unreadable_output", "message": text[-500:]}
        if not isinstance(report, dict):
            report = {"error": "unreadable_output", "message": str(report)[:500]}
        report["exit_code"] = exit_code
        return report
