"""`slurmrestd-access check`: exact output lines, JSON, exit codes."""

from __future__ import annotations

import json
import os

import pytest

from tests.fakes.fake_slurmrestd import FakeSlurmrestd, make_stale_socket
from watchdog_daemon.cli import main
from watchdog_daemon.exitcodes import ExitCode

KEY = b"SENTINEL-cli-key-" + b"c" * 24
OTHER = b"o" * 40


@pytest.fixture
def env(tmp_path):
    key = tmp_path / "agent.key"
    key.write_bytes(KEY)
    os.chmod(key, 0o400)
    sock = tmp_path / "s.sock"
    ini = tmp_path / "agent.ini"
    ini.write_text(f"[service]\ncluster = hpc\n[slurmrestd]\nuri = unix://{sock}\n"
                   f"jwt_key = {key}\n")
    conf = tmp_path / "slurm.conf"
    conf.write_text("AccountingStorageType=accounting_storage/slurmdbd\n")
    # No Slurm-web on this machine: the release is named, as host data names it there.
    args = ["check", "--agent-ini", str(ini), "--slurm-conf", str(conf), "--timeout", "3",
            "--slurmweb-release", "5.2"]
    return args, sock, key, ini


def test_success_line_exact(env, capsys):
    args, sock, _, _ = env
    with FakeSlurmrestd(sock, slurmctld_key=KEY):
        code = main(args)
    out, err = capsys.readouterr()
    assert code == 0
    assert out == "✅ connection successful (slurm: 24.11.5, cluster: hpc)\n"
    assert err == ""


def test_failure_lines(env, capsys):
    args, sock, _, _ = env
    with FakeSlurmrestd(sock, slurmctld_key=OTHER):
        code = main(args)
    out, err = capsys.readouterr()
    assert code == ExitCode.REJECTED_BY_SLURMCTLD
    assert out == "❌ connection failure\n"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR: rejected_by_slurmctld: ")
    assert " — " in lines[0]


def test_json_success(env, capsys):
    args, sock, _, _ = env
    with FakeSlurmrestd(sock, slurmctld_key=KEY):
        code = main([*args, "--json"])
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert code == 0 and data["ok"] is True and data["exit_code"] == 0
    # 5.2 asks for its one version, 0.0.41, not the newest served (6.0 would discover 0.0.42).
    assert (data["slurm"], data["cluster"], data["api_version"], data["accounting"]) == \
        ("24.11.5", "hpc", "0.0.41", True)
    assert data["slurmweb"] == "Slurm-web 5.2"
    assert data["line"] == "✅ connection successful (slurm: 24.11.5, cluster: hpc)"
    assert err == ""


def test_six_zero_discovers_and_prints_its_own_success_line(env, capsys):
    args, sock, _, _ = env
    args[args.index("--slurmweb-release") + 1] = "6.0"
    with FakeSlurmrestd(sock, slurmctld_key=KEY):
        code = main(args)
    out, _err = capsys.readouterr()
    assert code == 0
    assert out == "✅ connection successful! (cluster: hpc, slurm: 24.11.5, api: 0.0.42)\n"


