"""Over an SSH user that is not root: sudo on every command, proven before the first one that
needs root, and one clear error when it cannot work (fake hosts running the real deploy)."""

from __future__ import annotations

import base64

from tests.unit.fakedeploy import deploy, deployed_host, sha

NEW_KEY = b"n" * 32
PROBE = "sudo -n true"
UID_PROBE = "__slurmrestd_access_uid="


def split_cluster(data: dict, **rest_overrides) -> dict:
    """ctl holds the key; db's copy differs (so it is pushed); rest gets the agent's copy."""
    ctl = deployed_host(roles=("slurmctld", "compute"), key_sha=sha(NEW_KEY), data=dict(data),
                        responses={"base64 -w0": base64.b64encode(NEW_KEY).decode()})
    db = deployed_host(roles=("slurmdbd",), data=dict(data))
    rest = deployed_host(roles=("slurmrestd",), data=dict(data), **rest_overrides)
    return {"ctl": ctl, "db": db, "rest": rest}


def assert_all_under_sudo(run, hosts=("ctl", "db", "rest")) -> None:
    for name in hosts:
        commands, sudo = run.commands[f"@fake/{name}"], run.sudo[f"@fake/{name}"]
        # First the probe, as the SSH user (sudo itself is what it tests); then only sudo.
        assert PROBE in commands[0] and sudo[0] is False, commands[:2]
        assert len([c for c in commands if PROBE in c]) == 1
        assert all(sudo[1:]), [c for c, s in zip(commands, sudo, strict=True) if not s]


def test_sudo_from_host_data_reaches_every_command_the_key_transfers_included(tmp_path):
    run = deploy(tmp_path, split_cluster({"_sudo": True}))
    assert run.returncode == 0, run.output[-3000:]
    assert_all_under_sudo(run)
    # The key's transfers run in FunctionCommands, where pyinfra adds no sudo by itself.
    assert run.ran("@fake/ctl", "base64 -w0") and run.ran("@fake/db", "key install")
    assert run.ran("@fake/rest", "key install --path /var/lib/slurm-web/slurmrestd.key")


def test_sudo_from_the_command_line_is_the_same(tmp_path):
    run = deploy(tmp_path, split_cluster({}), "--sudo")
    assert run.returncode == 0, run.output[-3000:]
    assert_all_under_sudo(run)


def test_as_root_no_probe_is_run(tmp_path):
    run = deploy(tmp_path, split_cluster({}))
    assert run.returncode == 0, run.output[-3000:]
    assert not any(PROBE in c for cs in run.commands.values() for c in cs)
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
    hosts = split_cluster({"_sudo": True}, responses={
        PROBE: ["rc=1", "said: sudo: a password is required", "user=admin"]})
    run = deploy(tmp_path, hosts)
    assert run.returncode != 0
    assert "sudo on @fake/rest asks admin for a password and none was given" in run.output
    assert "--same-sudo-password" in run.output and "NOPASSWD" in run.output
    assert run.commands["@fake/rest"] == [c for c in run.commands["@fake/rest"] if PROBE in c]
    # Its cluster stops with it: nothing is written on the other hosts either.
    for name in ("ctl", "db"):
        assert not run.ran(f"@fake/{name}", "key install")
        assert not run.ran(f"@fake/{name}", "restart")


def test_a_sudo_password_from_host_data_is_proven_once_then_used(tmp_path):
    data = {"_sudo": True, "_sudo_password": "s3cret-pw"}
    hosts = split_cluster(data, responses={
        PROBE: ["rc=1", "said: sudo: a password is required", "user=admin"],
        UID_PROBE: [f"{UID_PROBE}0"]})
    run = deploy(tmp_path, hosts)
    assert run.returncode == 0, run.output[-3000:]
    rest = run.commands["@fake/rest"]
    assert len(run.ran("@fake/rest", UID_PROBE)) == 1
    assert run.sudo["@fake/rest"][rest.index(next(c for c in rest if UID_PROBE in c))]
    assert "s3cret-pw" not in run.output


def test_a_user_sudo_refuses_gets_what_sudo_said_and_the_fix(tmp_path):
    data = {"_sudo": True, "_sudo_password": "pw"}
    hosts = split_cluster(data, responses={
        PROBE: ["rc=1", "said: sudo: a password is required", "user=nosudo"],
        UID_PROBE: {"success": False, "stderr": "nosudo is not in the sudoers file."}})
    run = deploy(tmp_path, hosts)
    assert run.returncode != 0
    assert ("nosudo may not become root with sudo on @fake/rest (sudo said: nosudo is not in "
            "the sudoers file.)") in run.output
    assert "docs/sudo.md" in run.output
    assert not run.ran("@fake/rest", "export LC_ALL=C")  # not even the survey under sudo


def test_a_dry_run_says_it_once(tmp_path):
    hosts = {"hpc1": deployed_host(data={"_sudo": True}, responses={
        PROBE: ["rc=1", "said: Sorry, user admin may not run sudo on hpc1.", "user=admin"]})}
    run = deploy(tmp_path, hosts, "--dry")
    assert "admin may not become root with sudo on @fake/hpc1" in run.output
    assert run.output.count("may not become root") == 1, run.output[-3000:]
