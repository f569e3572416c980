"""conf_cli: the `conf`, `agent-ini` and `preflight` subcommands the deploy calls over SSH."""

from __future__ import annotations

import argparse
import json
import os
import stat

import pytest

from watchdog_daemon import cli
from watchdog_daemon.config import cli as conf_cli
from watchdog_daemon.config import preflight, slurmrelease
from watchdog_daemon.exitcodes import ExitCode


@pytest.fixture(autouse=True)
def slurm_2411(monkeypatch):
    """The preflight reads the host's Slurm release: this machine has none, so it is faked."""
    monkeypatch.setattr(slurmrelease, "read_release", lambda: "slurm 24.11.5")

KEY = "/var/spool/slurm/jwt_hs256.key"
URI = "unix:///run/slurmrestd/slurmrestd.socket"
AGENT_KEY = "/var/lib/slurm-web/slurmrestd.key"


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="slurmrestd-access")
    conf_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def run_json(capsys, argv: list[str]) -> tuple[int, dict]:
    code = run([*argv, "--json"])
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert len(lines) == 1, "exactly one JSON document on stdout"
    return code, json.loads(lines[0])


@pytest.fixture
def slurm_conf(tmp_path):
    path = tmp_path / "slurmdbd.conf"
    path.write_text("DbdHost=db\nStoragePass=t0p-s3cret\nAuthAltTypes=auth/foo\n")
    os.chmod(path, 0o600)
    return path


@pytest.fixture
def agent_ini(tmp_path):
    path = tmp_path / "agent.ini"
    path.write_text("[service]\ncluster = hpc\n")
    os.chmod(path, 0o640)
    return path


def test_registered_in_the_tool():
    parser = cli.build_parser()
    args = parser.parse_args(["conf", "plan", "--file", "/x", "--jwt-key", KEY])
    assert args.func is conf_cli._run_conf


# ------------------------------------------------------------------------------- conf


def test_conf_plan_json_never_writes(capsys, slurm_conf):
    before = slurm_conf.read_bytes()
    code, data = run_json(capsys, ["conf", "plan", "--file", str(slurm_conf), "--jwt-key", KEY])
    assert code == 0
    assert data == {
        "action": "plan",
        "file": str(slurm_conf),
        "changed": True,
        "before": ["AuthAltTypes=auth/foo"],
        "after": ["AuthAltTypes=auth/foo,auth/jwt", f"AuthAltParameters=jwt_key={KEY}"],
        "warnings": [],
        "exit_code": 0,
    }
    assert slurm_conf.read_bytes() == before


def test_conf_apply_then_plan_reports_no_change(capsys, slurm_conf):
    code, data = run_json(capsys, ["conf", "apply", "--file", str(slurm_conf), "--jwt-key", KEY])
    assert code == 0 and data["changed"] is True
    assert stat.S_IMODE(slurm_conf.stat().st_mode) == 0o600
    code, data = run_json(capsys, ["conf", "plan", "--file", str(slurm_conf), "--jwt-key", KEY])
    assert code == 0 and data["changed"] is False
    assert data["before"] == data["after"]


def test_conf_output_never_contains_other_lines(capsys, slurm_conf):
    run(["conf", "plan", "--file", str(slurm_conf), "--jwt-key", KEY])
    run(["conf", "plan", "--file", str(slurm_conf), "--jwt-key", KEY, "--json"])
    captured = capsys.readouterr()
    assert "t0p-s3cret" not in captured.out + captured.err
    assert "StoragePass" not in captured.out + captured.err


def test_conf_human_diff(capsys, slurm_conf):
    assert run(["conf", "plan", "--file", str(slurm_conf), "--jwt-key", KEY]) == 0
    out = capsys.readouterr().out
    assert "-AuthAltTypes=auth/foo\n" in out
    assert "+AuthAltTypes=auth/foo,auth/jwt\n" in out
    assert f"+AuthAltParameters=jwt_key={KEY}\n" in out
    assert "would change" in out


def test_conf_human_up_to_date(capsys, tmp_path):
    path = tmp_path / "slurm.conf"
    path.write_text(f"AuthAltTypes=auth/jwt\nAuthAltParameters=jwt_key={KEY}\n")
    assert run(["conf", "apply", "--file", str(path), "--jwt-key", KEY]) == 0
    assert "up to date" in capsys.readouterr().out


def test_conf_parse_error_json(capsys, tmp_path):
    path = tmp_path / "slurm.conf"
    path.write_text("ClusterName=x\nAuthAltTypes\n")
    code, data = run_json(capsys, ["conf", "apply", "--file", str(path), "--jwt-key", KEY])
    assert code == ExitCode.CHANGE_REFUSED == data["exit_code"]
    assert data["error"] == "change_refused"
    assert data["detail"] == "parse_error"
    assert "line 2" in data["message"]
    assert data["hint"]
    assert path.read_text() == "ClusterName=x\nAuthAltTypes\n"


