"""pyinfra operations of the deploy on systemd units: enable, start, restart, daemon-reload.

Thin like operations.py, and stopped the same way when another host of the cluster failed. A
start or restart waits until the unit really answers (a shell test on the host) and gives up at
once when the unit failed, naming its journal.
"""

from __future__ import annotations

import shlex
from dataclasses import replace

from pyinfra import host
from pyinfra.api import StringCommand, operation

from slurmrestd_access import survey
from slurmrestd_access.hostfail import host_local
from slurmrestd_access.operations import stop_if_cluster_failed
from slurmrestd_access.settings import Settings
from watchdog_daemon.system.agentunits import choose as choose_agent_units

q = shlex.quote


def _wait(condition: str, seconds: int, failure: str, give_up: str | None = None) -> StringCommand:
    """A remote loop that waits for `condition` (a shell test) and says clearly when it gives up
    (at the deadline, or as soon as `give_up` holds)."""
    # Polled every 0.1 s: each wait is on the critical path of the deploy, and the conditions
    # (systemctl is-active, ss, test -S, scontrol ping) are cheap.
    stop = f"{give_up} || " if give_up else ""
    script = (
        f"i=0; until {condition}; do i=$((i+1)); if {stop}[ $i -ge {seconds * 10} ]; then "
        f"echo {q(failure)} >&2; exit 1; fi; sleep 0.1; done"
    )
    return StringCommand("sh", "-c", q(script))


def _systemctl(action: str, unit: str, *flags: str) -> StringCommand:
    """`systemctl ACTION UNIT` whose job result is not the verdict: the wait after it is.

    A start can fail once for a reason outside the unit (systemd: "Failed to spawn executor",
    result 'resources') and be retried by the unit's own Restart=. The wait that follows
    gives up as soon as the unit is failed, so a unit that really cannot start still fails
    the step at once, with its journal named.
    """
    command = " ".join(["systemctl", action, *flags, q(unit)])
    note = f"{command} reported a failure; waiting for {unit} to come up (its Restart=)"
    return StringCommand("sh", "-c", q(f"{command} || echo {q(note)} >&2"))


def _unit_down(unit: str) -> str:
    return f"systemctl is-failed -q {q(unit)}"


@operation()
@host_local
def restart_unit(settings: Settings, unit: str, wait_for: str | None, wait_seconds: int,
                 failure: str, no_block: bool = False):
    """Restart a unit (only reached through `_if`), then wait until it really answers.

    With `no_block` and no `wait_for`, the restart is only queued: a later `wait_until_active`
    waits for it, and the operations in between run meanwhile.
    """
    stop_if_cluster_failed(settings)
    survey.record(units=survey.running(unit))
    yield _systemctl("restart", unit, *(["--no-block"] if no_block else []))
    if wait_for:
        yield _wait(wait_for, wait_seconds, failure, give_up=_unit_down(unit))


@operation()
@host_local
def enable_units(settings: Settings, units: tuple[str, ...]):
    """`systemctl enable --no-reload` for the units not enabled yet, BEFORE the daemon-reload.

    systemd counts links written by `enable --no-reload` as a pending reload of every unit
    (NeedDaemonReload=yes, and "changed on disk" on each later `systemctl restart`): the
    deploy's one daemon-reload must come after them. `--no-reload`: that reload is the
    deploy's, not a second one of `enable`'s own.
    """
    stop_if_cluster_failed(settings)
    hs = survey.survey(settings)
    todo = [u for u in units if hs.unit(u).unit_file != "enabled"]
    if not todo:
        host.noop(f"{', '.join(units)} enabled")
        return
    for unit in todo:
        survey.record(units={unit: replace(hs.unit(unit), unit_file="enabled")})
    yield StringCommand("systemctl", "enable", "--no-reload", *(q(u) for u in todo))


@operation()
@host_local
def start_unit(settings: Settings, unit: str, wait_for: str | None, failure: str,
               no_block: bool = False):
    """`systemctl start` when the unit is not running; wait until it answers.

    Enabling is `enable_units`' (before the daemon-reload). With `no_block` and no `wait_for`,
    see `restart_unit`.
    """
    stop_if_cluster_failed(settings)
    if survey.survey(settings).unit(unit).active == "active":
        host.noop(f"{unit} active")
        return
    survey.record(units=survey.running(unit))
    yield _systemctl("start", unit, *(["--no-block"] if no_block else []))
    if wait_for:
        yield _wait(wait_for, settings.restart_wait, failure, give_up=_unit_down(unit))


@operation()
@host_local
def wait_until_active(settings: Settings, unit: str, failure: str):
    """Only reached through `_if`: a start or restart queued earlier (`no_block`) completed.

    Gives up at once when the unit failed instead of waiting for the deadline.
    """
    stop_if_cluster_failed(settings)
    yield _wait(f"systemctl is-active -q {q(unit)}", settings.restart_wait, failure,
                give_up=_unit_down(unit))


@operation()
@host_local
def daemon_reload(settings: Settings):
    """Only reached through `_if`: systemd must re-read a changed unit file, drop-in or link.

    The deploy's only reload: every unit file it writes and every unit it enables comes first.
    """
    stop_if_cluster_failed(settings)
    yield StringCommand("systemctl", "daemon-reload")


def agent_units_in_use(settings: Settings) -> list[str]:
    """The one rule (watchdog_daemon.system.agentunits) applied to this host's survey."""
    hs = survey.survey(settings)
    return choose_agent_units(settings.agent_unit, lambda u: hs.unit(u).states)


@operation()
@host_local
def restart_agent(settings: Settings):
    """Restart the Slurm-web agent unit in use so that it loads the new key and settings."""
    stop_if_cluster_failed(settings)
    units = agent_units_in_use(settings)
    if not units:
        host.noop(f"{settings.agent_unit or 'no Slurm-web agent unit'} is neither enabled nor "
                  "running: nothing to restart (a stopped, disabled agent is not started)")
        return
    survey.record(units=survey.running(*units))
    for unit in units:
        # An agent that kept failing for want of its key may have hit its start limit.
        yield StringCommand("systemctl", "reset-failed", q(unit), "2>/dev/null", "||", "true")
        yield _systemctl("restart", unit)
        yield _wait(f"systemctl is-active -q {unit}", settings.restart_wait,
                    f"{unit} did not become active: see journalctl -u {unit}",
                    give_up=_unit_down(unit))
