"""Configless Slurm: where each host's Slurm reads slurm.conf, and what the deploy makes of it
(issue 22; measured in tests/testbed/MEASUREMENTS.md; end to end: tests/e2e/test_configless.py).
"""

from __future__ import annotations

import json

import pytest

from slurmrestd_access.confsource import (
    CONFIGLESS,
    LOCAL,
    MISSING,
    slurm_conf_source,
    stale_copies,
)
from slurmrestd_access.hoststate import HostState, RemoteFile, UnitState
from slurmrestd_access.toolplan import plan_problems
from watchdog_daemon import cli
from watchdog_daemon.check import run as check_run
from watchdog_daemon.config import configless
from watchdog_daemon.config.dropin import render_dropin

DEFAULT = "/etc/slurm/slurm.conf"
CACHE = "/run/slurm/conf/slurm.conf"


def host(*files: str, active: tuple[str, ...] = ()) -> HostState:
    hs = HostState()
    hs.files = {p: RemoteFile(p, True, kind="regular file", sha256="a" * 64) for p in files}
    hs.units = {u: UnitState(u, load="loaded", active="active") for u in active}
    return hs


# ------------------------------------------------------------------ the host side (pure parts)


def test_slurm_reads_the_default_file_then_the_cache_never_in_place_of_a_chosen_path():
    exists = {DEFAULT: False, CACHE: True}.get
    assert configless.slurm_conf_to_read(DEFAULT, exists) == CACHE
    assert configless.slurm_conf_to_read(DEFAULT, {DEFAULT: True, CACHE: True}.get) == DEFAULT
    assert configless.slurm_conf_to_read(DEFAULT, {}.get) == DEFAULT
    # SLURM_CONF names a file: Slurm reads that one or none, never the cache.
    assert configless.slurm_conf_to_read("/opt/slurm/etc/slurm.conf", exists) == \
        "/opt/slurm/etc/slurm.conf"


@pytest.mark.parametrize(("value", "serves"), [
    ("enable_configless", True), ("idle_on_node_suspend, Enable_Configless", True),
    ("enable_configless_x", False), ("", False), (None, False),
])
def test_a_controller_serves_configless_hosts_only_with_the_parameter(value, serves):
    assert configless.serves_configless(value) is serves


def test_the_check_reads_accounting_from_the_copy_on_a_configless_host(tmp_path, monkeypatch):
    cache = tmp_path / "cache.conf"
    cache.write_text("ClusterName=c\nAccountingStorageType=accounting_storage/slurmdbd\n")
    monkeypatch.setattr(configless, "DEFAULT_SLURM_CONF", str(tmp_path / "absent.conf"))
    monkeypatch.setattr(configless, "CACHED_SLURM_CONF", str(cache))
    assert check_run.accounting_expected("auto", str(tmp_path / "absent.conf")) is True
    cache.write_text("ClusterName=c\n")
    assert check_run.accounting_expected("auto", str(tmp_path / "absent.conf")) is False


def test_the_tool_plan_says_configless_and_never_plans_to_create_the_file(tmp_path, monkeypatch,
                                                                          capsys):
    conf = tmp_path / "etc" / "slurm.conf"
    cache = tmp_path / "run" / "slurm.conf"
    cache.parent.mkdir()
    cache.write_text("ClusterName=c\n")
    monkeypatch.setattr(configless, "DEFAULT_SLURM_CONF", str(conf))
    monkeypatch.setattr(configless, "CACHED_SLURM_CONF", str(cache))
    key = "/var/spool/slurm/jwt_hs256.key"
    code = cli.main(["plan", "--conf", str(conf), "--jwt-key", key])
    (part,) = json.loads(capsys.readouterr().out)["conf"]
    assert code == 0
    assert part == {"action": "plan", "file": str(conf), "configless": True, "reads": str(cache),
                    "changed": False, "before": [], "after": [], "warnings": [], "exit_code": 0}
    # Applying there is refused, with the way out, and writes nothing.
    code = cli.main(["conf", "apply", "--file", str(conf), "--jwt-key", key, "--json"])
    error = json.loads(capsys.readouterr().out)
    assert code == 10 and error["detail"] == "file_missing"
    assert "this host is configless" in error["hint"] and not conf.exists()


def test_the_tool_plan_says_whether_a_controller_serves_configless_hosts(tmp_path, capsys):
    conf = tmp_path / "slurm.conf"
    inc = tmp_path / "params.conf"
    conf.write_text(f"ClusterName=c\nInclude {inc}\n")
    inc.write_text("SlurmctldParameters=enable_configless\n")
    cli.main(["plan", "--conf", str(conf), "--jwt-key", "/k"])
    (part,) = json.loads(capsys.readouterr().out)["conf"]
    assert part["configless_server"] is True  # read through the Include, as slurmctld does
    inc.write_text("SlurmctldParameters=cloud_dns\n")
    cli.main(["plan", "--conf", str(conf), "--jwt-key", "/k"])
    assert json.loads(capsys.readouterr().out)["conf"][0]["configless_server"] is False