def test_conf_conflict_human(capsys, tmp_path):
    path = tmp_path / "slurm.conf"
    path.write_text("AuthAltTypes=auth/a\nAuthAltTypes=auth/b\n")
    assert run(["conf", "plan", "--file", str(path), "--jwt-key", KEY]) == ExitCode.CHANGE_REFUSED
    err = capsys.readouterr().err
    assert err.startswith("ERROR: change_refused: AuthAltTypes is set on lines 1 and 2")
    assert " — delete or comment out" in err


def test_conf_missing_file(capsys, tmp_path):
    code, data = run_json(
        capsys, ["conf", "plan", "--file", str(tmp_path / "none"), "--jwt-key", KEY]
    )
    assert code == ExitCode.CONFIG_INVALID
    assert data["error"] == "config_invalid"
    assert data["detail"] == "file_missing"


def test_conf_bad_key_path(capsys, slurm_conf):
    code, data = run_json(capsys, ["conf", "plan", "--file", str(slurm_conf), "--jwt-key", "k"])
    assert code == ExitCode.CONFIG_INVALID
    assert data["error"] == "config_invalid"
    assert data["detail"] == "invalid_argument"


def test_conf_write_failure(capsys, slurm_conf, monkeypatch):
    def boom(src, dst):
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", boom)
    code, data = run_json(capsys, ["conf", "apply", "--file", str(slurm_conf), "--jwt-key", KEY])
    assert code == ExitCode.CHANGE_REFUSED
    assert data["error"] == "change_refused"
    assert data["detail"] == "write_failed"
    assert "AuthAltTypes=auth/foo\n" in slurm_conf.read_text()


# -------------------------------------------------------------------------- agent-ini


def _ini_args(action, path, *extra):
    return ["agent-ini", action, "--file", str(path), "--uri", URI, "--jwt-key", AGENT_KEY,
            "--slurmweb-release", "6.0", *extra]


def test_agent_ini_plan_and_apply(capsys, agent_ini):
    code, data = run_json(capsys, _ini_args("plan", agent_ini, "--jwt-user", "slurm"))
    assert code == 0 and data["changed"] is True
    assert "jwt_user = slurm" in data["after"]
    assert agent_ini.read_text() == "[service]\ncluster = hpc\n"
    code, data = run_json(capsys, _ini_args("apply", agent_ini, "--jwt-lifespan", "600"))
    assert code == 0 and data["changed"] is True
    assert stat.S_IMODE(agent_ini.stat().st_mode) == 0o640
    code, data = run_json(capsys, _ini_args("plan", agent_ini, "--jwt-lifespan", "600"))
    assert data["changed"] is False


def test_agent_ini_missing_cluster(capsys, tmp_path):
    path = tmp_path / "agent.ini"
    path.write_text("[ui]\n")
    code, data = run_json(capsys, _ini_args("apply", path))
    assert code == ExitCode.CONFIG_INVALID
    assert "[service]" in data["hint"] and "cluster" in data["hint"]


def test_agent_ini_missing_file(capsys, tmp_path):
    code, data = run_json(capsys, _ini_args("apply", tmp_path / "agent.ini"))
    assert code == ExitCode.CONFIG_INVALID
    assert data["error"] == "config_invalid"
    assert data["detail"] == "file_missing"
    assert not (tmp_path / "agent.ini").exists()


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_agent_ini_bad_lifespan_is_usage_error(agent_ini, value):
    with pytest.raises(SystemExit) as exc:
        run(_ini_args("plan", agent_ini, "--jwt-lifespan", value))
    assert exc.value.code == ExitCode.USAGE


# -------------------------------------------------------------------------- preflight


def test_preflight_json_failure(capsys, monkeypatch):
    finding = preflight.Finding(preflight.ERROR, "bad", "fix", "/etc/default/slurmrestd", 3)
    monkeypatch.setattr(preflight, "run_preflight", lambda **kw: [finding])
    code, data = run_json(capsys, ["preflight"])
    assert code == ExitCode.PREFLIGHT_FAILED
    assert data == {
        "ok": False,
        "unit": "slurmrestd.service",
        "socket": "/run/slurmrestd/slurmrestd.socket",
        "findings": [
            {
                "level": "error",
                "message": "bad",
                "hint": "fix",
                "file": "/etc/default/slurmrestd",
                "line": 3,
            }
        ],
        "slurm": "slurm 24.11.5",
    }


