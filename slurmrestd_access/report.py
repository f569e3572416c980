"""Fleet report: a read-only audit of every cluster of an inventory.

    slurmrestd-access-report INVENTORY [--json] [--limit CLUSTER_OR_HOST ...]
                             [--sudo [--sudo-user USER] [--same-sudo-password]]

(or `python -m slurmrestd_access.report`).
Connects to every host in parallel with pyinfra's own API (the inventory is loaded exactly as
`pyinfra INVENTORY ...` loads it) and gathers only read-only facts: the deploy's HostState
survey (stat and sha256sum of files, `systemctl show`, getent), `slurmrestd-access conf plan`
(never writes) and `slurmrestd-access check` as the agent user. Nothing on any host is changed.
Over a non-root SSH user, `--sudo` (or `_sudo` in the inventory's data) as with pyinfra.

Exit: 0 everything right, 1 something wrong (listed), 2 usage or inventory error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from fnmatch import fnmatch
from typing import Any

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slurmrestd-access-report",
                                description="Read-only audit of every cluster of an inventory.")
    p.add_argument("inventory", help="pyinfra inventory file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--limit", action="append", default=[], metavar="NAME",
                   help="a cluster, group or host (pattern); may be repeated")
    # The same switches as pyinfra's, so that one inventory and habit serve both.
    p.add_argument("--sudo", action="store_true", help="run the read-only commands with sudo")
    p.add_argument("--sudo-user", metavar="USER", help="sudo to this user (default: root)")
    p.add_argument("--same-sudo-password", action="store_true",
                   help="every host has the same sudo password: ask for it once")
    from slurmrestd_access import __version__
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def _config(args: argparse.Namespace) -> Any:
    from getpass import getpass

    from pyinfra.api import Config

    config = Config()
    config.SUDO = bool(args.sudo)
    if args.sudo_user:
        config.SUDO_USER = args.sudo_user
    if args.same_sudo_password:
        config.SUDO_PASSWORD = getpass("sudo password: ")
    return config


def _limited(inventory: Any, patterns: list[str]) -> list[Any] | None:
    """Hosts matching --limit like pyinfra's own --limit: a group name, else a host pattern."""
    if not patterns:
        return None
    hosts: list[Any] = []
    for pattern in patterns:
        group = inventory.get_group(pattern, default=None)
        hosts.extend(group if group else [h for h in inventory if fnmatch(h.name, pattern)])
    return list(dict.fromkeys(hosts))


def gather(inventory_path: str, limit: list[str], config: Any = None) -> tuple[dict, dict]:
    # pyinfra_cli patches gevent into this process, as the pyinfra command does.
    import gevent
    from pyinfra.api import Config, State
    from pyinfra.api.connect import connect_all
    from pyinfra.api.exceptions import PyinfraError
    from pyinfra.api.facts import get_fact
    from pyinfra.context import ctx_config, ctx_inventory, ctx_state
    from pyinfra_cli.inventory import make_inventory

    from slurmrestd_access import privilege
    from slurmrestd_access.cluster import HostEntry, plan_clusters, roles_of
    from slurmrestd_access.confsource import slurm_conf_source
    from slurmrestd_access.facts import ToolReport
    from slurmrestd_access.fleet.report import HostFacts
    from slurmrestd_access.hoststate import parse_survey
    from slurmrestd_access.settings import settings_from_host_data
    from slurmrestd_access.survey import survey_script_for
    from slurmrestd_access.toolplan import check_args

    # The same set-up as pyinfra's CLI: an inventory file is executed in the state's context.
    state, config = State(check_for_changes=False), config or Config()
    ctx_state.set(state)
    ctx_config.set(config)
    inventory = make_inventory(inventory_path, cwd=os.getcwd())
    ctx_inventory.set(inventory)
    plans = plan_clusters(HostEntry(h.name, str(h.data.get("cluster")), roles_of(h.groups))
                          for h in inventory if roles_of(h.groups))
    chosen = _limited(inventory, limit)
    if chosen is not None and not chosen:
        raise ValueError(f"--limit {' '.join(limit)} matches no host of the inventory")
    state.init(inventory, config, initial_limit=chosen)
    # "No hosts remaining" when none connects: every host is then reported unreachable.
    with contextlib.suppress(PyinfraError):
        connect_all(state)

    def one(host: Any) -> HostFacts:
        s = settings_from_host_data(host.name, dict(host.data.dict()))
        roles = roles_of(host.groups)
        facts = HostFacts(host.name, s.cluster, roles, s)
        if not host.connected:
            facts.error = "could not connect over SSH"
            return facts
        lines, blocked = privilege.run_as_root(state, host, survey_script_for(s))
        if blocked:
            facts.no_root = blocked
            return facts
        try:
            facts.state = parse_survey(lines)
            blocked = privilege.not_root(host.name, facts.state.uid)
            if blocked:
                facts.no_root = blocked
                return facts
            if not facts.state.tool_digest:
                return facts
            paths = []
            if roles & {"slurmctld", "slurmrestd", "compute"}:
                paths.append(s.slurm_conf)
            if "slurmdbd" in roles:
                paths.append(s.slurmdbd_conf)
            for path in paths:  # `conf plan` never writes: changed=false means present
                source = slurm_conf_source(facts.state, path)
                if source.configless and path == s.slurm_conf:
                    # The copy of the controller's file, in slurm's directory: not read here as
                    # root; its hash (the survey's) is compared with the controller's file's.
                    facts.conf[path] = {"configless": True, "reads": source.reads,
                                        "exit_code": 0}
                    continue
                facts.conf[path] = get_fact(state, host, ToolReport, kwargs=dict(
                    tool=s.tool, args=("conf", "plan", "--file", path, "--jwt-key",
                                       s.jwt_key_path)), apply_failed_hosts=False)
            if "slurmrestd" in roles:
                facts.check = get_fact(state, host, ToolReport, kwargs=dict(
                    tool=s.tool, args=check_args(s), as_user=s.agent_user),
                    apply_failed_hosts=False)
        except Exception as exc:  # one host's trouble is reported, the others still are
            facts.error = f"{type(exc).__name__}: {exc}"
        return facts

    hosts = [h for h in inventory if roles_of(h.groups) and state.is_host_in_limit(h)]
    greenlets = {h.name: gevent.spawn(one, h) for h in hosts}
    gevent.joinall(list(greenlets.values()))
    facts = {name: g.get() for name, g in greenlets.items()}
    for host in hosts:
        if host.connected:
            host.disconnect()
    return plans, facts


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # pyinfra's warnings (unknown host keys...) would go to stderr through logging's last-resort
    # handler; an unreachable host is reported in the table anyway.
    logging.getLogger("pyinfra").setLevel(logging.ERROR)
    if not os.path.exists(args.inventory):
        print(f"report: no inventory file {args.inventory}", file=sys.stderr)
        return EXIT_USAGE
    from slurmrestd_access.cluster import InventoryError
    from slurmrestd_access.fleet.report import evaluate, exit_code, render_table, to_dict
    from slurmrestd_access.settings import SettingsError

    try:
        plans, facts = gather(args.inventory, args.limit, _config(args))
    except (InventoryError, SettingsError, ValueError) as exc:
        print(f"report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    reports = evaluate(plans, facts)
    if args.json:
        sys.stdout.write(json.dumps(to_dict(reports), indent=2) + "\n")
    else:
        sys.stdout.write(render_table(reports))
    return EXIT_PROBLEMS if exit_code(reports) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
