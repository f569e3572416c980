"""The connect check the installed tool's survey runs along (`slurmrestd-access survey
--check`), on fake hosts: a no-change re-run takes it as the proof instead of checking a second
time; anything changed in the cluster since, or a failed one, and the check runs live."""

from __future__ import annotations

from tests.unit.fakedeploy import deploy, deployed_host

HOST = "@fake/hpc1"
LIVE = "slurmrestd-access check"
PASSED = {"ok": True, "exit_code": 0, "slurm": "24.11.5", "cluster": "hpc",
          "line": "✅ connection successful! (cluster: hpc, slurm: 24.11.5, api: 0.0.42)"}


def test_a_no_change_rerun_takes_the_surveys_check(tmp_path):
    run = deploy(tmp_path, {"hpc1": deployed_host(survey_check=PASSED)}, "-v")
    assert run.returncode == 0, run.output[-3000:]
    assert run.ran(HOST, LIVE) == [], run.commands[HOST]
    assert len(run.commands[HOST]) == 1  # the survey: one round trip in all
    assert "made with the survey; nothing changed since" in run.output


def test_a_failed_survey_check_is_made_again_live(tmp_path):
    failed = {"ok": False, "exit_code": 4, "reason": "slurmrestd_unreachable"}
    run = deploy(tmp_path, {"hpc1": deployed_host(survey_check=failed)}, "-v")
    assert run.returncode == 0, run.output[-3000:]  # the fake's live check passes
    assert len(run.ran(HOST, LIVE)) == 1
    assert "made with the survey" not in run.output


def test_a_change_in_the_run_means_a_live_check(tmp_path):
    # The plan says agent.ini and the confs need a merge: the survey's check proved the host
    # as it was before that.
    host = deployed_host(survey_check=PASSED, plan_changed=True)
    run = deploy(tmp_path, {"hpc1": host}, "-v")
    assert run.returncode == 0, run.output[-3000:]
    assert len(run.ran(HOST, LIVE)) >= 1
    assert "made with the survey" not in run.output


def test_a_change_on_another_host_of_the_cluster_means_a_live_check(tmp_path):
    ctl = deployed_host(roles=("slurmctld", "slurmdbd", "compute"), plan_changed=True)
    rest = deployed_host(roles=("slurmrestd",), survey_check=PASSED)
    run = deploy(tmp_path, {"ctl": ctl, "rest": rest}, "-v")
    assert run.returncode == 0, run.output[-3000:]
    assert len(run.ran("@fake/rest", LIVE)) >= 1
    assert "made with the survey" not in run.output


def test_the_survey_asks_for_the_check_on_the_slurmrestd_host_only(tmp_path):
    ctl = deployed_host(roles=("slurmctld", "slurmdbd", "compute"))
    rest = deployed_host(roles=("slurmrestd",), survey_check=PASSED)
    run = deploy(tmp_path, {"ctl": ctl, "rest": rest})
    assert run.returncode == 0, run.output[-3000:]
    [ctl_survey] = run.ran("@fake/ctl", "export LC_ALL=C")
    [rest_survey] = run.ran("@fake/rest", "export LC_ALL=C")
    assert "--check" not in run.commands["@fake/ctl"][ctl_survey]
    assert "--check" in run.commands["@fake/rest"][rest_survey]
    assert "--as-user slurm-web" in run.commands["@fake/rest"][rest_survey]
