"""One survey per host and phase, and one plan by the host tool, shared by every operation.

Each costs a remote command (the plan also the host Python's start-up), so they are made once
per host and phase. An operation that changes the host records what the host will look like
once its commands have run (`record`): later operations decide from that, not from a new
survey. The prediction is safe to use: when a command fails, pyinfra runs no later operation
on that host. Content that cannot be predicted (a key created on the host, a merged file)
is recorded with no hash, which every comparison treats as "differs": the operations that
depend on it act, and what they run is idempotent. While planning (`--dry`) nothing runs, so
nothing is recorded and the survey stays true.
"""

from __future__ import annotations

import shlex
from dataclasses import replace

from pyinfra import host, state

from slurmrestd_access import callkeywords, privilege
from slurmrestd_access.cluster import roles_of
from slurmrestd_access.confsource import FETCHER_UNITS
from slurmrestd_access.facts import ToolReport
from slurmrestd_access.hostfail import HostBlocked
from slurmrestd_access.hoststate import HostState as HostStateData
from slurmrestd_access.hoststate import RemoteFile, UnitState, parse_survey, survey_script
from slurmrestd_access.settings import Settings
from slurmrestd_access.toolplan import agent_ini_args, check_args, conf_files, plan_args
from slurmrestd_access.watchconf import WATCH_CONFIG_PATH, WATCH_UNIT, WATCH_UNIT_PATH
from watchdog_daemon.config.configless import CACHED_SLURM_CONF
from watchdog_daemon.system.agentunits import candidates as agent_candidates
from watchdog_daemon.system.surveycli import (
    CHECK_BEGIN,
    CHECK_END,
    PLAN_BEGIN,
    PLAN_END,
    PROTOCOL,
)

_cache: dict[tuple[str, bool], HostStateData] = {}
_plans: dict[tuple[str, bool], dict] = {}
_checks: dict[tuple[str, bool], dict] = {}  # the connect check made with the survey
_blocked: dict[str, str] = {}  # host -> why its commands cannot run as root
USAGE_EXIT = 2
# Set by the deploy (its operations read the tool's plan): the survey brings it along.
_with_plan: list[bool] = [False]


def bring_plan_along() -> None:
    """The survey also runs the installed tool's `plan`, in the same command: one command less
    per host and run (and, through sudo with a password, one authentication less). On a
    slurmrestd host it also runs the connect check (see `check_made_with_survey`)."""
    _with_plan[0] = True


def _key() -> tuple[str, bool]:
    return (host.name, state.is_executing)


def survey(settings: Settings) -> HostStateData:
    """The host as it is (or will be, see `record`). Raises HostBlocked when this host's
    commands cannot run as root: nothing is asked of it under sudo before that is proven."""
    if _blocked.get(host.name):
        raise HostBlocked(_blocked[host.name])
    if _key() not in _cache:
        script = survey_script_for(settings)
        if _with_plan[0]:
            script += "\n" + _plan_in_survey(settings)
            # The installed tool answers all of it in one process when it can; the shell
            # survey is for a host without it (or with an older one, or an old python3).
            script = (f"if [ -x {shlex.quote(settings.tool)} ] && "
                      f"{native_survey_command(settings)}; then :; else\n{script}\nfi")
        lines, blocked = privilege.run_as_root(state, host, script)
        if blocked:
            _blocked[host.name] = blocked
            raise HostBlocked(blocked)
        lines, check_lines = split_between(lines, CHECK_BEGIN, CHECK_END)
        survey_lines, plan_lines = split_between(lines, PLAN_BEGIN, PLAN_END)
        _cache[_key()] = parse_survey(survey_lines)
        if plan_lines is not None and _cache[_key()].tool_digest:
            _plans[_key()] = ToolReport().process(plan_lines)
        if check_lines is not None:
            _checks[_key()] = ToolReport().process(check_lines)
    blocked = privilege.not_root(host.name, _cache[_key()].uid)
    if blocked:
        raise HostBlocked(blocked)
    return _cache[_key()]


def _plan_in_survey(settings: Settings) -> str:
    """Shell for the survey: the installed tool's plan between markers (nothing when no tool
    is there; a tool that the deploy then replaces has its plan dropped, see `record`)."""
    tool = settings.tool
    command = ToolReport().command(tool, ("plan", *plan_args(settings, roles_of(host.groups))))
    return (f"if [ -x {shlex.quote(tool)} ]; then echo {PLAN_BEGIN}; "
            f"(unset LC_ALL; {command}); echo {PLAN_END}; fi")


