"""The watchdog's verify of a new key (in memory) and its agent check, against the fake
slurmrestd: accepted, rejected (= waiting for Slurm), and a failure that is not a rejection."""

from __future__ import annotations

import os

import pytest

from tests.fakes.fake_slurmrestd import FakeSlurmrestd
from tests.unit.test_watch_support import (  # noqa: F401 - autouse: real threads
    install_copy,
    refuse_gevent_patched_process,
)
from watchdog_daemon.exitcodes import ExitCode
from watchdog_daemon.keys.secret import SecretBytes
from watchdog_daemon.watch.config import WatchConfig
from watchdog_daemon.watch.verify import CheckVerifier

OLD, NEW = os.urandom(32), os.urandom(32)


@pytest.fixture
def env(tmp_path):
    copy = tmp_path / "lib" / "slurmrestd.key"
    copy.parent.mkdir()
    install_copy(copy, OLD)
    sock = tmp_path / "rest.sock"
    ini = tmp_path / "agent.ini"
    ini.write_text(f"[service]\ncluster = hpc\n[slurmrestd]\nuri = unix://{sock}\n"
                   f"jwt_key = {copy}\n")
    cfg = WatchConfig(copy_path=copy, agent_ini=ini, accounting="yes", check_timeout=2.0,
                      slurmweb_release="6.0")  # no Slurm-web here: named, as host data may
    with FakeSlurmrestd(sock, slurmctld_key=OLD) as fake:
        yield CheckVerifier(cfg), fake


def test_new_key_rejected_until_slurm_reloads(env):
    verifier, fake = env
    verdict = verifier.verify_new_key(SecretBytes(NEW))
    assert not verdict.accepted and verdict.rejected
    assert verdict.reason == "rejected_by_slurmctld"
    assert verdict.exit_code == ExitCode.REJECTED_BY_SLURMCTLD
    fake.config.slurmctld_key = NEW
    fake.config.slurmdbd_key = OLD  # slurmctld reconfigured, slurmdbd not restarted yet
    verdict = verifier.verify_new_key(SecretBytes(NEW))
    assert verdict.rejected and verdict.reason == "rejected_by_slurmdbd"
    fake.config.slurmdbd_key = None
    verdict = verifier.verify_new_key(SecretBytes(NEW))
    assert verdict.accepted and verdict.details["cluster"] == "hpc"


def test_unreachable_controller_is_not_a_rejection(env):
    verifier, fake = env
    fake.config.mode = "controller_unreachable"
    verdict = verifier.verify_new_key(SecretBytes(NEW))
    assert not verdict.accepted and not verdict.rejected
    assert verdict.reason == "controller_unreachable"


def test_agent_check_reads_the_copy(env):
    verifier, fake = env
    assert verifier.check_agent().accepted
    fake.config.slurmctld_key = NEW
    assert verifier.check_agent().reason == "rejected_by_slurmctld"


def test_bad_agent_ini_is_config_invalid(env, tmp_path):
    verifier, _fake = env
    (tmp_path / "agent.ini").write_text("[slurmrestd]\n")
    verdict = verifier.verify_new_key(SecretBytes(NEW))
    assert verdict.reason == "config_invalid" and verdict.exit_code == ExitCode.CONFIG_INVALID


def test_probe_with_the_agents_copy(env):
    verifier, fake = env
    # No version known yet (no verify so far): no probe, the pipeline verifies instead.
    assert not verifier.probe_copy(frozenset()).usable
    assert not verifier.verify_new_key(SecretBytes(NEW)).accepted  # learns the version
    fake.config.recorded.clear()
    result = verifier.probe_copy(frozenset())
    assert result.usable and result.error is None
    assert result.accepted == {"slurmctld", "slurmdbd"} and not result.refused
    # One call per daemon, no discovery, no decoy.
    assert [r.path for r in fake.config.recorded] == ["/slurm/v0.0.42/diag",
                                                     "/slurmdb/v0.0.42/diag"]
    fake.config.slurmdbd_key = NEW  # slurmdbd restarted with the new key
    result = verifier.probe_copy(frozenset())
    assert result.refused == {"slurmdbd"} and result.accepted == {"slurmctld"}
    fake.config.recorded.clear()
    assert verifier.probe_copy(frozenset({"slurmdbd"})).accepted == {"slurmctld"}
    assert len(fake.config.recorded) == 1  # a daemon that switched is not asked again
    assert not verifier.probe_copy(frozenset({"slurmctld", "slurmdbd"})).usable
    fake.config.mode = "controller_unreachable"
    result = verifier.probe_copy(frozenset({"slurmdbd"}))
    assert result.error is not None and result.error.reason == "controller_unreachable"
    assert not result.refused  # unreachable is not a switch


def test_probe_without_a_readable_copy_is_unusable(env, tmp_path):
    verifier, _fake = env
    verifier.verify_new_key(SecretBytes(NEW))
    (tmp_path / "lib" / "slurmrestd.key").unlink()
    assert not verifier.probe_copy(frozenset()).usable


def test_accounting_is_read_from_the_configured_slurm_conf_and_its_includes(env, tmp_path):
    """watch.toml's slurm_conf (not a hard-coded /etc/slurm/slurm.conf), Include lines
    followed: accounting set in an included file makes slurmdbd's answer count."""
    verifier, fake = env
    etc = tmp_path / "slurm-llnl"
    etc.mkdir()
    (etc / "slurm.conf").write_text("ClusterName=hpc\nInclude acct.conf\n")
    (etc / "acct.conf").write_text("AccountingStorageType=accounting_storage/slurmdbd\n")
    cfg = WatchConfig(copy_path=verifier.config.copy_path, agent_ini=verifier.config.agent_ini,
                      accounting="auto", slurm_conf=etc / "slurm.conf", check_timeout=2.0,
                      slurmweb_release="6.0")
    fake.config.slurmctld_key, fake.config.slurmdbd_key = NEW, OLD
    verdict = CheckVerifier(cfg).verify_new_key(SecretBytes(NEW))
    assert verdict.rejected and verdict.reason == "rejected_by_slurmdbd"
    (etc / "acct.conf").write_text("AccountingStorageType=accounting_storage/none\n")
    assert CheckVerifier(cfg).verify_new_key(SecretBytes(NEW)).accepted
