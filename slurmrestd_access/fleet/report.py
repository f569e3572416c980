"""Judge what the fleet report gathered: one row per host, problems per host and cluster. Pure.

Everything is compared by SHA-256 (shown as the first 12 hex digits), never by content.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from slurmrestd_access.cluster import ClusterPlan
from slurmrestd_access.confsource import slurm_conf_source
from slurmrestd_access.hoststate import HostState, RemoteFile
from slurmrestd_access.settings import Settings
from slurmrestd_access.toolplan import slurmrestd_dropin
from slurmrestd_access.watchconf import WATCH_UNIT, watchdog_leftover
from watchdog_daemon.system.agentunits import choose as choose_agent_units

NO_WATCHDOG = "not needed (no key here)"
FP = 12  # hex digits of a fingerprint

COLUMNS = ("cluster", "host", "roles", "tool", "key", "copy", "authalt", "dropin", "slurmrestd",
           "agent", "slurmweb", "watchdog", "check")


@dataclass
class HostFacts:
    """What was read from one host (by slurmrestd_access/report.py); None = not gathered
    (unreachable)."""

    name: str
    cluster: str
    roles: frozenset[str]
    settings: Settings
    error: str | None = None  # could not connect / gather
    no_root: str | None = None  # connected, but its commands cannot run as root (sudo)
    state: HostState | None = None
    conf: dict[str, dict[str, Any]] = field(default_factory=dict)  # path -> `conf plan` report
    check: dict[str, Any] | None = None  # `check --json` as the agent user


@dataclass
class HostRow:
    cluster: str
    host: str
    roles: str
    cells: dict[str, str]
    problems: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "host": self.host, "roles": self.roles.split(","),
                **{k: v for k, v in self.cells.items()}, "problems": self.problems}


@dataclass
class ClusterReport:
    name: str
    rows: list[HostRow]
    problems: list[str]  # cluster-wide (keys differ between hosts...)

    @property
    def ok(self) -> bool:
        return not self.problems and not any(r.problems for r in self.rows)

    def all_problems(self) -> list[str]:
        return [*self.problems, *(f"{r.host}: {p}" for r in self.rows for p in r.problems)]

    def to_dict(self) -> dict[str, Any]:
        return {"cluster": self.name, "ok": self.ok, "problems": self.all_problems(),
                "hosts": [r.to_dict() for r in self.rows]}


def fingerprint(sha256: str | None) -> str:
    return sha256[:FP] if sha256 else "?"


def _mode(mode: int) -> str:
    return f"{mode:04o}"


def _judge_key_file(f: RemoteFile, owner: str, group: str, mode: int, what: str,
                    problems: list[str]) -> str:
    if not f.exists:
        problems.append(f"{what} {f.path} is missing")
        return "missing"
    cell = f"{fingerprint(f.sha256)} {f.owner}:{f.group} {_mode(f.mode)}"
    if f.kind != "regular file":
        problems.append(f"{what} {f.path} is a {f.kind}, not a regular file")
    elif (f.owner, f.group, f.mode) != (owner, group, mode):
        problems.append(f"{what} {f.path} is {f.owner}:{f.group} {_mode(f.mode)}, "
                        f"should be {owner}:{group} {_mode(mode)}")
    return cell


def _conf_cell(facts: HostFacts, paths: list[str], problems: list[str]) -> str:
    if not paths:
        return "-"
    missing = []
    for path in paths:
        report = facts.conf.get(path)
        if report is None:
            problems.append(f"AuthAlt lines of {path}: not checked")
            missing.append(path)
        elif report.get("configless"):
            continue  # the copy of the controller's file: judged with the cluster's hosts
        elif report.get("exit_code") != 0:
            problems.append(f"{path}: {report.get('message') or report.get('error')}")
            missing.append(path)
        elif report.get("changed"):
            problems.append(f"{path} lacks AuthAltTypes=auth/jwt / AuthAltParameters=jwt_key="
                            f"{facts.settings.jwt_key_path}: run the deploy")
            missing.append(path)
    if not missing:
        copies = [p for p in paths if (facts.conf.get(p) or {}).get("configless")]
        return "copy" if copies else "present"
    return "MISSING " + ",".join(p.rsplit("/", 1)[-1] for p in missing)


def _unit_cell(hs: HostState, name: str) -> str:
    unit = hs.unit(name)
    return unit.active if unit.exists else "not installed"


def _judge_watchdog(hs: HostState, wanted: bool) -> tuple[str, str | None]:
    """(cell, problem) for the rotation watchdog, which the deploy runs on the agent hosts that
    hold Slurm's key (ClusterPlan.watchdog_hosts) and on no other."""
    if wanted:
        watch = hs.unit(WATCH_UNIT)
        if not watch.exists:
            return "not installed", (
                f"{WATCH_UNIT} is not installed: a change of Slurm's key on this host would not "
                "reach the agent; run the deploy (it installs the watchdog on agent hosts that "
                "hold the key)")
        if watch.active != "active":
            return watch.active, (
                f"{WATCH_UNIT} is {watch.active}: a change of Slurm's key on this host would not "
                f"reach the agent; see journalctl -u {WATCH_UNIT}, then systemctl start it or "
                "run the deploy")
        return "active", None
    leftover = watchdog_leftover(hs)
    if leftover is None:
        return NO_WATCHDOG, None
    # What an older deploy installed here: it has no key to follow and says key_missing.
    return _unit_cell(hs, WATCH_UNIT) + " (not needed)", (
        f"{WATCH_UNIT} is installed on an agent host that does not hold Slurm's key: it has no "
        "key to follow (its status stays key_missing); run the deploy, which removes it "
        f"({leftover.describe()}); rotate the key with slurmrestd_access.deploys.rotate_key")


