"""pyinfra operations of the slurmrestd access deploy.

Thin by design: each decides from the host survey or a plan made by the host-side tool,
and yields commands only when something must change, so a re-run changes nothing.
Key material never passes through an argument, a fact or a command line (see keytransfer).
The operations on systemd units (enable, start, restart, daemon-reload) are in systemd.py.
"""

from __future__ import annotations

import functools
import hashlib
import shlex
from io import BytesIO

from pyinfra import host, state
from pyinfra.api import FileUploadCommand, FunctionCommand, OperationError, StringCommand, operation

from slurmrestd_access import callkeywords, hostpython, survey
from slurmrestd_access.cluster import primary_mismatch
from slurmrestd_access.confsource import slurm_conf_source, stale_copies, unhashed_copies
from slurmrestd_access.facts import HostState
from slurmrestd_access.hostfail import ClusterStopped, host_local
from slurmrestd_access.hoststate import RemoteFile, UnitState
from slurmrestd_access.keytransfer import KeySource, install_key_step, source_sha256
from slurmrestd_access.settings import Settings
from slurmrestd_access.toolplan import (
    agent_ini_args,
    check_args,
    controller_up,
    plan_problems,
    slurmrestd_dropin,
)
from slurmrestd_access.watchconf import WATCH_UNIT, removal_script, watchdog_leftover
from slurmrestd_access.wheelhouse import WheelhouseError, ensure_wheelhouse
from watchdog_daemon.config import slurmrelease

q = shlex.quote


def _fail(what: str, report: dict) -> OperationError:
    message = report.get("message") or report.get("error") or "no details"
    hint = report.get("hint")
    text = f"{what}: {message}"
    if hint:
        text += f" — {hint}"
    return OperationError(text)


def stop_if_cluster_failed(settings: Settings) -> None:
    """A cluster is set up as a whole: once one of its hosts failed, its other hosts stop too.

    Otherwise, e.g., the agent host would go on to restart the agent while the slurmdbd host
    never got the key. Other clusters are not affected.
    """
    if not state.is_executing:
        return
    failed = sorted(
        h.name for h in state.failed_hosts
        if callkeywords.cluster_of(state, h) == settings.cluster and h.name != host.name
    )
    if failed:
        raise ClusterStopped(
            f"cluster {settings.cluster}: not continuing because {', '.join(failed)} failed "
            "(see the error above); fix it and run the deploy again"
        )


def _verified(path: str, digest: str) -> str:
    """Shell test that an uploaded file, now root's, holds what was sent. Under sudo pyinfra
    uploads through a file of the SSH user in /tmp with a predictable name (pyinfra#1085):
    whatever happened to it there, root installs nothing but what the workstation sent."""
    said = q(f"{path}: the uploaded file does not match what was sent (sha256 {digest[:12]}…): "
             "run the deploy again")
    return (f'[ "$(sha256sum < {q(path)} | cut -c1-64)" = {digest} ] || '
            f'{{ echo {said} >&2; rm -f {q(path)}; exit 1; }}')


