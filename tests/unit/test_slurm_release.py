"""Supported Slurm releases (24.05+), decided before any change, and the host's Python."""

from __future__ import annotations

import pytest

from slurmrestd_access import hostpython
from slurmrestd_access.hoststate import parse_survey, survey_script
from slurmrestd_access.settings import SettingsError, settings_from_host_data
from watchdog_daemon.config import preflight, slurmrelease
from watchdog_daemon.config.slurmrelease import decide, parse_release


@pytest.mark.parametrize(("text", "release"), [
    ("slurm-wlm 20.11.4", (20, 11, 4)),
    ("slurm 22.05.8", (22, 5, 8)),
    ("slurm 24.11.5\n", (24, 11, 5)),
    ("slurm 26.05.0-0rc1", (26, 5, 0)),
    ("25.11", (25, 11, 0)),
    ("sinfo: command not found", None),
    ("", None),
])
def test_parse_release(text, release):
    assert parse_release(text) == release


@pytest.mark.parametrize("text", ["slurm-wlm 20.11.4", "slurm 22.05.8", "slurm 23.11.10"])
def test_older_than_2405_is_refused_naming_release_minimum_and_why(text):
    verdict = decide(text)
    assert not verdict.ok
    found = slurmrelease.full(parse_release(text))
    assert f"Slurm {found} is not supported" in verdict.message
    assert "the minimum is Slurm 24.05" in verdict.message
    assert "REST API v0.0.41" in verdict.message
    assert "Nothing was changed" in verdict.message
    assert "allow_unsupported_slurm: True" in verdict.hint


def test_refusal_says_which_api_versions_the_release_serves():
    assert "20.11 serves v0.0.35 to v0.0.36" in decide("slurm 20.11.4").message
    assert "22.05 serves v0.0.36 to v0.0.38" in decide("slurm 22.05.8").message


@pytest.mark.parametrize("text", ["slurm 24.05.1", "slurm 24.11.5", "slurm 25.11.0",
                                  "slurm 26.05.5", "slurm 27.11.0"])
def test_2405_and_later_go_on(text):
    verdict = decide(text)
    assert verdict.ok and verdict.hint == ""


def test_opt_in_lets_an_older_slurm_through_and_says_so():
    verdict = decide("slurm 22.05.8", allow_unsupported=True)
    assert verdict.ok
    assert "allow_unsupported_slurm is set" in verdict.message


def test_an_unreadable_release_is_refused_unless_opted_in():
    for text in (None, "", "garbage"):
        verdict = decide(text)
        assert not verdict.ok
        assert "cannot tell which Slurm release" in verdict.message
        assert decide(text, allow_unsupported=True).ok


def test_tool_preflight_finding_follows_the_decision():
    finding = preflight.release_finding("slurm 20.11.4")
    assert finding is not None and finding.level == preflight.ERROR
    assert "20.11.4" in finding.message
    assert preflight.release_finding("slurm 20.11.4", allow_unsupported=True) is None
    assert preflight.release_finding("slurm 24.11.5") is None


def test_read_release_uses_the_first_binary_that_answers(tmp_path, monkeypatch):
    (tmp_path / "sinfo").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "slurmd").write_text("#!/bin/sh\necho 'slurm 26.05.5'\n")
    for f in tmp_path.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert slurmrelease.read_release(("sinfo", "slurmctld", "slurmd")) == "slurm 26.05.5"
    assert slurmrelease.read_release(("sinfo",)) is None


# ---------------------------------------------------------------- /etc/sysconfig/slurmrestd


def test_sysconfig_is_read_like_etc_default(tmp_path):
    assert "/etc/sysconfig/slurmrestd" in preflight.ENV_FILES
    sysconfig = tmp_path / "sysconfig-slurmrestd"
    sysconfig.write_text("SLURMRESTD_LISTEN=unix:/run/slurmrestd/slurmrestd.socket\n")
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    (unit_dir / "slurmrestd.service").write_text("[Service]\n")
    findings = preflight.run_preflight(env_files=(str(tmp_path / "absent"), str(sysconfig)),
                                       unit_dirs=(str(unit_dir),))
    assert preflight.failed(findings)
    assert [f.file for f in findings if f.level == preflight.ERROR] == [str(sysconfig)]
    assert "repeats the socket" in findings[0].message


# ---------------------------------------------------------------- the host's Python


def test_python3_new_enough_is_used():
    assert hostpython.choose("3.9", [], ["rhel"]) == hostpython.HostPython("python3", "3.9")
    assert hostpython.choose("3.14", [], ["debian"]).command == "python3"


def test_too_old_python3_uses_the_newest_python3x_installed():
    chosen = hostpython.choose("3.6", ["3.9", "3.12", "3.11"], ["rocky", "rhel", "centos"])
    assert chosen == hostpython.HostPython("python3.12", "3.12")
    assert hostpython.choose("", ["3.11"], ["rhel"]).command == "python3.11"


def test_too_old_python3_without_a_newer_one_names_the_package():
    with pytest.raises(hostpython.HostPythonError) as exc:
        hostpython.choose("3.6", [], ["rhel", "centos", "fedora"])
    text = str(exc.value)
    assert "python3 is 3.6" in text and "3.9 or later" in text
    assert "dnf install python3.11" in text
    with pytest.raises(hostpython.HostPythonError, match="python3 is not installed"):
        hostpython.choose("", ["3.8"], ["debian"])


def test_survey_reports_release_pythons_and_os():
    state = parse_survey(["python 3.6", "pythons 3.11 3.12", "os rocky rhel centos fedora",
                          "slurm slurm 23.02.7", "machine x86_64"])
    assert state.python == "3.6" and state.pythons == ["3.11", "3.12"]
    assert state.os_ids == ["rocky", "rhel", "centos", "fedora"]
    assert state.slurm_version == "slurm 23.02.7"
    assert parse_survey(["pythons"]).pythons == []
    script = survey_script([], [], [], [], "/opt/x")
    for name in ("sinfo", "slurmd", "slurmctld", "python3.11", "os-release"):
        assert name in script.replace("python$v", "python3.11")


def test_allow_unsupported_slurm_host_data():
    assert not settings_from_host_data("h", {"cluster": "c"}).allow_unsupported_slurm
    assert settings_from_host_data(
        "h", {"cluster": "c", "allow_unsupported_slurm": True}).allow_unsupported_slurm
    with pytest.raises(SettingsError, match="True or False"):
        settings_from_host_data("h", {"cluster": "c", "allow_unsupported_slurm": "yes"})


def test_opted_in_hosts_check_the_api_their_release_serves():
    from slurmrestd_access.toolplan import check_args

    plain = settings_from_host_data("h", {"cluster": "c"})
    opted = settings_from_host_data("h", {"cluster": "c", "allow_unsupported_slurm": True})
    assert "--any-api-version" not in check_args(plain)
    assert "--any-api-version" in check_args(opted)
    assert check_args(opted, key="/k")[-2:] == ("--key", "/k")