def native_survey_argv(settings: Settings, roles: frozenset[str], check: bool) -> list[str]:
    """`slurmrestd-access survey`: the same lines as the shell survey, the plan, and with
    `check` the connect check as the agent's user, from one process. It exits non-zero having
    printed nothing when the shell survey must answer instead."""
    files, units, users, groups, keys = _survey_items(settings)
    argv = [settings.tool, "survey", "--protocol", str(PROTOCOL),
            "--tool-prefix", settings.tool_prefix, "--slurm-conf", settings.slurm_conf]
    for flag, values in (("--file", files), ("--key", keys), ("--unit", units),
                         ("--user", users), ("--group", groups)):
        for value in values:
            argv += [flag, value]
    argv += ["--plan", shlex.join(plan_args(settings, roles))]
    if check:
        argv += ["--check", shlex.join([*check_args(settings)[1:],
                                        "--as-user", settings.agent_user])]
    return argv


def native_survey_command(settings: Settings) -> str:
    """This host's `native_survey_argv`: the check on a slurmrestd host, during execution
    only (planning proves nothing; see connect_check)."""
    roles = roles_of(host.groups)
    argv = native_survey_argv(settings, roles, "slurmrestd" in roles and state.is_executing)
    # Declined (3) and an older tool's usage error (2) print nothing: the shell survey follows.
    return f"{shlex.join(argv)} 2>/dev/null"


def split_between(lines: list[str], begin_mark: str,
                  end_mark: str) -> tuple[list[str], list[str] | None]:
    """The lines outside the markers, and those between (None when there are no markers)."""
    if begin_mark not in lines or end_mark not in lines:
        return lines, None
    begin, end = lines.index(begin_mark), lines.index(end_mark)
    return lines[:begin] + lines[end + 1:], lines[begin + 1:end]


def cluster_unchanged_so_far(cluster: str) -> bool:
    """No operation of this run has changed any host of `cluster` yet (pyinfra runs each
    operation on every host before the next one starts, so every earlier one is complete)."""
    for other in state.inventory:
        if str(callkeywords.cluster_of(state, other)) != cluster:
            continue
        for op_data in state.ops.get(other, {}).values():
            meta = op_data.operation_meta
            if meta.is_complete() and meta.did_change():
                return False
    return True


def check_made_with_survey() -> dict | None:
    """The connect check the survey ran on this host (as the agent's user), during execution;
    None when it ran none. It proves the host as the survey found it: see connect_check."""
    return _checks.get(_key())


def known_file(host_name: str, path: str) -> RemoteFile | None:
    """`path` as another host's survey of this run and phase found (or predicts) it; None when
    that host was not surveyed yet or its survey does not cover `path`."""
    cached = _cache.get((host_name, state.is_executing))
    return cached.files.get(path) if cached is not None else None


def other_host(host_name: str) -> HostStateData | None:
    """Another host's survey of this run and phase, made now if it was not yet (pyinfra
    prepares hosts one after the other: while planning, a host prepared early has not seen the
    others' surveys). Its own operations reuse it. None when it cannot be surveyed (outside
    --limit, no root)."""
    cached = _cache.get((host_name, state.is_executing))
    return cached if cached is not None else _survey_other(host_name)


def _survey_other(host_name: str) -> HostStateData | None:
    from pyinfra.context import ctx_host

    from slurmrestd_access.settings import SettingsError, settings_from_host_data

    other = state.inventory.get_host(host_name)
    if other is None or not other.connected:
        return None
    try:
        settings = settings_from_host_data(host_name, dict(other.data.dict()),
                                           callkeywords.keywords_of(state))
        with ctx_host.use(other):
            return survey(settings)
    except (SettingsError, HostBlocked):
        return None  # said where that host's own operations are prepared