@functools.lru_cache(maxsize=8)
def file_sha256(path) -> str:
    """Of a bundle, once per run: its name holds its digest, and every host installs the same."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@operation()
@host_local
def install_tool(settings: Settings, agent_host: bool = True):
    """Install the host-side tool from the workstation's wheels into a venv (no network needed).

    Byte code: every command the deploy runs as root writes the .pyc of what it imports (each
    by an atomic rename). Only the watchdog's host (`agent_host`: an agent host holding Slurm's
    key) runs code that cannot (the watchdog, sandboxed read-only), so only there is everything
    compiled ahead, in the background at idle priority: about 0.4 s of CPU that no step waits
    for. Without setsid, in the foreground.
    """
    hs = survey.survey(settings)
    try:
        interpreter = hostpython.choose(hs.python, hs.pythons, hs.os_ids)
    except hostpython.HostPythonError as exc:
        raise OperationError(str(exc)) from None
    try:
        house = ensure_wheelhouse(interpreter.version, hs.machine)
    except WheelhouseError as exc:
        raise OperationError(str(exc)) from None
    if hs.tool_digest == house.digest:
        host.noop(f"slurmrestd-access {house.digest} already installed")
        return
    survey.record(tool_digest=house.digest)
    prefix = settings.tool_prefix
    bundle = f"{prefix}/bundle-{house.digest}.tar.gz"
    yield StringCommand("mkdir", "-p", "-m", "0755", q(prefix))
    yield FileUploadCommand(str(house.bundle), bundle)
    # A fresh venv per version, switched in by one rename: never a half-installed tool. The
    # bundle is the wheels already unpacked as site-packages (see wheelhouse.build_bundle).
    venv = f"{prefix}/venv-{house.digest}"
    python = f"{venv}/bin/python3"
    entry_point = (f"#!{python}\nimport sys\nfrom watchdog_daemon.cli import main\n"
                   "sys.exit(main())\n")
    compile_all = f"nice -n 19 {q(python)} -m compileall -q \"$site\""
    idle = "$(chrt -i 0 true 2>/dev/null && echo chrt -i 0)"  # SCHED_IDLE where permitted
    background = f"""if command -v setsid >/dev/null; then
  setsid -f {idle} {compile_all} </dev/null >/dev/null 2>&1
else
  {compile_all} >/dev/null
fi""" if agent_host else ""
    script = f"""set -e; umask 022
{_verified(bundle, file_sha256(house.bundle))}
rm -rf {q(venv)}
{q(interpreter.command)} -m venv --without-pip {q(venv)}
site=$({q(python)} -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
tar -xzf {q(bundle)} -C "$site" --no-same-owner
printf %s {q(entry_point)} > {q(venv)}/bin/slurmrestd-access
chmod 0755 {q(venv)}/bin/slurmrestd-access
ln -sfn {q(venv)} {q(prefix)}/current.new && mv -T {q(prefix)}/current.new {q(prefix)}/current
ln -sfn {q(prefix)}/current/bin/slurmrestd-access {q(settings.tool_link)}
for old in {q(prefix)}/venv-* {q(prefix)}/wheels-* {q(prefix)}/bundle-*; do
  case "$old" in {q(venv)}) ;; *) rm -rf "$old";; esac
done
echo {house.digest} > {q(prefix)}/INSTALLED
{background}"""
    yield StringCommand("sh", "-c", q(script))


@operation()
@host_local
def preflight(settings: Settings, roles: frozenset[str], controllers: tuple[str, ...] = ()):
    """Stop before any change when this host is not in a state the deploy can start from.
    `controllers`: the cluster's slurmctld hosts, the primary first (high availability: its
    order is checked against slurm.conf's on the primary)."""
    hs = survey.survey(settings)
    # First, and alone: a Slurm that Slurm-web's agent cannot use ends the deploy here, on every
    # host of the cluster, before anything is written or restarted.
    release = slurmrelease.decide(hs.slurm_version or None, settings.allow_unsupported_slurm)
    if not release.ok:
        raise OperationError(f"{release.message} — {release.hint}")
    problems: list[str] = []
    if roles & {"slurmctld", "slurmdbd"}:
        if not hs.users.get(settings.jwt_key_owner):
            problems.append(f"user {settings.jwt_key_owner!r} (owner of Slurm's key) does not "
                            "exist: install Slurm's packages first")
        if not hs.groups.get(settings.jwt_key_group):
            problems.append(f"group {settings.jwt_key_group!r} does not exist")
    conf_source = slurm_conf_source(hs, settings.slurm_conf)
    if roles & {"slurmctld", "slurmrestd", "compute"}:
        problem = conf_source.problem(settings.slurm_conf, "slurmctld" in roles)
        if problem:
            problems.append(problem)
    if not hs.jwt_plugin:
        problems.append(
            "Slurm's auth/jwt plugin (auth_jwt.so) is not installed, and every Slurm daemon that "
            "reads AuthAltTypes=auth/jwt would fail to start: install slurm-wlm-jwt-plugin "
            "(Debian, Ubuntu) or a Slurm build with JWT support (libjwt)"
        )
    if "slurmctld" in roles and not hs.unit(settings.slurmctld_unit).exists:
        problems.append(f"{settings.slurmctld_unit} is not installed")
    if "slurmdbd" in roles:
        if not hs.file(settings.slurmdbd_conf).exists:
            problems.append(f"{settings.slurmdbd_conf} is missing")
        if not hs.unit(settings.slurmdbd_unit).exists:
            problems.append(f"{settings.slurmdbd_unit} is not installed")
    if "slurmrestd" in roles:
        if not hs.users.get(settings.agent_user):
            problems.append(
                f"user {settings.agent_user!r} does not exist: install Slurm-web's agent package "
                f"(it creates the user), or set agent_user in the inventory"
            )
        if not hs.groups.get(settings.agent_group):
            problems.append(f"group {settings.agent_group!r} does not exist")
    # The host tool's look at this host (every host gets it first): its preflight of the
    # slurmrestd host, and whether each file the deploy merges into can be merged, so that a
    # broken file stops the deploy before anything changed.
    plan = survey.tool_plan(settings)
    if plan is not None:
        # A configless host's slurm.conf is not merged (a tool from before configless says
        # the file is missing: the survey already said why).
        skip = (settings.slurm_conf,) if conf_source.kind != "local" else ()
        problems += plan_problems(plan, "slurmrestd" in roles, skip_files=skip)
    if problems:
        raise OperationError("not ready for the deploy:\n  - " + "\n  - ".join(problems))
    if controllers and host.name == controllers[0]:
        part = survey.conf_plan(settings, settings.slurm_conf) or {}
        warning = primary_mismatch(list(controllers), part.get("slurmctld_hosts") or [])
        if warning:
            host.noop(warning)
    where = (f"; configless: Slurm reads {conf_source.reads}, kept by "
             f"{' and '.join(conf_source.fetchers)}" if conf_source.configless else "")
    host.noop(f"preflight passed: {release.message}{where}")
    return
    yield  # pragma: no cover - makes this a generator, as pyinfra operations are