def _slurmweb_cell(check: dict | None) -> str:
    name = (check or {}).get("slurmweb")
    return str(name).removeprefix("Slurm-web ") if name else "?"


def evaluate_host(facts: HostFacts, plan: ClusterPlan) -> HostRow:
    s, roles = facts.settings, facts.roles
    cells = {c: "-" for c in COLUMNS[3:]}
    problems: list[str] = []
    row = HostRow(facts.cluster, facts.name, ",".join(sorted(roles)), cells, problems)
    if facts.no_root:
        problems.append(facts.no_root)
        cells["check"] = "no root"
        return row
    if facts.error or facts.state is None:
        problems.append(f"unreachable: {facts.error or 'no data'}")
        cells["check"] = "unreachable"
        return row
    hs = facts.state
    cells["tool"] = hs.tool_version or ("?" if hs.tool_digest else "missing")
    if not hs.tool_digest:
        problems.append("the slurmrestd-access host tool is not installed: run the deploy")

    if facts.name in plan.hosts_needing_key():
        cells["key"] = _judge_key_file(hs.file(s.jwt_key_path), s.jwt_key_owner, s.jwt_key_group,
                                       s.jwt_key_mode, "Slurm's key", problems)
    confs = []
    if roles & {"slurmctld", "slurmrestd", "compute"}:
        confs.append(s.slurm_conf)
    if "slurmdbd" in roles:
        confs.append(s.slurmdbd_conf)
    cells["authalt"] = _conf_cell(facts, confs, problems)

    if "slurmrestd" in roles:
        cells["copy"] = _judge_key_file(hs.file(s.agent_key_path), s.agent_user, s.agent_group,
                                        s.agent_key_mode, "the agent's copy", problems)
        configless = slurm_conf_source(hs, s.slurm_conf).configless
        wanted = hashlib.sha256(slurmrestd_dropin(s, configless).encode()).hexdigest()
        dropin = hs.file(s.slurmrestd_dropin)
        if not dropin.exists:
            cells["dropin"] = "missing"
            problems.append(f"the slurmrestd drop-in {s.slurmrestd_dropin} is missing")
        elif dropin.sha256 != wanted:
            cells["dropin"] = "differs"
            problems.append(f"the slurmrestd drop-in {s.slurmrestd_dropin} differs from the "
                            "documentation's: run the deploy")
        else:
            cells["dropin"] = "ok"
        cells["slurmrestd"] = _unit_cell(hs, s.slurmrestd_unit)
        if cells["slurmrestd"] != "active":
            problems.append(f"{s.slurmrestd_unit} is {cells['slurmrestd']}")

        agents = choose_agent_units(s.agent_unit, lambda u: hs.unit(u).states)
        if not agents:
            cells["agent"] = "none in use"
            named = s.agent_unit or "no Slurm-web agent unit"
            problems.append(f"{named} is neither enabled nor running (installed, not masked)")
        else:
            states = [f"{u.removesuffix('.service')} {_unit_cell(hs, u)}" for u in agents]
            cells["agent"] = ", ".join(states)
            for unit in agents:
                if _unit_cell(hs, unit) != "active":
                    problems.append(f"{unit} is {_unit_cell(hs, unit)}")

        cells["watchdog"], watch_problem = _judge_watchdog(
            hs, facts.name in plan.watchdog_hosts())
        if watch_problem:
            problems.append(watch_problem)

        check = facts.check
        # The agent's release as the host tool detected it for the check (`?`: not known).
        cells["slurmweb"] = _slurmweb_cell(check)
        if check is None:
            cells["check"] = "not run"
            problems.append("the connect check did not run")
        elif check.get("exit_code") == 0:
            cells["check"] = "ok"
        else:
            reason = check.get("reason") or check.get("error") or "unknown"
            cells["check"] = f"{reason} ({check.get('exit_code')})"
            problems.append(f"connect check: {reason}: {check.get('message', '')}".rstrip(": "))
    return row