def _survey_items(settings: Settings) -> tuple[list[str], list[str], list[str], list[str],
                                               tuple[str, ...]]:
    """What the deploy reads on a host: files, units, users, groups, and which files are keys
    (or lie in another account's directory)."""
    return (
        [settings.jwt_key_path, settings.agent_key_path, settings.slurmrestd_dropin,
         settings.slurm_conf, settings.slurmdbd_conf, settings.agent_ini,
         WATCH_CONFIG_PATH, WATCH_UNIT_PATH, CACHED_SLURM_CONF],
        [settings.slurmctld_unit, settings.slurmdbd_unit, settings.slurmrestd_unit,
         *agent_candidates(settings.agent_unit), WATCH_UNIT, *FETCHER_UNITS],
        [settings.jwt_key_owner, settings.agent_user],
        [settings.jwt_key_group, settings.agent_group],
        (settings.jwt_key_path, settings.agent_key_path, CACHED_SLURM_CONF),
    )


def survey_script_for(settings: Settings) -> str:
    """The survey of what the deploy reads on a host, in shell: files, units, users, versions."""
    files, units, users, groups, keys = _survey_items(settings)
    return survey_script(files, units, users, groups, settings.tool_prefix, settings.slurm_conf,
                         keys=keys, tool=settings.tool)


def record(*, files: dict[str, RemoteFile] | None = None,
           units: dict[str, UnitState] | None = None, tool_digest: str | None = None) -> None:
    """An operation is about to change this host: what the host looks like once it has."""
    if not state.is_executing:
        return
    cached = _cache.get(_key())
    if cached is None:
        return
    cached.files.update(files or {})
    cached.units.update(units or {})
    if tool_digest is not None:
        cached.tool_digest = tool_digest
        _plans.pop(_key(), None)  # made by the previous tool
        _checks.pop(_key(), None)


def written(path: str, owner: str, group: str, mode: int, sha256: str | None = None) -> dict:
    """`record(files=...)` entry for a file an operation writes (sha256 None: not known here)."""
    return {path: RemoteFile(path, True, kind="regular file", owner=owner, group=group,
                             mode=mode, sha256=sha256)}


def content_changed(hs: HostStateData, path: str) -> dict:
    """`record(files=...)` entry for a file merged in place: owner and mode kept, content not
    known here."""
    return {path: replace(hs.file(path), sha256=None)}


def running(*names: str, enabled: bool | None = None) -> dict:
    """`record(units=...)` entry for units an operation starts (and enables)."""
    hs = _cache.get(_key())
    out = {}
    for name in names:
        current = hs.unit(name) if hs else UnitState(name)
        out[name] = replace(current, active="active",
                            unit_file="enabled" if enabled else current.unit_file)
    return out


# ---------------------------------------------------------------------------- the tool plan


def tool_plan(settings: Settings) -> dict | None:
    """The host tool's preflight, conf plans and agent-ini plan, from one run of the tool.

    None while the tool is not installed yet (planning a first deploy). A tool from before
    `plan` existed is asked part by part, as the same document.
    """
    if not survey(settings).tool_digest:
        return None
    roles = roles_of(host.groups)
    if _key() not in _plans:
        _plans[_key()] = tool_report(settings, "plan", *plan_args(settings, roles))
    if _plans[_key()]["exit_code"] == USAGE_EXIT:
        _plans[_key()] = _plan_part_by_part(settings, roles)
    return _plans[_key()]


def tool_report(settings: Settings, *args: str) -> dict:
    """`slurmrestd-access ARGS --json` on this host, as data (exit code included)."""
    return host.get_fact(ToolReport, tool=settings.tool, args=tuple(args))


def _plan_part_by_part(settings: Settings, roles: frozenset[str]) -> dict:
    plan: dict = {"exit_code": 0, "conf": []}
    if "slurmrestd" in roles:
        plan["preflight"] = tool_report(settings, "preflight", "--unit", settings.slurmrestd_unit,
                                    "--socket", settings.slurmrestd_socket)
        plan["agent_ini"] = tool_report(settings, "agent-ini", "plan", *agent_ini_args(settings))
    for file in conf_files(settings, roles):
        part = tool_report(settings, "conf", "plan", "--file", file,
                       "--jwt-key", settings.jwt_key_path)
        part.setdefault("file", file)
        plan["conf"].append(part)
    return plan


def conf_plan(settings: Settings, path: str) -> dict | None:
    plan = tool_plan(settings)
    if plan is None:
        return None
    for part in plan.get("conf", []):
        if part.get("file") == path:
            return part
    return {"exit_code": 1, "message": f"the host tool gave no plan for {path}"}
