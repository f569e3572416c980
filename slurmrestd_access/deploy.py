"""The packaged deploy: slurmrestd on a unix socket with JWT, auto token mode, for Slurm-web.

Each host adds the operations of its roles, in the one order that is correct for the whole
cluster: key, Slurm configs, slurmdbd restart, slurmctld restart, slurmrestd, agent copy,
agent.ini, check, agent restart, check again. pyinfra runs each operation on every host
before the next, so a key created on the controller exists before it is copied elsewhere.
"""

from __future__ import annotations

import shlex

from pyinfra import host, inventory, state
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations.util import any_changed

from slurmrestd_access import callkeywords, survey, systemd
from slurmrestd_access import operations as ops
from slurmrestd_access.cluster import ClusterPlan, HostEntry, plan_clusters, roles_of
from slurmrestd_access.fleet import summary_hook
from slurmrestd_access.keytransfer import KeySource
from slurmrestd_access.settings import (
    Settings,
    SettingsError,
    setting_keywords,
    settings_from_host_data,
)
from slurmrestd_access.toolplan import conf_files, controller_up
from slurmrestd_access.watchconf import (
    WATCH_CONFIG_PATH,
    WATCH_UNIT,
    WATCH_UNIT_PATH,
    render_watch_toml,
    render_watch_unit,
)

q = shlex.quote


def settings_for(name: str, data: dict, keywords: dict | None = None) -> Settings:
    """A host's settings: the deploy call's keywords over its host data over the defaults. A bad
    value is a pyinfra error that names the host and the setting (no Python traceback), raised
    before any command runs."""
    try:
        return settings_from_host_data(name, data, keywords)
    except SettingsError as exc:
        where = "deploy keywords" if str(exc).startswith("keyword ") else \
            "settings (deploy keywords over inventory host data)" if keywords else \
            "inventory host data"
        raise DeployError(f"{where}: {exc}") from None


def cluster_plans() -> dict[str, ClusterPlan]:
    """Every cluster of the whole inventory (not only the --limit'ed hosts)."""
    entries = [
        HostEntry(h.name, str(callkeywords.cluster_of(state, h)), roles_of(h.groups))
        for h in inventory
        if roles_of(h.groups)
    ]
    return plan_clusters(entries)


def changed_unless_just_started(started, *changes):
    """`_if` for a restart: something it reads changed, and this run did not just start it
    (a unit started a moment ago already runs with the new files)."""
    return lambda: any_changed(*changes)() and not started.did_change()


def key_source(settings: Settings, plan: ClusterPlan) -> KeySource:
    if settings.key_source_file:
        return KeySource("file", settings.key_source_file, encoding=settings.key_source_encoding)
    if settings.key_source_command:
        return KeySource("command", settings.key_source_command,
                         encoding=settings.key_source_encoding)
    return KeySource("host", plan.key_origin, path=settings.jwt_key_path, tool=settings.tool,
                     owner=settings.jwt_key_owner)