@operation()
@host_local
def ensure_cluster_key(settings: Settings):
    """Create Slurm's signing key if absent (32 CSPRNG bytes, on the host); never replace one.

    Content only: the daemons read nothing else, so only this step's change restarts them.
    A wrong owner or mode of an existing key is `key_owner_mode`'s.
    """
    stop_if_cluster_failed(settings)
    hs = survey.survey(settings)
    key = hs.file(settings.jwt_key_path)
    if key.exists and key.kind == "regular file":
        host.noop(f"{settings.jwt_key_path} present")
        return
    if key.exists:
        raise OperationError(f"{settings.jwt_key_path} is a {key.kind}, not a regular file; "
                             "remove it or set jwt_key_path")
    survey.record(files=survey.written(settings.jwt_key_path, settings.jwt_key_owner,
                                       settings.jwt_key_group, settings.jwt_key_mode, None))
    yield StringCommand(
        settings.tool, "key", "ensure", "--path", q(settings.jwt_key_path),
        "--owner", settings.jwt_key_owner, "--group", settings.jwt_key_group,
        "--mode", f"{settings.jwt_key_mode:04o}",
    )


@operation()
@host_local
def key_owner_mode(settings: Settings, path: str, owner: str, group: str, mode: int):
    """Repair the owner and mode of a key whose content is right (`key ensure` never replaces
    content). Apart from the content steps: Slurm reads the content only, so this restarts
    nothing."""
    stop_if_cluster_failed(settings)
    current = survey.survey(settings).file(path)
    if not current.exists or current.matches(None, owner, group, mode):
        host.noop(f"{path} has owner {owner}:{group} and mode {mode:04o}")
        return
    survey.record(files=survey.written(path, owner, group, mode, current.sha256))
    yield StringCommand(settings.tool, "key", "ensure", "--path", q(path), "--owner", owner,
                        "--group", group, "--mode", f"{mode:04o}")


