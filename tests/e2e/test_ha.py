"""End-to-end: high availability (testbed topology `ha`): a primary and a backup slurmctld
sharing one StateSaveLocation, slurmdbd and slurmrestd on hosts of their own.

The deploy and the rotation give both controllers the same key (by SHA-256) and restart them
one at a time, the backup first; the agent keeps answering while the primary is stopped and
the backup has taken over, and after the primary returns. One bring-up, one story, in order.
"""

from __future__ import annotations

import re
import shlex
import time

import pytest

from tests.e2e import hostcheck
from tests.e2e.pyinfra_run import run_deploy
from tests.e2e.test_fleet import report, summary

pytestmark = pytest.mark.e2e

KEY = "/var/spool/slurm/jwt_hs256.key"
COPY = "/var/lib/slurm-web/slurmrestd.key"
ROTATE = "deploys/rotate_key.py"
PRIMARY, BACKUP, DB, REST = "ha-ctl1", "ha-ctl2", "ha-db", "ha-rest"
JOBS = "/v6.0.0/jobs"  # the agent's (Slurm-web 6.0 stand-in) data path to slurmctld
# Slurm's jwt page: on HA controllers, the key in the StateSaveLocation they share.
SHARED_KEY = "/var/lib/slurm/slurmctld/jwt_hs256.key"


def key_hashes(topo, key: str = KEY) -> dict[str, str | None]:
    hashes = {h: (hostcheck.stat(topo, h, key) or {}).get("sha256") for h in (PRIMARY, BACKUP, DB)}
    hashes["copy"] = (hostcheck.stat(topo, REST, COPY) or {}).get("sha256")
    return hashes


def ctld_times(topo, host: str) -> dict[str, int]:
    """When slurmctld last became active and last left active (µs, CLOCK_MONOTONIC, which the
    containers share with the machine: comparable between hosts)."""
    out = topo.ssh(host, "systemctl show -p ActiveEnterTimestampMonotonic "
                         "-p ActiveExitTimestampMonotonic slurmctld.service").stdout
    values = dict(line.split("=", 1) for line in out.split())
    return {"enter": int(values["ActiveEnterTimestampMonotonic"]),
            "exit": int(values["ActiveExitTimestampMonotonic"])}


def assert_backup_then_primary(topo, before: dict[str, dict[str, int]]) -> None:
    """Both restarted, and the primary only began to stop once the backup was active again:
    at no moment were both down."""
    after = {h: ctld_times(topo, h) for h in (PRIMARY, BACKUP)}
    for h in (PRIMARY, BACKUP):
        assert after[h]["enter"] > before[h]["enter"], f"{h}: slurmctld was not restarted"
    assert after[BACKUP]["enter"] < after[PRIMARY]["exit"], after


def ping(topo, host: str = REST) -> str:
    return topo.ssh(host, "scontrol ping", check=False).stdout


