import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slurmrestd_access.hoststate import UnitState, parse_survey, survey_script


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


def _attacked_paths(tmp_path):
    """What an account owning the key's directory can leave at key paths (issue 21)."""
    other = tmp_path / "shadow"
    other.write_bytes(b"O" * 40)
    other.chmod(0o600)
    linked, fifo, symlink = tmp_path / "linked.key", tmp_path / "fifo.key", tmp_path / "sym.key"
    os.link(other, linked)
    os.mkfifo(fifo, 0o600)
    symlink.symlink_to(other)
    return [str(linked), str(fifo), str(symlink)]


def _survey(paths, tool=""):
    script = survey_script(paths, [], [], [], "/nonexistent", keys=tuple(paths), tool=tool)
    if tool:
        assert shutil.which(tool), tool
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert "OOOO" not in done.stdout
    return parse_survey(done.stdout.splitlines())


@pytest.mark.parametrize("through_tool", [True, False])
def test_the_survey_neither_hashes_nor_blocks_on_attacked_key_paths(tmp_path, through_tool):
    """Through the installed tool (`key fingerprint`), or before it is installed through the
    bounded shell fallback: a hard link is reported with its links and no hash, a FIFO is
    not opened, a symlink not followed; none of them matches a key."""
    tool = str(Path(sys.executable).parent / "slurmrestd-access") if through_tool else ""
    linked, fifo, symlink = _attacked_paths(tmp_path)
    hs = _survey([linked, fifo, symlink], tool)
    assert (hs.file(linked).kind, hs.file(linked).links, hs.file(linked).sha256) == \
        ("regular file", 2, None)
    assert hs.file(fifo).exists and hs.file(fifo).kind != "regular file"
    assert hs.file(fifo).sha256 is None
    assert hs.file(symlink).kind == "symbolic link" and hs.file(symlink).sha256 is None
    for path in (linked, fifo, symlink):
        assert not hs.file(path).matches(None, "root", "root", 0o600)


def test_the_survey_reads_a_key_through_the_installed_tool(tmp_path):
    key = tmp_path / "jwt.key"
    key.write_bytes(b"K" * 40)
    key.chmod(0o600)
    tool = str(Path(sys.executable).parent / "slurmrestd-access")
    script = survey_script([str(key)], [], [], [], "/nonexistent", keys=(str(key),), tool=tool)
    assert "key fingerprint --json --path" in script
    hs = _survey([str(key)], tool)
    assert hs.file(str(key)).sha256 == hashlib.sha256(b"K" * 40).hexdigest()
    assert hs.file(str(key)).kind == "regular file" and hs.file(str(key)).mode == 0o600


def test_the_survey_reads_the_release_of_the_installed_tool(tmp_path):
    venv = tmp_path / "venv-abc"
    (venv / "lib" / "python3.11" / "site-packages" / "slurmrestd_access-0.2.0.dist-info").mkdir(
        parents=True)
    (tmp_path / "current").symlink_to(venv)
    (tmp_path / "INSTALLED").write_text("abc\n")
    script = survey_script([], [], [], [], str(tmp_path))
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    hs = parse_survey(out.splitlines())
    assert (hs.tool_digest, hs.tool_version) == ("abc", "0.2.0")
    bare = subprocess.run(["sh", "-c", survey_script([], [], [], [], str(tmp_path / "none"))],
                          capture_output=True, text=True, check=True).stdout
    assert parse_survey(bare.splitlines()).tool_version == ""