def evaluate_cluster(plan: ClusterPlan, facts: dict[str, HostFacts]) -> ClusterReport:
    names = [h for h in plan.all_hosts() if h in facts]
    rows = [evaluate_host(facts[h], plan) for h in names]
    problems: list[str] = []
    keys: dict[str, str] = {}
    for name in plan.hosts_needing_key():
        f = facts.get(name)
        if f is None or f.state is None:
            continue
        key = f.state.file(f.settings.jwt_key_path)
        if key.exists and key.sha256:
            keys[name] = key.sha256
    if len(set(keys.values())) > 1:
        listed = ", ".join(f"{h} {fingerprint(k)}" for h, k in keys.items())
        problems.append(f"Slurm's key differs between the cluster's hosts: {listed}; run the "
                        "deploy (it copies the controller's key by hash) or rotate the key")
    cluster_key = keys.get(plan.key_origin) or next(iter(keys.values()), None)
    for name in plan.rest_hosts:
        f = facts.get(name)
        if f is None or f.state is None or cluster_key is None:
            continue
        copy = f.state.file(f.settings.agent_key_path)
        if copy.exists and copy.sha256 and copy.sha256 != cluster_key:
            problems.append(f"the agent's copy on {name} ({fingerprint(copy.sha256)}) differs "
                            f"from the cluster key ({fingerprint(cluster_key)})")
    _judge_configless_copies(plan, facts, rows)
    return ClusterReport(plan.name, rows, problems)


def _judge_configless_copies(plan: ClusterPlan, facts: dict[str, HostFacts],
                             rows: list[HostRow]) -> None:
    """A configless host's copy of slurm.conf is the primary controller's file, byte for byte
    (sackd and slurmd copy it whole, measured), or it is stale."""
    ctl = facts.get(plan.primary_controller)
    want = (ctl.state.file(ctl.settings.slurm_conf).sha256
            if ctl is not None and ctl.state is not None else None)
    for row in rows:
        f = facts[row.host]
        if row.cells.get("authalt") != "copy" or f.state is None:
            continue
        copy = f.state.file(f.conf[f.settings.slurm_conf]["reads"])
        if want is None:
            row.problems.append(f"the controller {plan.primary_controller} was not looked at: "
                                "this host's copy of slurm.conf was not checked")
        elif copy.sha256 != want:
            row.cells["authalt"] = "STALE copy"
            row.problems.append(
                f"this host's copy of slurm.conf ({copy.path}) is not {plan.primary_controller}'s"
                f" file: run `scontrol reconfigure` there, or the deploy")


def evaluate(plans: dict[str, ClusterPlan], facts: dict[str, HostFacts]) -> list[ClusterReport]:
    """Clusters that have at least one host in `facts` (the --limit'ed ones), by name."""
    return [evaluate_cluster(plans[c], facts) for c in sorted(plans)
            if any(h in facts for h in plans[c].all_hosts())]


def exit_code(reports: list[ClusterReport]) -> int:
    return 0 if all(r.ok for r in reports) else 1


def render_table(reports: list[ClusterReport]) -> str:
    rows = [dict(zip(COLUMNS[:3], (r.cluster, r.host, r.roles), strict=True)) | r.cells
            for c in reports for r in c.rows]
    widths = {c: max([len(c), *(len(row[c]) for row in rows)]) for c in COLUMNS}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in COLUMNS).rstrip()]
    lines += ["  ".join(row[c].ljust(widths[c]) for c in COLUMNS).rstrip() for row in rows]
    lines.append("")
    for c in reports:
        if c.ok:
            lines.append(f"{c.name}: OK")
        else:
            lines.append(f"{c.name}: {len(c.all_problems())} problem(s)")
            lines += [f"  - {p}" for p in c.all_problems()]
    return "\n".join(lines) + "\n"


def to_dict(reports: list[ClusterReport]) -> dict[str, Any]:
    return {"ok": exit_code(reports) == 0, "clusters": [r.to_dict() for r in reports]}