def test_the_configless_dropin_clears_the_vendor_condition_and_keeps_the_documented_text():
    plain = render_dropin()
    text = render_dropin(configless=True)
    assert text.endswith(plain)  # the documentation's [Service] part, unchanged
    head = text[: -len(plain)].splitlines()
    assert head[0] == "[Unit]" and "ConditionPathExists=" in head
    assert "After=sackd.service slurmd.service" in head
    assert "[Unit]" not in plain


# --------------------------------------------------------------- the deploy side (pure parts)


def test_where_a_hosts_slurm_reads_its_configuration():
    assert slurm_conf_source(host(DEFAULT), DEFAULT).kind == LOCAL
    source = slurm_conf_source(host(CACHE, active=("sackd.service",)), DEFAULT)
    assert (source.kind, source.reads, source.fetchers) == (CONFIGLESS, CACHE, ("sackd.service",))
    assert source.problem(DEFAULT, controller=False) is None
    assert slurm_conf_source(host(), DEFAULT).kind == MISSING
    # A site's own path is never replaced by the cache (Slurm would not read it either).
    assert slurm_conf_source(host(CACHE), "/opt/slurm.conf").kind == MISSING


def test_each_missing_configuration_says_what_the_host_lacks():
    nothing = slurm_conf_source(host(), DEFAULT).problem(DEFAULT, controller=False)
    assert nothing == (
        "/etc/slurm/slurm.conf is missing and no configuration was fetched from a controller "
        "(/run/slurm/conf/slurm.conf does not exist): this host needs its own slurm.conf, or, "
        "on a configless cluster, sackd (or a configless slurmd) running with --conf-server "
        "CONTROLLER")
    stale = slurm_conf_source(host(CACHE), DEFAULT).problem(DEFAULT, controller=False)
    assert stale is not None and "neither sackd nor slurmd is running" in stale
    controller = slurm_conf_source(host(CACHE, active=("sackd.service",)), DEFAULT)
    assert "a controller reads its own slurm.conf" in controller.problem(DEFAULT, controller=True)


def test_copies_are_stale_when_they_differ_or_the_controllers_file_is_being_merged():
    others = {"rest": (True, "a"), "cn": (True, "b"), "db": (False, None)}
    assert stale_copies("a", others) == ["cn"]
    assert stale_copies(None, others) == ["rest", "cn"]
    assert stale_copies("a", {"rest": (True, "a")}) == []


def test_a_copy_that_cannot_be_hashed_does_not_make_every_run_reconfigure():
    from slurmrestd_access.confsource import unhashed_copies

    others = {"rest": (True, None), "cn": (True, "b"), "db": (False, None)}
    assert stale_copies("b", others) == []
    assert unhashed_copies(others) == ["rest"]
    assert stale_copies(None, others) == ["rest", "cn"]  # the controller's file just merged


def test_a_configless_hosts_slurm_conf_plan_is_not_a_problem_when_skipped():
    plan = {"conf": [{"file": DEFAULT, "exit_code": 10, "message": "does not exist"}]}
    assert plan_problems(plan, agent_host=False) != []
    assert plan_problems(plan, agent_host=False, skip_files=(DEFAULT,)) == []


# ------------------------------------------------------------------------------- the report


def configless_cluster(copy_sha: str) -> list:
    from slurmrestd_access.cluster import ClusterPlan
    from slurmrestd_access.fleet.report import HostFacts, evaluate
    from slurmrestd_access.settings import Settings

    s = Settings(cluster="cl", agent_unit="slurm-web-agent.service")
    plan = ClusterPlan("cl", ["ctl"], ["ctl"], ["rest"], ["cn"])
    ctl = HostState(tool_digest="d")
    ctl.files = {DEFAULT: RemoteFile(DEFAULT, True, "regular file", "root", "root", 0o644,
                                     "c" * 64)}

    def client() -> HostState:
        hs = HostState(tool_digest="d")
        hs.files = {CACHE: RemoteFile(CACHE, True, "regular file", "slurm", "slurm", 0o644,
                                      copy_sha)}
        hs.units = {"slurmd.service": UnitState("slurmd.service", "loaded", "active")}
        return hs

    copy_report = {"configless": True, "reads": CACHE, "exit_code": 0}
    facts = {
        "ctl": HostFacts("ctl", "cl", frozenset({"slurmctld"}), s, state=ctl,
                         conf={DEFAULT: {"exit_code": 0, "changed": False}}),
        "cn": HostFacts("cn", "cl", frozenset({"compute"}), s, state=client(),
                        conf={DEFAULT: dict(copy_report)}),
    }
    return evaluate({"cl": plan}, facts)


def test_the_report_judges_a_configless_copy_by_the_controllers_file():
    (report,) = configless_cluster("c" * 64)
    cells = {r.host: r.cells["authalt"] for r in report.rows}
    problems = {r.host: r.problems for r in report.rows}
    assert cells == {"ctl": "present", "cn": "copy"} and problems["cn"] == [], problems
    (report,) = configless_cluster("d" * 64)
    cn = {r.host: r for r in report.rows}["cn"]
    assert cn.cells["authalt"] == "STALE copy"
    assert cn.problems == ["this host's copy of slurm.conf (/run/slurm/conf/slurm.conf) is not "
                           "ctl's file: run `scontrol reconfigure` there, or the deploy"]