@deploy("slurmrestd access")
@setting_keywords
def slurmrestd_access(**keywords) -> None:
    """Set up slurmrestd for the Slurm-web agent on every host of the inventory's clusters.

    Every setting of docs/deploy.md's table is a keyword (see the signature); a keyword wins
    over the same host data, which wins over the default. pyinfra's global arguments (`_sudo`,
    `_if`...) apply to every operation.
    """
    callkeywords.remember(state, keywords)
    summary_hook.install(state)  # per-cluster summary at the end of the run
    survey.bring_plan_along()  # the operations below read the tool's plan
    roles = roles_of(host.groups)
    if not roles:
        host.noop("in no role group (slurmctld, slurmdbd, slurmrestd, compute): nothing to do")
        return
    settings = settings_for(host.name, dict(host.data.dict()), keywords)
    plan = cluster_plans()[settings.cluster]
    source = key_source(settings, plan)
    own_key = host.name == plan.key_origin and source.kind == "host"

    # Every remote command has a deadline: a host that dies mid-run fails, it does not hang.
    quick = {"_timeout": 120}
    slow = {"_timeout": settings.restart_wait + 60}
    check = {"_timeout": settings.check_timeout * 4 + 30}

    # The rotation watchdog runs only on agent hosts that hold Slurm's key: it follows the key
    # file on its own host (see ClusterPlan.watchdog_hosts).
    watchdog = host.name in plan.watchdog_hosts()
    tool = ops.install_tool(name="Install the slurmrestd-access host tool", settings=settings,
                            agent_host=watchdog, _timeout=600)
    ops.preflight(name="Preflight", settings=settings, roles=roles,
                  controllers=tuple(plan.controllers) if "slurmctld" in roles else (), **quick)

    # 1-2. The key: created on the controller, or pushed from the workstation's key source;
    # copied, by hash, to every other host whose daemons load it.
    # key_changes: the key's content, which slurmdbd and slurmctld read (at start): only that
    # restarts them. A repaired owner or mode restarts nothing.
    key_changes = []
    if host.name in plan.hosts_needing_key():
        if own_key:
            key_changes.append(ops.ensure_cluster_key(
                name="Slurm JWT signing key", settings=settings, **quick))
        else:
            key_changes.append(ops.push_key(
                name=f"Slurm JWT signing key from {source.describe()}", settings=settings,
                source=source, dest=settings.jwt_key_path, owner=settings.jwt_key_owner,
                group=settings.jwt_key_group, mode=settings.jwt_key_mode, create_parent=True,
                content_only=True, **quick))
        ops.key_owner_mode(
            name=f"Owner and mode of {settings.jwt_key_path}", settings=settings,
            path=settings.jwt_key_path, owner=settings.jwt_key_owner,
            group=settings.jwt_key_group, mode=settings.jwt_key_mode, **quick)

    # 3. AuthAlt* in slurm.conf wherever Slurm runs from it, and in slurmdbd.conf.
    # (conf_files: the same files the host tool was asked to plan for)
    conf_changes = []
    if settings.slurm_conf in conf_files(settings, roles):
        conf_changes.append(ops.merge_authalt(
            name=f"JWT settings in {settings.slurm_conf}", settings=settings,
            path=settings.slurm_conf, **quick))
    dbd_changes = []
    if settings.slurmdbd_conf in conf_files(settings, roles):
        dbd_changes.append(ops.merge_authalt(
            name=f"JWT settings in {settings.slurmdbd_conf}", settings=settings,
            path=settings.slurmdbd_conf, **quick))

    # 4. Restarts only when something they read changed: slurmdbd first, then slurmctld.
    if "slurmdbd" in roles:
        unit = settings.slurmdbd_unit
        systemd.restart_unit(
            name=f"Restart {unit}", settings=settings, unit=unit,
            wait_for=f"systemctl is-active -q {q(unit)} && ss -Hltn "
                     f"'sport = :{settings.slurmdbd_port}' | grep -q .",
            wait_seconds=settings.restart_wait,
            failure=f"{unit} did not come back: see journalctl -u {unit}",
            _if=any_changed(*key_changes, *dbd_changes), **slow)
    # High availability: the backup controllers one at a time (_serial), then the primary, in
    # two operations so that pyinfra finishes the first on every host before the second; each
    # waits until `scontrol ping` says every controller is UP (controller_up).
    if "slurmctld" in roles:
        unit = settings.slurmctld_unit
        restart = dict(
            settings=settings, unit=unit, wait_for=controller_up(settings),
            wait_seconds=settings.restart_wait,
            failure=f"{unit} did not answer 'scontrol ping' with every controller UP: see "
                    f"journalctl -u {unit}",
            _if=any_changed(*key_changes, *conf_changes), **slow)
        if host.name != plan.primary_controller:
            systemd.restart_unit(name=f"Restart {unit} (backup controller, one at a time)",
                                 _serial=True, **restart)
        else:
            ha = " (primary controller, after the backups)" if len(plan.controllers) > 1 else ""
            systemd.restart_unit(name=f"Restart {unit}{ha}", **restart)
        # Configless hosts read a copy of this file that only a reconfigure brings them.
        if host.name == plan.primary_controller:
            ops.refresh_configless_copies(
                name="Configless hosts' copies of slurm.conf", settings=settings,
                cluster_hosts=plan.all_hosts(), **slow)

    if "slurmrestd" not in roles:
        return

    # 5. slurmrestd with the documentation's drop-in; the watchdog's files are written (or, on a
    # host without the key, removed) with it, so that one daemon-reload covers every unit file
    # this run changes.
    unit = settings.slurmrestd_unit
    socket_up = f"test -S {q(settings.slurmrestd_socket)}"
    no_socket = f"{unit} did not create {settings.slurmrestd_socket}: see journalctl -u {unit}"
    dropin = ops.slurmrestd_dropin_file(name="slurmrestd drop-in", settings=settings, **quick)
    if watchdog:
        watch_files = [
            ops.text_file(name=f"Watchdog config {WATCH_CONFIG_PATH}", settings=settings,
                          path=WATCH_CONFIG_PATH, text=render_watch_toml(settings), **quick),
            ops.text_file(name=f"Watchdog unit {WATCH_UNIT}", settings=settings,
                          path=WATCH_UNIT_PATH, text=render_watch_unit(settings), **quick),
        ]
        unit_files = [dropin, watch_files[1]]
        units = (unit, WATCH_UNIT)
    else:
        # No key here to follow: the copy is pushed by the deploy and by rotate_key.py. A
        # watchdog an earlier deploy installed is stopped, disabled and removed.
        unit_files = [dropin, ops.remove_watchdog(
            name=f"No {WATCH_UNIT} on a host without Slurm's key", settings=settings, **quick)]
        units = (unit,)
    # Enabled before the reload: links written after it would leave every unit of the host
    # with NeedDaemonReload=yes (see enable_units).
    enabled = systemd.enable_units(name=f"Enable {' and '.join(units)}", settings=settings,
                                   units=units, **quick)
    systemd.daemon_reload(name="systemctl daemon-reload", settings=settings,
                          _if=any_changed(*unit_files, enabled), **quick)
    started = systemd.start_unit(name=f"Start {unit}", settings=settings, unit=unit,
                                 wait_for=socket_up, failure=no_socket, **slow)
    systemd.restart_unit(
        name=f"Restart {unit}", settings=settings, unit=unit,
        wait_for=socket_up, wait_seconds=settings.restart_wait, failure=no_socket,
        _if=changed_unless_just_started(started, dropin, *conf_changes), **slow)

    # 6-7. The agent's copy of the key and its configuration.
    if host.name in plan.hosts_needing_key():
        copy = ops.sync_local_copy(name=f"Agent key copy {settings.agent_key_path}",
                                   settings=settings, **quick)
    else:
        copy = ops.push_key(
            name=f"Agent key copy {settings.agent_key_path}", settings=settings,
            source=source, dest=settings.agent_key_path, owner=settings.agent_user,
            group=settings.agent_group, mode=settings.agent_key_mode, **quick)
    ini = ops.merge_agent_ini(name=f"slurmrestd settings in {settings.agent_ini}",
                              settings=settings, **quick)

    # 8-10. Prove it works before touching the agent, restart the agent, prove it again.
    ops.connect_check(name="Connect check", settings=settings, when="before the agent restart",
                      **check)
    systemd.restart_agent(name="Restart the Slurm-web agent", settings=settings,
                          _if=any_changed(copy, ini), **slow)
    ops.connect_check(name="Connect check after the agent restart", settings=settings,
                      when="after the agent restart", _if=any_changed(copy, ini), **check)

    # 11. The rotation watchdog, always on where it runs, started once the agent runs with the
    # copy this run installed: its first proof (before it says it is ready) checks that the
    # agent unit was started after the copy. Its start (Python's start-up, a first look, that
    # proof) is waited for at the end, not here.
    watch_failed = f"{WATCH_UNIT} did not become active: see journalctl -u {WATCH_UNIT}"
    if watchdog:
        watch_started = systemd.start_unit(
            name=f"Start {WATCH_UNIT}", settings=settings, unit=WATCH_UNIT,
            wait_for=None, failure=watch_failed, no_block=True, **quick)
        watch_restarted = systemd.restart_unit(
            name=f"Restart {WATCH_UNIT}", settings=settings, unit=WATCH_UNIT, wait_for=None,
            wait_seconds=settings.restart_wait, failure=watch_failed, no_block=True,
            _if=changed_unless_just_started(watch_started, tool, *watch_files), **quick)

    if watchdog:
        systemd.wait_until_active(name=f"{WATCH_UNIT} is running", settings=settings,
                                  unit=WATCH_UNIT, failure=watch_failed,
                                  _if=any_changed(watch_started, watch_restarted), **slow)
