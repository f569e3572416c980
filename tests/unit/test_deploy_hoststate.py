import subprocess

from deploys.lib.hoststate import UnitState, parse_survey, survey_script


def test_parse_survey_output():
    lines = [
        "python 3.13",
        "machine x86_64",
        "tool abcdef",
        "file|/var/spool/slurm/jwt_hs256.key|1|slurm|slurm|600|regular file|" + "a" * 64,
        "file|/var/lib/slurm-web/slurmrestd.key|0",
        "file|/etc/x|1|root|root|755|directory|",
        "user slurm 1",
        "user slurm-web 0",
        "group slurm 1",
        "unit Id=slurmrestd.service",
        "unit LoadState=loaded",
        "unit ActiveState=inactive",
        "unit UnitFileState=disabled",
        "unit ",
        "unit Id=slurm-web-agent.service",
        "unit LoadState=loaded",
        "unit ActiveState=active",
        "unit UnitFileState=enabled",
    ]
    hs = parse_survey(lines)
    assert (hs.python, hs.machine, hs.tool_digest) == ("3.13", "x86_64", "abcdef")
    key = hs.file("/var/spool/slurm/jwt_hs256.key")
    assert key.matches("a" * 64, "slurm", "slurm", 0o600)
    assert not key.matches("b" * 64, "slurm", "slurm", 0o600)
    assert not key.matches(None, "slurm", "slurm", 0o400)
    assert not hs.file("/var/lib/slurm-web/slurmrestd.key").exists
    assert not hs.file("/etc/x").matches(None, "root", "root", 0o755)  # not a regular file
    assert not hs.file("/never/surveyed").exists
    assert hs.users == {"slurm": True, "slurm-web": False}
    assert hs.unit("slurmrestd.service").exists
    assert not hs.unit("slurmrestd.service").in_use
    assert hs.unit("slurm-web-agent.service").in_use
    assert not hs.unit("slurm-web-agent-uwsgi.service").exists


def test_masked_unit_is_not_in_use():
    assert not UnitState("a.service", load="masked", active="inactive", unit_file="masked").in_use


def test_survey_script_runs_and_never_prints_content(tmp_path):
    secret = tmp_path / "key"
    secret.write_bytes(b"S" * 40)
    secret.chmod(0o600)
    odd = tmp_path / "it's a name"
    odd.write_text("x")
    script = survey_script([str(secret), str(odd), str(tmp_path / "none")], [], ["root"],
                           ["root"], str(tmp_path))
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    assert "SSSS" not in out
    hs = parse_survey(out.splitlines())
    assert hs.file(str(secret)).mode == 0o600
    assert hs.file(str(secret)).sha256 and len(hs.file(str(secret)).sha256) == 64
    assert hs.file(str(odd)).exists
    assert not hs.file(str(tmp_path / "none")).exists
    assert hs.users["root"] is True


def test_survey_finds_the_jwt_plugin_through_plugindir(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    conf = tmp_path / "slurm.conf"
    conf.write_text(f"ClusterName=x\n  pluginDir = /nonexistent:{plugins}\n")
    script = survey_script([], [], [], [], str(tmp_path), slurm_conf=str(conf))
    run = lambda: parse_survey(  # noqa: E731
        subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout.splitlines())
    assert run().jwt_plugin == "" or not run().jwt_plugin.startswith(str(tmp_path))
    (plugins / "auth_jwt.so").write_bytes(b"")
    assert run().jwt_plugin == f"{plugins}/auth_jwt.so"
