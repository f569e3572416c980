"""Arguments of the host tool's `plan`, `agent-ini` and `check` commands for one host. Pure.

The deploy asks the tool once per host for everything it decides from (`slurmrestd-access
plan`), and later applies with the single commands: both must be given the same settings.
The check's arguments are the same for the deploy, the rotation and the report.
"""

from __future__ import annotations

import shlex

from slurmrestd_access.settings import Settings
from watchdog_daemon.config.dropin import render_dropin


def slurmrestd_dropin(settings: Settings, configless: bool = False) -> str:
    """The drop-in this host's slurmrestd gets (the deploy writes it, the report compares it);
    `configless`: the host has no slurm.conf of its own (confsource.py)."""
    return render_dropin(socket_path=settings.slurmrestd_socket, slurm_conf=settings.slurm_conf,
                         configless=configless)


def controller_up(settings: Settings) -> str:
    """The shell test that a restarted slurmctld answers: `scontrol ping` says UP, and says it
    of EVERY controller (high availability: none DOWN), so that the next controller is
    restarted only once this one has come back.

    scontrol finds slurm.conf at its compiled-in path unless SLURM_CONF says otherwise; a site
    whose slurm.conf lives elsewhere (host data `slurm_conf`) sets it for its daemons, but the
    deploy's shell (over sudo, whose env_reset drops it) may not have it: say it here.
    """
    return (f"SLURM_CONF={shlex.quote(settings.slurm_conf)} scontrol ping 2>/dev/null "
            "| awk '/ is UP/ {up = 1} / is DOWN/ {down = 1} END {exit !(up && !down)}'")


def agent_ini_args(settings: Settings) -> list[str]:
    args = ["--file", settings.agent_ini, "--uri", settings.socket_uri,
            "--jwt-key", settings.agent_key_path]
    if settings.jwt_user:
        args += ["--jwt-user", settings.jwt_user]
    if settings.jwt_lifespan:
        args += ["--jwt-lifespan", str(settings.jwt_lifespan)]
    return args + release_args(settings)


def release_args(settings: Settings) -> list[str]:
    """The agent's release as host data names it, for the tool's commands that read agent.ini
    (read there only where nothing on the host names it)."""
    return ["--slurmweb-release", settings.slurmweb_release] if settings.slurmweb_release else []


def conf_files(settings: Settings, roles: frozenset[str]) -> list[str]:
    files = []
    if roles & {"slurmctld", "slurmrestd", "compute"}:
        files.append(settings.slurm_conf)
    if "slurmdbd" in roles:
        files.append(settings.slurmdbd_conf)
    return files


def plan_args(settings: Settings, roles: frozenset[str]) -> list[str]:
    """`slurmrestd-access plan` arguments: everything this host's operations decide from."""
    args: list[str] = []
    if "slurmrestd" in roles:
        args += ["--preflight-unit", settings.slurmrestd_unit,
                 "--socket", settings.slurmrestd_socket]
    for file in conf_files(settings, roles):
        args += ["--conf", file]
    args += ["--jwt-key", settings.jwt_key_path]
    if "slurmrestd" in roles:
        ini = agent_ini_args(settings)
        ini[ini.index("--file")] = "--agent-ini"
        ini[ini.index("--jwt-key")] = "--agent-jwt-key"
        args += ini
        if settings.allow_unsupported_slurm:
            args += ["--allow-unsupported-slurm"]
    return args


def check_args(s: Settings, key: str | None = None) -> tuple[str, ...]:
    # slurm.conf as the host data names it: where the check reads whether accounting is on.
    args = ("check", "--agent-ini", s.agent_ini, "--slurm-conf", s.slurm_conf,
            "--timeout", str(s.check_timeout))
    if s.allow_unsupported_slurm:
        # A Slurm older than the agent can use, kept with JWT on purpose: the check proves the
        # API that release serves instead of failing on the agent's versions.
        args = (*args, "--any-api-version")
    args = (*args, *release_args(s))
    return (*args, "--key", key) if key else args


def plan_problems(plan: dict, agent_host: bool, skip_files: tuple[str, ...] = ()) -> list[str]:
    """What in the tool's plan stops the deploy before any change (the preflight's errors, a
    file that cannot be merged), one line each; `skip_files`: files the deploy does not merge
    on this host (a configless host's slurm.conf)."""
    if plan.get("exit_code", 0) != 0:
        return [f"the host tool could not look at this host: "
                f"{plan.get('message') or plan.get('error') or plan}"]
    problems = []
    parts = [p for p in plan.get("conf", []) if p.get("file") not in skip_files]
    if agent_host:
        report = plan.get("preflight") or {"exit_code": 1, "message": "no preflight report"}
        for finding in report.get("findings", []):
            if finding.get("level") == "error":
                problems.append(f"{finding.get('message')} — {finding.get('hint', '')}")
        if report["exit_code"] != 0 and not report.get("findings"):
            problems.append(f"preflight: {report.get('message', report)}")
        parts.append(plan.get("agent_ini") or {"exit_code": 1, "message": "no agent.ini plan"})
    for part in parts:
        if part.get("exit_code", 1) != 0:
            hint = f" — {part['hint']}" if part.get("hint") else ""
            problems.append(f"cannot merge into {part.get('file', '?')}: "
                            f"{part.get('message', 'no details')}{hint}")
    return problems