@operation()
@host_local
def push_key(settings: Settings, source: KeySource, dest: str, owner: str, group: str, mode: int,
             create_parent: bool = False, content_only: bool = False):
    """Make `dest` on this host a copy of the cluster key, compared by SHA-256 only.

    `content_only`: a copy with the right content but another owner or mode is left to
    `key_owner_mode` (for Slurm's key, whose daemons are restarted on a content change only).
    """
    stop_if_cluster_failed(settings)
    hs = survey.survey(settings)
    current = hs.file(dest)
    if source.kind == "command" and not state.is_executing:
        # A dry run (and the change detection before a run) runs nothing of the site's: the
        # command, e.g. a secrets manager's CLI, is run at execution only.
        host.noop(f"{dest}: compared with the key from {source.describe()} at execution "
                  "(planning does not run the command)")
        return
    # By hash only: a host source is asked for its key's SHA-256 (a fact), a workstation
    # source is hashed in memory. None = the source has no key yet (planning a first deploy).
    wanted = _remote_sha256(source) if source.kind == "host" else source_sha256(state, source)
    if wanted is not None and (
        current.exists and current.kind == "regular file" and current.sha256 == wanted
        if content_only else current.matches(wanted, owner, group, mode)
    ):
        host.noop(f"{dest} matches the cluster key")
        return
    survey.record(files=survey.written(dest, owner, group, mode, wanted))
    yield FunctionCommand(
        install_key_step, (source, settings.tool, dest, owner, group, mode, create_parent),
        # A host's key must still be the one surveyed: the source refuses to send another.
        {"expected_sha256": wanted if source.kind == "host" else None},
    )


def _remote_sha256(source: KeySource) -> str | None:
    # The source host's own survey, when this run already made it, has the key's hash: no
    # second look at that host (two commands on the controller of a split cluster per re-run).
    known = survey.known_file(source.where, source.path)
    if known is not None:
        return known.sha256
    src = state.inventory.get_host(source.where)
    data = src.get_fact(HostState, files=(source.path,), units=(), users=(), groups=(),
                        tool_prefix="/nonexistent", keys=(source.path,), tool=source.tool)
    return data.file(source.path).sha256


@operation()
@host_local
def sync_local_copy(settings: Settings):
    """Single-host case: the agent's copy is made from the key on the same host."""
    stop_if_cluster_failed(settings)
    hs = survey.survey(settings)
    key, copy = hs.file(settings.jwt_key_path), hs.file(settings.agent_key_path)
    if key.sha256 and copy.matches(key.sha256, settings.agent_user, settings.agent_group,
                                   settings.agent_key_mode):
        host.noop(f"{settings.agent_key_path} matches {settings.jwt_key_path}")
        return
    survey.record(files=survey.written(settings.agent_key_path, settings.agent_user,
                                       settings.agent_group, settings.agent_key_mode,
                                       key.sha256))
    yield StringCommand(
        settings.tool, "key", "sync", "--source", q(settings.jwt_key_path),
        "--dest", q(settings.agent_key_path), "--owner", settings.agent_user,
        "--group", settings.agent_group, "--mode", f"{settings.agent_key_mode:04o}",
    )


@operation()
@host_local
def merge_authalt(settings: Settings, path: str):
    """Merge AuthAltTypes/AuthAltParameters into a Slurm config file, keeping everything else."""
    stop_if_cluster_failed(settings)
    if path == settings.slurm_conf:
        source = slurm_conf_source(survey.survey(settings), path)
        if source.configless:
            host.noop(f"configless: this host's Slurm reads {source.reads}, the controller's "
                      f"slurm.conf; no {path} is created here")
            return
    report = survey.conf_plan(settings, path)
    if report is None:  # only while planning a first deploy: the tool is not there yet
        yield StringCommand(settings.tool, "conf", "apply", "--file", q(path),
                            "--jwt-key", q(settings.jwt_key_path))
        return
    if report["exit_code"] != 0:
        raise _fail(f"cannot merge the JWT settings into {path}", report)
    if not report.get("changed"):
        host.noop(f"{path} already has the JWT settings")
        return
    for line in report.get("before", []):
        host.noop(f"{path}: - {line}")
    for line in report.get("after", []):
        host.noop(f"{path}: + {line}")
    survey.record(files=survey.content_changed(survey.survey(settings), path))
    yield StringCommand(settings.tool, "conf", "apply", "--file", q(path),
                        "--jwt-key", q(settings.jwt_key_path))