def test_a_release_slurm_does_not_serve_is_its_own_exit_code_naming_both(env, capsys):
    """Slurm-web 5.2 on Slurm 26.05 (serving 0.0.42 to 0.0.45): 0.0.41 is not served."""
    args, sock, _, _ = env
    with FakeSlurmrestd(sock, slurmctld_key=KEY, versions=("0.0.42", "0.0.43", "0.0.44",
                                                            "0.0.45")):
        code = main([*args, "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == ExitCode.SLURMWEB_INCOMPATIBLE == 25
    assert data["reason"] == "slurmweb_incompatible"
    assert "Slurm-web 5.2 uses REST API 0.0.41 only" in data["message"]
    assert "serves 0.0.42 to 0.0.45" in data["message"]
    assert "install Slurm-web 6.x" in data["hint"] and "Slurm 24.05 to 25.11" in data["hint"]


def test_versions_chosen_in_agent_ini_that_slurm_does_not_serve_stay_23(env, capsys):
    """The site's own choice, not the release's: the remedy is agent.ini, not an upgrade."""
    args, sock, _, ini = env
    ini.write_text(ini.read_text() + "version = 0.0.39\n")
    with FakeSlurmrestd(sock, slurmctld_key=KEY):
        code = main([*args, "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == ExitCode.NO_API_VERSION, data
    # 5.x refuses `versions` at start: the remedy names its own key (measured with the real
    # 5.2.0 agent, tests/testbed/MEASUREMENTS.md).
    assert "[slurmrestd] version to one this slurmrestd serves" in data["hint"]
    assert "versions" not in data["hint"] and "Slurm-web 5.2's default is 0.0.41" in data["hint"]


def test_json_failure(env, capsys):
    args, _sock, _, _ = env
    code = main([*args, "--json"])
    out, _err = capsys.readouterr()
    data = json.loads(out)
    assert code == 20 and data == {**data, "ok": False, "reason": "socket_missing",
                                   "exit_code": 20}
    assert data["hint"]


def test_stale_socket(env, capsys):
    args, sock, _, _ = env
    make_stale_socket(sock)
    assert main(args) == ExitCode.CONNECTION_REFUSED
    assert capsys.readouterr().err.startswith("ERROR: connection_refused: ")


def test_accounting_flag(env, capsys):
    args, sock, _, _ = env
    with FakeSlurmrestd(sock, slurmctld_key=KEY, slurmdbd_key=OTHER):
        assert main(args) == 31
        assert main([*args, "--accounting", "no"]) == 0


def test_no_decoy_flag(env, capsys):
    args, sock, _, _ = env
    with FakeSlurmrestd(sock, slurmctld_key=OTHER, mode="accept_any_token"):
        assert main([*args, "--json"]) == ExitCode.SLURMRESTD_ERROR
        data = json.loads(capsys.readouterr().out)
        assert (data["reason"], data["detail"]) == ("slurmrestd_error", "token_not_verified")
        assert main([*args, "--no-decoy"]) == 0


def test_missing_agent_ini_is_10(capsys, tmp_path):
    code = main(["check", "--agent-ini", str(tmp_path / "nope.ini")])
    out, err = capsys.readouterr()
    assert code == ExitCode.CONFIG_INVALID == 10
    assert out == "❌ connection failure\n" and err.startswith("ERROR: config_invalid: ")


def test_bad_agent_ini_json(env, capsys):
    args, _sock, _key, ini = env
    ini.write_text("[service]\n")
    assert main([*args, "--json"]) == 10
    assert json.loads(capsys.readouterr().out)["reason"] == "config_invalid"


def test_key_problem_exit_code(env, capsys):
    args, sock, key, _ = env
    os.chmod(key, 0o444)
    with FakeSlurmrestd(sock, slurmctld_key=KEY):
        assert main(args) == ExitCode.KEY_INSECURE
    assert "chmod go-rwx" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-1", "abc"])
def test_bad_timeout_is_usage(env, value, capsys):
    args, *_ = env
    with pytest.raises(SystemExit) as info:
        main([*args, "--timeout", value])
    assert info.value.code == 2


def test_key_option_signs_with_that_key(env, capsys, tmp_path):
    args, sock, _, _ = env
    previous = tmp_path / "previous.key"
    previous.write_bytes(OTHER)
    os.chmod(previous, 0o600)
    with FakeSlurmrestd(sock, slurmctld_key=KEY):
        assert main([*args, "--key", str(previous)]) == ExitCode.REJECTED_BY_SLURMCTLD
        capsys.readouterr()
    with FakeSlurmrestd(sock, slurmctld_key=OTHER):
        assert main([*args, "--key", str(previous)]) == 0
    out, err = capsys.readouterr()
    assert "SENTINEL" not in out + err


def test_key_option_refuses_a_key_readable_by_others(env, capsys, tmp_path):
    args, _, _, _ = env
    loose = tmp_path / "loose.key"
    loose.write_bytes(OTHER)
    os.chmod(loose, 0o644)
    assert main([*args, "--key", str(loose)]) == ExitCode.KEY_INSECURE
    assert main([*args, "--key", str(tmp_path / "absent")]) == ExitCode.KEY_MISSING
