"""preflight: what must hold on the slurmrestd host before the deploy changes anything."""

from __future__ import annotations

import os

import pytest

from watchdog_daemon.config import preflight
from watchdog_daemon.config.preflight import (
    ERROR,
    WARNING,
    check_env_text,
    check_unit,
    failed,
    parse_env_file,
    run_preflight,
)

SOCK = "/run/slurmrestd/slurmrestd.socket"
PATH = "/etc/default/slurmrestd"


def levels(findings):
    return [f.level for f in findings]


# ------------------------------------------------------------------------ env file parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\n", "1"),
        ('A="x y"\n', "x y"),
        ("A='x y'\n", "x y"),
        ("export A=1\n", "1"),
        ("  A=1  # comment\n", "1"),
        ("A=\n", ""),
        ('A=""\n', ""),
        ("A=1\nA=2\n", "2"),
        ("A=a\\\nb\n", "ab"),
    ],
)
def test_parse_env_values(text, expected):
    values, bad = parse_env_file(text)
    assert values["A"].value == expected
    assert bad == []


def test_parse_env_comments_and_blank_lines():
    values, bad = parse_env_file("# A=1\n; B=2\n\n   \n")
    assert values == {} and bad == []


def test_parse_env_reports_bad_lines():
    values, bad = parse_env_file('OK=1\nA="unbalanced\njunk\n')
    assert values["OK"].value == "1"
    assert bad == [2, 3]


def test_parse_env_line_numbers():
    values, _ = parse_env_file("# c\n\nSLURMRESTD_LISTEN=:6820\n")
    assert values["SLURMRESTD_LISTEN"].line == 3


# ------------------------------------------------------------------------ SLURMRESTD_LISTEN


@pytest.mark.parametrize(
    "spec",
    [
        f"unix:{SOCK}",
        f'"unix:{SOCK}"',
        f"unix://{SOCK}",
        f":6820,unix:{SOCK}",
    ],
)
def test_listen_repeating_our_socket_is_error(spec):
    findings = check_env_text(f"SLURMRESTD_LISTEN={spec}\n", PATH, SOCK)
    assert levels(findings) == [ERROR]
    assert "repeats the socket" in findings[0].message
    assert "comment out" in findings[0].hint
    assert findings[0].file == PATH and findings[0].line == 1


def test_listen_elsewhere_is_error_with_hint():
    findings = check_env_text("SLURMRESTD_LISTEN=0.0.0.0:6820\n", PATH, SOCK)
    assert levels(findings) == [ERROR]
    assert "also listen on 0.0.0.0:6820" in findings[0].message
    assert "comment out SLURMRESTD_LISTEN" in findings[0].hint


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SLURMRESTD_LISTEN=\n",
        'SLURMRESTD_LISTEN=""\n',
        "#SLURMRESTD_LISTEN=:6820\n",
        "SLURMRESTD_OPTIONS=\n",
        "SLURMRESTD_OPTIONS=-vv\n",
        'SLURMRESTD_OPTIONS="-t 4 -f /etc/slurm/slurm.conf -s openapi/slurmctld"\n',
    ],
)
def test_harmless_files(text):
    assert check_env_text(text, PATH, SOCK) == []


# ----------------------------------------------------------------------- SLURMRESTD_OPTIONS


@pytest.mark.parametrize(
    ("options", "level", "words"),
    [
        ("-a rest_auth/local", ERROR, "-a"),
        ("-arest_auth/local", ERROR, "-a"),
        ("-v -a rest_auth/jwt", ERROR, "-a"),
        ("--auth=x", ERROR, "--auth"),
        ("0.0.0.0:6820", ERROR, "listen address"),
        (f"-t 4 unix:{SOCK}", ERROR, "listen address"),
        ("-u slurm", WARNING, "switch user"),
        ("-g slurm", WARNING, "switch user"),
    ],
)
def test_options(options, level, words):
    findings = check_env_text(f'SLURMRESTD_OPTIONS="{options}"\n', PATH, SOCK)
    assert levels(findings) == [level]
    assert words in findings[0].message
    assert findings[0].hint


def test_auth_types_env_warned():
    findings = check_env_text("SLURMRESTD_AUTH_TYPES=rest_auth/local\n", PATH, SOCK)
    assert levels(findings) == [WARNING]


def test_unparseable_line_is_a_warning():
    findings = check_env_text('SLURMRESTD_LISTEN="oops\n', PATH, SOCK)
    assert levels(findings) == [WARNING]
    assert findings[0].line == 1


# --------------------------------------------------------------------------------- unit


def test_unit_found_in_a_unit_dir(tmp_path):
    (tmp_path / "slurmrestd.service").write_text("[Service]\n")
    assert check_unit("slurmrestd.service", unit_dirs=(str(tmp_path),)) is None


def test_unit_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "_systemctl_knows", lambda unit: False)
    finding = check_unit("slurmrestd.service", unit_dirs=(str(tmp_path),))
    assert finding is not None and finding.level == ERROR
    assert finding.message == (
        "slurmrestd.service is not installed: install the slurmrestd package"
    )


def test_unit_known_to_systemctl_only(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "_systemctl_knows", lambda unit: True)
    assert check_unit("slurmrestd.service", unit_dirs=(str(tmp_path),)) is None


def test_unit_masked(tmp_path):
    os.symlink(os.devnull, tmp_path / "slurmrestd.service")
    finding = check_unit("slurmrestd.service", unit_dirs=(str(tmp_path),))
    assert finding is not None
    assert "masked" in finding.message and "unmask" in finding.hint


# ----------------------------------------------------------------------------- gathering


def test_run_preflight_gathers_env_files(tmp_path):
    units = tmp_path / "units"
    units.mkdir()
    (units / "slurmrestd.service").write_text("")
    default = tmp_path / "default"
    default.write_text(f"SLURMRESTD_LISTEN=unix:{SOCK}\n")
    findings = run_preflight(
        env_files=(str(default), str(tmp_path / "absent")),
        unit_dirs=(str(units),),
    )
    assert levels(findings) == [ERROR]
    assert findings[0].file == str(default)
    assert failed(findings)


def test_run_preflight_clean_host(tmp_path):
    (tmp_path / "slurmrestd.service").write_text("")
    findings = run_preflight(env_files=(), unit_dirs=(str(tmp_path),))
    assert findings == [] and not failed(findings)


def test_warnings_alone_do_not_fail():
    assert not failed(check_env_text("SLURMRESTD_OPTIONS=-u slurm\n", PATH, SOCK))


def test_finding_to_dict():
    finding = check_env_text("SLURMRESTD_LISTEN=:1\n", PATH, SOCK)[0]
    assert set(finding.to_dict()) == {"level", "message", "hint", "file", "line"}