@operation()
@host_local
def refresh_configless_copies(settings: Settings, cluster_hosts: list[str]):
    """On the controller of a configless cluster: `scontrol reconfigure` when a configless
    host's copy of slurm.conf is not the controller's file (its AuthAlt lines just merged, or
    an earlier run stopped before this step). sackd and slurmd rewrite their copies on it
    (measured: within 0.3 s); slurmctld re-executes itself, so its answer is waited for.

    slurmrestd is not restarted for it: it does not use the AuthAlt lines (measured, see
    tests/testbed/MEASUREMENTS.md, "Configless Slurm").
    """
    stop_if_cluster_failed(settings)
    others = {}
    for name in cluster_hosts:
        if name == host.name:
            continue
        other = survey.other_host(name)
        if other is not None:
            # The same rule as that host's own operations (a copy, no slurm.conf of its own).
            source = slurm_conf_source(other, settings.slurm_conf)
            others[name] = (source.configless, other.file(source.reads).sha256)
    if not any(configless for configless, _ in others.values()):
        host.noop("no configless host in this cluster: nothing to bring to")
        return
    report = survey.conf_plan(settings, settings.slurm_conf)
    if report is not None and report.get("exit_code") == 0 and \
            report.get("configless_server") is False:
        host.noop(f"warning: configless hosts read a copy of slurm.conf, but {settings.slurm_conf} "
                  "here has no SlurmctldParameters=enable_configless: they cannot have it from "
                  "this controller")
        return
    # No plan while planning a first deploy (no tool there yet): the merge is then to come.
    merging = report is None or bool(report.get("changed"))
    mine = None if merging else survey.survey(settings).file(settings.slurm_conf).sha256
    stale = stale_copies(mine, others)
    unhashed = unhashed_copies(others)
    if unhashed and mine is not None:
        host.noop(f"warning: the copies of slurm.conf on {', '.join(unhashed)} could not be "
                  "compared (not a plain file of one name, or larger than 1 MiB): no "
                  "reconfigure for them; look at /run/slurm/conf/slurm.conf there")
    if not stale:
        host.noop("the configless hosts' copies of slurm.conf are this controller's file")
        return
    host.noop(f"configless hosts to bring slurm.conf to: {', '.join(stale)}")
    yield StringCommand("sh", "-c", q(
        f"scontrol reconfigure && for i in $(seq 1 {settings.restart_wait}); do "
        f"{controller_up(settings)} && exit 0; sleep 1; done; "
        f"echo 'slurmctld did not answer scontrol ping with UP after scontrol reconfigure: "
        f"see journalctl -u {settings.slurmctld_unit}' >&2; exit 1"))


@operation()
@host_local
def merge_agent_ini(settings: Settings):
    """Set agent.ini's [slurmrestd] settings for this mode, keeping the admin's others."""
    stop_if_cluster_failed(settings)
    args = agent_ini_args(settings)
    plan = survey.tool_plan(settings)
    if plan is None:  # only while planning a first deploy: the tool is not there yet
        yield StringCommand(settings.tool, "agent-ini", "apply", *(q(a) for a in args))
        return
    report = plan.get("agent_ini") or {
        "exit_code": plan.get("exit_code", 1),
        "message": plan.get("message") or plan.get("error") or "no agent-ini plan"}
    if report["exit_code"] != 0:
        raise _fail(f"cannot update {settings.agent_ini}", report)
    if not report.get("changed"):
        host.noop(f"{settings.agent_ini} already set for unix socket + JWT auto mode")
        return
    survey.record(files=survey.content_changed(survey.survey(settings), settings.agent_ini))
    yield StringCommand(settings.tool, "agent-ini", "apply", *(q(a) for a in args))


@operation()
@host_local
def text_file(settings: Settings, path: str, text: str, mode: int = 0o644):
    """A root-owned configuration file with exactly `text`, compared by hash, replaced by rename.

    For files that hold no secret (drop-ins, units, the watchdog's config): their text may
    show in pyinfra's output.
    """
    stop_if_cluster_failed(settings)
    yield from _root_text_file(settings, path, text, mode)