def wait_all_up(topo, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        out = ping(topo)
        if "is UP" in out and "is DOWN" not in out:
            return
        time.sleep(0.5)
    raise AssertionError(f"controllers not all UP after {seconds} s:\n{ping(topo)}")


def jobs_status(topo) -> int:
    status, _ = hostcheck.agent_get(topo, REST, JOBS)
    return status


def until_jobs_answer(topo, seconds: float = 60) -> tuple[float, list[tuple[float, int, str]]]:
    """Ask the agent's /jobs until it answers 200: (seconds it took, every answer with the
    agent's error description)."""
    started = time.monotonic()
    answers: list[tuple[float, int, str]] = []
    while time.monotonic() - started < seconds:
        status, body = hostcheck.agent_get(topo, REST, JOBS)
        answers.append((round(time.monotonic() - started, 1), status,
                        "" if status == 200 else str(body)[:200]))
        if status == 200:
            return answers[-1][0], answers
        time.sleep(0.2)
    raise AssertionError(f"the agent's {JOBS} did not answer 200 within {seconds} s: {answers}")


def check_line(topo) -> str:
    """The host tool's check, run as the agent's user on the agent host: its output."""
    done = topo.ssh(REST, "runuser -u slurm-web -- slurmrestd-access check", check=False)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return done.stdout


@pytest.fixture(scope="module")
def ha(testbed):
    topo = testbed.up("ha", fresh=True)
    assert "Slurmctld(primary) at ha-ctl1 is UP" in ping(topo, PRIMARY)
    assert "Slurmctld(backup) at ha-ctl2 is UP" in ping(topo, PRIMARY)
    # The two controllers see one directory: a file written by one is there for the other.
    topo.ssh(PRIMARY, "runuser -u slurm -- touch /var/lib/slurm/slurmctld/testbed-shared")
    assert topo.ssh(BACKUP, "stat -c %U /var/lib/slurm/slurmctld/testbed-shared"
                    ).stdout.strip() == "slurm"
    before = {h: ctld_times(topo, h) for h in (PRIMARY, BACKUP)}
    first = run_deploy(topo.inventory_path)
    assert first.returncode == 0, first.output[-6000:]
    return topo, first, before


def test_first_deploy_gives_both_controllers_one_key_and_restarts_backup_first(ha):
    topo, first, before = ha
    assert summary(first) == {"ha": "changed"}
    hashes = key_hashes(topo)
    assert hashes[PRIMARY] and len(set(hashes.values())) == 1, hashes
    assert_backup_then_primary(topo, before)
    # The run says which controller is restarted when: the backup's operation first.
    out = first.output
    backup_op = out.index("Restart slurmctld.service (backup controller, one at a time)")
    assert backup_op < out.index("Restart slurmctld.service (primary controller, after the "
                                 "backups)")
    assert hostcheck.agent_view(topo, REST)["accepted"] is True


def test_dry_re_run_plans_nothing(ha):
    topo, _, _ = ha
    dry = run_deploy(topo.inventory_path, "deploys/slurmrestd_access.py", "--dry", "-v")
    assert dry.returncode == 0, dry.output[-6000:]
    assert dry.planned_changes() == [], dry.output[-4000:]
    assert "warning: slurm.conf names" not in dry.output  # the inventory's primary is right


def test_an_inventory_listing_the_backup_first_is_warned_about(ha, tmp_path):
    topo, _, _ = ha
    # pyinfra orders hosts by where the inventory first names them (here: the cluster's
    # group), whatever the order of a role group's list: the backup's line goes first.
    lines = topo.inventory_path.read_text().splitlines(keepends=True)
    ctl1 = next(i for i, line in enumerate(lines) if line.startswith("    ('ha-ctl1', "))
    assert lines[ctl1 + 1].startswith("    ('ha-ctl2', "), lines
    lines[ctl1], lines[ctl1 + 1] = lines[ctl1 + 1], lines[ctl1]
    reversed_order = tmp_path / "ha_backup_first.py"
    reversed_order.write_text("".join(lines))
    dry = run_deploy(reversed_order, "deploys/slurmrestd_access.py", "--dry", "-v")
    assert dry.returncode == 0, dry.output[-6000:]
    assert ("warning: slurm.conf names ha-ctl1 first (the primary controller), the inventory's "
            "slurmctld group ha-ctl2") in dry.output, dry.output[-4000:]


def test_re_run_changes_nothing(ha):
    topo, _, _ = ha
    before = hostcheck.snapshot(topo)
    again = run_deploy(topo.inventory_path)
    assert again.returncode == 0, again.output[-6000:]
    assert summary(again) == {"ha": "unchanged"}
    assert again.totals()["changed"] == 0, again.output[-4000:]
    assert hostcheck.snapshot(topo) == before


def test_report_and_check_are_ok(ha):
    topo, _, _ = ha
    table = report(topo)
    assert table.returncode == 0, table.stdout + table.stderr
    assert "ha: OK" in table.stdout
    assert "✅ connection successful" in check_line(topo)


def test_agent_answers_with_the_primary_stopped_after_takeover_and_after_it_returns(ha):
    topo, _, _ = ha
    assert jobs_status(topo) == 200
    topo.ssh(PRIMARY, "systemctl stop slurmctld.service")
    try:
        topo.ssh(BACKUP, "scontrol takeover")
        took, answers = until_jobs_answer(topo)
        out = ping(topo)
        assert re.search(r"\(primary\) at ha-ctl1 is DOWN", out), out
        assert re.search(r"\(backup\) at ha-ctl2 is UP", out), out
        # It goes on answering, and the check passes, with the backup in control.
        assert [jobs_status(topo) for _ in range(5)] == [200] * 5
        assert "✅ connection successful" in check_line(topo)
        print(f"\nHA: agent {JOBS} 200 {took:.1f} s after `scontrol takeover`: {answers}")
    finally:
        topo.ssh(PRIMARY, "systemctl start slurmctld.service")
    returned = time.monotonic()
    wait_all_up(topo)
    print(f"HA: both controllers UP {time.monotonic() - returned:.1f} s after the primary's "
          "start")
    # The primary takes control back from the backup: the agent may fail a request meanwhile
    # (measured, MEASUREMENTS.md), then answers again, for good.
    took, answers = until_jobs_answer(topo)
    print(f"HA: agent {JOBS} 200 {took:.1f} s after both were UP: {answers}")
    assert [jobs_status(topo) for _ in range(5)] == [200] * 5
    assert "✅ connection successful" in check_line(topo)
    assert re.search(r"\(primary\) at ha-ctl1 is UP", ping(topo))


def test_rotation_gives_both_controllers_the_new_key_one_restart_at_a_time(ha):
    topo, _, _ = ha
    wait_all_up(topo)
    old = key_hashes(topo)
    before = {h: ctld_times(topo, h) for h in (PRIMARY, BACKUP)}
    run = run_deploy(topo.inventory_path, ROTATE)
    assert run.returncode == 0, run.output[-6000:]
    assert summary(run) == {"ha": "changed"}
    new = key_hashes(topo)
    assert new[PRIMARY] != old[PRIMARY]
    assert len(set(new.values())) == 1, new
    assert_backup_then_primary(topo, before)
    assert hostcheck.agent_view(topo, REST)["accepted"] is True
    assert "✅ connection successful" in check_line(topo)


def test_a_key_in_the_shared_state_save_location_is_left_alone_on_the_backup(ha):
    """The key moved where Slurm's jwt page puts it on HA controllers: one file for both. A
    re-run finds the backup's key equal by hash and touches nothing."""
    topo, _, _ = ha
    data = ("--data", f"jwt_key_path={SHARED_KEY}")
    moved = run_deploy(topo.inventory_path, "deploys/slurmrestd_access.py", *data)
    assert moved.returncode == 0, moved.output[-6000:]
    inodes = {h: topo.ssh(h, f"stat -c %i {shlex.quote(SHARED_KEY)}").stdout.strip()
              for h in (PRIMARY, BACKUP)}
    assert len(set(inodes.values())) == 1, inodes  # the same file, not two copies
    hashes = key_hashes(topo, SHARED_KEY)
    assert hashes[PRIMARY] and len(set(hashes.values())) == 1, hashes
    before = hostcheck.snapshot(topo)
    again = run_deploy(topo.inventory_path, "deploys/slurmrestd_access.py", *data, "-v")
    assert again.returncode == 0, again.output[-6000:]
    assert again.totals()["changed"] == 0, again.output[-4000:]
    assert f"{SHARED_KEY} matches the cluster key" in again.output
    assert hostcheck.snapshot(topo) == before
    assert hostcheck.agent_view(topo, REST)["accepted"] is True
