"""Over an SSH user that is not root: sudo on every command, proven before the first one that
needs root, and one clear error when it cannot work (fake hosts running the real deploy)."""

from __future__ import annotations

import base64

from tests.unit.fakedeploy import deploy, deployed_host, sha

NEW_KEY = b"n" * 32
SUDO_N = "sudo -H -n sh -c"  # the survey through sudo, run by the deploy itself
SURVEY = "export LC_ALL=C"


def refusal(*said: str, user: str = "admin") -> list[str]:
    """The survey's answer when `sudo -n` refuses (see privilege.sudo_wrapped)."""
    return [f"user={user}", *(f"said: {line}" for line in said), "rc=1"]


def split_cluster(data: dict, **rest_overrides) -> dict:
    """ctl holds the key; db's copy differs (so it is pushed); rest gets the agent's copy."""
    ctl = deployed_host(roles=("slurmctld", "compute"), key_sha=sha(NEW_KEY), data=dict(data),
                        responses={"key export": base64.b64encode(NEW_KEY).decode()})
    db = deployed_host(roles=("slurmdbd",), data=dict(data))
    rest = deployed_host(roles=("slurmrestd",), data=dict(data), **rest_overrides)
    return {"ctl": ctl, "db": db, "rest": rest}


def assert_all_under_sudo(run, hosts=("ctl", "db", "rest")) -> None:
    for name in hosts:
        commands, sudo = run.commands[f"@fake/{name}"], run.sudo[f"@fake/{name}"]
        # First the survey through `sudo -n`, run as the SSH user (so that sudo's refusal is
        # data, not pyinfra's prompt): it proves sudo at no extra cost; then only pyinfra's sudo.
        assert SUDO_N in commands[0] and SURVEY in commands[0] and sudo[0] is False, commands[:2]
        assert len([c for c in commands if SUDO_N in c]) == 1
        assert all(sudo[1:]), [c for c, s in zip(commands, sudo, strict=True) if not s]


def test_sudo_from_host_data_reaches_every_command_the_key_transfers_included(tmp_path):
    run = deploy(tmp_path, split_cluster({"_sudo": True}))
    assert run.returncode == 0, run.output[-3000:]
    assert_all_under_sudo(run)
    # The key's transfers run in FunctionCommands, where pyinfra adds no sudo by itself.
    assert run.ran("@fake/ctl", "key export") and run.ran("@fake/db", "key install")
    assert run.ran("@fake/rest", "key install --path /var/lib/slurm-web/slurmrestd.key")


def test_sudo_from_the_command_line_is_the_same(tmp_path):
    run = deploy(tmp_path, split_cluster({}), "--sudo")
    assert run.returncode == 0, run.output[-3000:]
    assert_all_under_sudo(run)


def test_as_root_nothing_goes_through_sudo(tmp_path):
    run = deploy(tmp_path, split_cluster({}))
    assert run.returncode == 0, run.output[-3000:]
    assert not any("sudo" in c for cs in run.commands.values() for c in cs)
    assert not any(s for ss in run.sudo.values() for s in ss)


def test_a_non_root_user_without_sudo_stops_at_the_survey_with_one_clear_error(tmp_path):
    hosts = {"hpc1": deployed_host(uid=1000)}
    run = deploy(tmp_path, hosts)
    assert run.returncode != 0
    assert "commands on @fake/hpc1 run as uid 1000, not as root" in run.output
    assert "--sudo" in run.output and "_sudo=True" in run.output
    assert run.output.count("run as uid 1000") <= 2, run.output[-3000:]
    # Only the survey ran: nothing was changed.
    assert [c for c in run.commands["@fake/hpc1"] if "export LC_ALL=C" not in c] == []


def test_sudo_that_asks_a_password_nobody_gave_stops_before_anything_else(tmp_path):
    hosts = split_cluster({"_sudo": True},
                          survey_override=refusal("sudo: a password is required"))
    run = deploy(tmp_path, hosts)
    assert run.returncode != 0
    assert "sudo on @fake/rest asks admin for a password and none was given" in run.output
    assert "--same-sudo-password" in run.output and "NOPASSWD" in run.output
    assert len(run.commands["@fake/rest"]) == 1  # the survey that found it out, nothing more
    # Its cluster stops with it: nothing is written on the other hosts either.
    for name in ("ctl", "db"):
        assert not run.ran(f"@fake/{name}", "key install")
        assert not run.ran(f"@fake/{name}", "restart")


def test_a_sudo_password_from_host_data_goes_to_pyinfras_sudo_from_the_first_command(tmp_path):
    data = {"_sudo": True, "_sudo_password": "s3cret-pw"}
    run = deploy(tmp_path, split_cluster(data))
    assert run.returncode == 0, run.output[-3000:]
    for name in ("ctl", "db", "rest"):
        commands = run.commands[f"@fake/{name}"]
        assert SURVEY in commands[0] and not any(SUDO_N in c for c in commands)
        assert all(run.sudo[f"@fake/{name}"])
    assert "s3cret-pw" not in run.output


def test_a_user_sudo_refuses_gets_what_sudo_said_and_the_fix(tmp_path):
    data = {"_sudo": True, "_sudo_password": "pw", "ssh_user": "nosudo"}
    hosts = split_cluster(data, survey_override={
        "success": False, "stderr": "nosudo is not in the sudoers file."})
    run = deploy(tmp_path, hosts)
    assert run.returncode != 0
    assert ("nosudo may not become root with sudo on @fake/rest (sudo said: nosudo is not in "
            "the sudoers file.)") in run.output
    assert "docs/sudo.md" in run.output
    assert len(run.commands["@fake/rest"]) == 1  # the survey that found it out, nothing more


def test_a_dry_run_says_it_once(tmp_path):
    hosts = {"hpc1": deployed_host(data={"_sudo": True}, survey_override=refusal(
        "Sorry, user admin may not run sudo on hpc1."))}
    run = deploy(tmp_path, hosts, "--dry")
    assert "admin may not become root with sudo on @fake/hpc1" in run.output
    assert run.output.count("may not become root") == 1, run.output[-3000:]


def test_sudo_to_another_user_than_root_is_refused_before_any_command(tmp_path):
    hosts = {"hpc1": deployed_host(data={"_sudo": True, "_sudo_user": "slurm"})}
    run = deploy(tmp_path, hosts)
    assert run.returncode != 0
    assert "sudo on @fake/hpc1 is set to become 'slurm': the deploy's commands must run as " \
        "root" in run.output
    assert run.commands.get("@fake/hpc1", []) == []
