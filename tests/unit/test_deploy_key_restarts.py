"""slurmdbd and slurmctld read the key's content, at start: only a content change restarts
them. A key whose owner or mode is repaired keeps its content and restarts nothing (fake hosts
running the real deploy)."""

from __future__ import annotations

import base64

from tests.unit.fakedeploy import KEY, deploy, deployed_host, sha

NEW_KEY = b"n" * 32


def restarts(run, host: str) -> list[str]:
    return [c for c in run.commands.get(host, [])
            if "restart slurmctld" in c or "restart slurmdbd" in c]


def test_a_repaired_mode_and_owner_restart_nothing(tmp_path):
    host = deployed_host()
    host.files[KEY] = ("root", "slurm", 0o640, host.files[KEY][3])
    run = deploy(tmp_path, {"hpc1": host})
    assert run.returncode == 0, run.output[-3000:]
    repair = run.ran("@fake/hpc1", f"key ensure --path {KEY}")
    assert len(repair) == 1, run.commands["@fake/hpc1"]
    assert "--owner slurm --group slurm --mode 0600" in run.commands["@fake/hpc1"][repair[0]]
    assert restarts(run, "@fake/hpc1") == []


def split(db_key: tuple[str, str, int, str]) -> dict:
    ctl = deployed_host(roles=("slurmctld", "compute"))
    db = deployed_host(roles=("slurmdbd",))
    db.files[KEY] = db_key
    rest = deployed_host(roles=("slurmrestd",))
    return {"ctl": ctl, "db": db, "rest": rest}


def test_a_pushed_key_with_the_right_content_is_only_chowned(tmp_path):
    hosts = split(("root", "root", 0o600, "a" * 64))
    run = deploy(tmp_path, hosts)
    assert run.returncode == 0, run.output[-3000:]
    assert run.ran("@fake/db", "key install") == []
    assert len(run.ran("@fake/db", f"key ensure --path {KEY}")) == 1
    assert restarts(run, "@fake/db") == [] and restarts(run, "@fake/ctl") == []


def test_a_pushed_key_with_other_content_is_installed_and_restarts_slurmdbd(tmp_path):
    hosts = split(("slurm", "slurm", 0o600, "b" * 64))
    # The controller's key, read (base64 over SSH) to be pushed to the slurmdbd host.
    hosts["ctl"] = deployed_host(roles=("slurmctld", "compute"), key_sha=sha(NEW_KEY),
                                 responses={"key export": base64.b64encode(NEW_KEY).decode()})
    hosts["rest"] = deployed_host(roles=("slurmrestd",), key_sha=sha(NEW_KEY))
    run = deploy(tmp_path, hosts)
    assert run.returncode == 0, run.output[-3000:]
    assert len(run.ran("@fake/db", "key install")) == 1
    assert len(restarts(run, "@fake/db")) == 1
    assert "restart slurmdbd.service" in restarts(run, "@fake/db")[0]


def test_a_re_run_compares_the_pushed_keys_with_the_controllers_own_survey(tmp_path):
    """The controller's survey already holds its key's hash: the other hosts' key and copy are
    compared with it, without another look at the controller; and the survey brings the tool's
    plan along: one command there in a re-run, not 4."""
    hosts = split(("slurm", "slurm", 0o600, "a" * 64))
    run = deploy(tmp_path, hosts)
    assert run.returncode == 0, run.output[-3000:]
    ctl = run.commands["@fake/ctl"]
    assert len(ctl) == 1 and "export LC_ALL=C" in ctl[0] and "slurmrestd-access plan" in ctl[0]
    assert run.ran("@fake/db", "key install") == [] and run.ran("@fake/rest", "key install") == []


def test_the_plan_of_a_tool_the_deploy_replaces_is_not_used(tmp_path):
    """The survey brought the old tool's plan; once the new tool is installed, its own plan is
    asked for, after the install."""
    hosts = {"hpc1": deployed_host(tool="0" * 16)}
    run = deploy(tmp_path, hosts)
    assert run.returncode == 0, run.output[-3000:]
    commands = run.commands["@fake/hpc1"]
    install = next(i for i, c in enumerate(commands) if "tar -xzf" in c)
    plans = [i for i, c in enumerate(commands)
             if c.startswith("/usr/local/bin/slurmrestd-access plan")]
    assert plans and plans[0] > install, commands