@operation()
@host_local
def slurmrestd_dropin_file(settings: Settings):
    """The documentation's slurmrestd drop-in; on a configless host (no slurm.conf of its own),
    with the vendor unit's condition on /etc/slurm/slurm.conf cleared (config/dropin.py)."""
    stop_if_cluster_failed(settings)
    configless = slurm_conf_source(survey.survey(settings), settings.slurm_conf).configless
    yield from _root_text_file(settings, settings.slurmrestd_dropin,
                               slurmrestd_dropin(settings, configless=configless), 0o644)


def _root_text_file(settings: Settings, path: str, text: str, mode: int):
    digest = hashlib.sha256(text.encode()).hexdigest()
    if survey.survey(settings).file(path).matches(digest, "root", "root", mode):
        host.noop(f"{path} up to date")
        return
    survey.record(files=survey.written(path, "root", "root", mode, digest))
    directory = path.rsplit("/", 1)[0]
    temp = f"{path}.slurmrestd-access-new"
    yield StringCommand("mkdir", "-p", "-m", "0755", q(directory))
    yield FileUploadCommand(BytesIO(text.encode()), temp)
    install = (f"chown root:root {q(temp)} && chmod {mode:04o} {q(temp)} "
               f"&& mv -f {q(temp)} {q(path)}")
    yield StringCommand("sh", "-c", q(f"{_verified(temp, digest)} && {install}"))


@operation()
@host_local
def remove_watchdog(settings: Settings):
    """On an agent host that does not hold Slurm's key: take away a watchdog an earlier deploy
    installed there (it has no key to follow). Decided from the survey: no trace, no command."""
    stop_if_cluster_failed(settings)
    hs = survey.survey(settings)
    leftover = watchdog_leftover(hs)
    if leftover is None:
        host.noop(f"no {WATCH_UNIT} (not needed: this host does not hold Slurm's key)")
        return
    host.noop(f"{WATCH_UNIT} is not needed on a host without Slurm's key: "
              f"{leftover.describe()}")
    survey.record(files={p: RemoteFile(p, exists=False) for p in leftover.files},
                  units={WATCH_UNIT: UnitState(WATCH_UNIT)})
    yield StringCommand("sh", "-c", q(removal_script(leftover)))


@operation()
@host_local
def connect_check(settings: Settings, when: str):
    """Prove that slurmctld (and slurmdbd) accept a token signed with the agent's key copy."""
    stop_if_cluster_failed(settings)
    if not state.is_executing:
        # While planning, earlier steps have not run yet: the check proves the result, so it
        # runs at execution time only.
        host.noop(f"connect check {when} runs during execution")
        return
    # The survey's check proves the host as the survey found it: when no operation of this run
    # has changed a host of the cluster since, that is the host as it is now, and a second
    # check would prove the same thing again (a no-change re-run's last round trip). A failed
    # one is checked again, live.
    report = survey.check_made_with_survey() if survey.cluster_unchanged_so_far(
        settings.cluster) else None
    made = " (made with the survey; nothing changed since)" if report else ""
    if report is None or report["exit_code"] != 0:
        # As the agent's user (--as-user: started as root, the check loads its libraries,
        # whose byte code root may write, then switches for good before it reads or connects
        # anything).
        report = survey.tool_report(settings, *check_args(settings), "--as-user",
                                    settings.agent_user)
        made = ""
    if report["exit_code"] != 0:
        reason = report.get("reason", "unknown")
        raise _fail(f"connect check {when} failed ({reason}, exit {report['exit_code']})", report)
    # The line of the agent's own connect-check, in its release's words (a tool from before
    # releases gives no `line`: 5.x's words, as it printed them).
    line = report.get("line") or (f"✅ connection successful (slurm: {report.get('slurm')}, "
                                  f"cluster: {report.get('cluster')})")
    release = f" [{report['slurmweb']}]" if report.get("slurmweb") else ""
    host.noop(f"connect check {when}{made}: {line}{release}")
    return
    yield  # pragma: no cover - makes this a generator, as pyinfra operations are