def test_preflight_refuses_a_slurm_older_than_2405_unless_allowed(capsys, monkeypatch):
    monkeypatch.setattr(preflight, "run_preflight", lambda **kw: [])
    monkeypatch.setattr(slurmrelease, "read_release", lambda: "slurm-wlm 20.11.4")
    code, data = run_json(capsys, ["preflight"])
    assert code == ExitCode.PREFLIGHT_FAILED
    assert data["slurm"] == "slurm-wlm 20.11.4"
    assert "Slurm 20.11.4 is not supported" in data["findings"][0]["message"]
    code, data = run_json(capsys, ["preflight", "--allow-unsupported-slurm"])
    assert code == 0 and data["findings"] == []


def test_preflight_passes_arguments(capsys, monkeypatch):
    seen = {}

    def fake(**kw):
        seen.update(kw)
        return [preflight.Finding(preflight.WARNING, "meh", "hint")]

    monkeypatch.setattr(preflight, "run_preflight", fake)
    code = run(["preflight", "--unit", "restd.service", "--socket", "/run/r/s.socket"])
    assert code == 0
    assert seen == {"unit": "restd.service", "socket_path": "/run/r/s.socket"}
    captured = capsys.readouterr()
    assert "preflight passed" in captured.out
    assert "warning: meh" in captured.err


def test_preflight_human_failure(capsys, monkeypatch):
    finding = preflight.Finding(preflight.ERROR, "bad", "fix it", "/f", 2)
    monkeypatch.setattr(preflight, "run_preflight", lambda **kw: [finding])
    assert run(["preflight"]) == ExitCode.PREFLIGHT_FAILED
    captured = capsys.readouterr()
    assert "error: bad (/f line 2)" in captured.err
    assert "hint: fix it" in captured.err
    assert "preflight failed" in captured.out


# ------------------------------------------------------------------------------- plan


def test_plan_gives_every_part_in_one_document_and_writes_nothing(capsys, monkeypatch, tmp_path,
                                                                  agent_ini):
    finding = preflight.Finding(preflight.ERROR, "bad", "fix", "/etc/default/slurmrestd", 3)
    monkeypatch.setattr(preflight, "run_preflight", lambda **kw: [finding])
    slurm = tmp_path / "slurm.conf"
    slurm.write_text("ClusterName=hpc\n")
    done = tmp_path / "done.conf"
    done.write_text(f"AuthAltTypes=auth/jwt\nAuthAltParameters=jwt_key={KEY}\n")
    before = {p: p.read_bytes() for p in (slurm, done, agent_ini)}
    code, data = run_json(capsys, [
        "plan", "--preflight-unit", "restd.service", "--conf", str(slurm), "--conf", str(done),
        "--jwt-key", KEY, "--agent-ini", str(agent_ini), "--uri", URI,
        "--agent-jwt-key", AGENT_KEY, "--slurmweb-release", "6.0",
    ])
    assert code == 0
    assert {p: p.read_bytes() for p in before} == before
    assert data["preflight"]["exit_code"] == ExitCode.PREFLIGHT_FAILED
    assert data["preflight"]["unit"] == "restd.service"
    assert [(c["file"], c["changed"], c["exit_code"]) for c in data["conf"]] == [
        (str(slurm), True, 0), (str(done), False, 0)]
    assert data["conf"][0]["after"] == ["AuthAltTypes=auth/jwt",
                                        f"AuthAltParameters=jwt_key={KEY}"]
    assert data["agent_ini"]["changed"] is True and data["agent_ini"]["exit_code"] == 0


def test_plan_reports_a_broken_file_as_its_part_and_goes_on(capsys, tmp_path, slurm_conf):
    broken = tmp_path / "slurm.conf"
    broken.write_text("  Include /etc/slurm/other.conf\n")
    code, data = run_json(capsys, ["plan", "--conf", str(broken), "--conf", str(slurm_conf),
                                   "--jwt-key", KEY])
    assert code == 0
    assert data["conf"][0]["exit_code"] == ExitCode.CHANGE_REFUSED
    assert data["conf"][0]["file"] == str(broken)
    assert data["conf"][1]["changed"] is True
    assert "t0p-s3cret" not in json.dumps(data)
    assert "preflight" not in data and "agent_ini" not in data


def test_plan_refuses_incomplete_arguments(capsys, tmp_path):
    code, data = run_json(capsys, ["plan", "--conf", str(tmp_path / "x")])
    assert code == ExitCode.USAGE and "--jwt-key" in data["message"]
    code, data = run_json(capsys, ["plan", "--agent-ini", str(tmp_path / "x")])
    assert code == ExitCode.USAGE and "--uri" in data["message"]
