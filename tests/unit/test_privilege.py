"""What sudo answered, classified (pure): the messages are sudo 1.9's own, as Debian ships it."""

from __future__ import annotations

from slurmrestd_access.privilege import (
    Probe,
    classify_probe,
    classify_sudo_failure,
    not_root,
    probe_error,
    sudo_wrapped,
)


def probe(rc: int, *said: str, user: str = "admin") -> Probe:
    return classify_probe([f"rc={rc}", *(f"said: {s}" for s in said), f"user={user}"])


def test_sudo_without_a_password_is_ok():
    assert probe(0, "") == Probe("ok", "admin", "")
    assert probe_error("h", probe(0), password_given=False, interactive=False) is None


def test_sudo_asking_for_a_password():
    p = probe(1, "sudo: a password is required")
    assert p.kind == "password"
    assert probe_error("h", p, password_given=True, interactive=False) is None
    assert probe_error("h", p, password_given=False, interactive=True) is None  # pyinfra asks
    error = probe_error("h", p, password_given=False, interactive=False)
    assert error.startswith("sudo on h asks admin for a password and none was given")
    assert probe(1, "sudo-rs: interactive authentication is required").kind == "password"


def test_sudo_missing_or_refusing():
    missing = probe(127, "sh: 1: sudo: not found")
    assert missing.kind == "missing"
    assert "sudo is not installed on h" in probe_error("h", missing, True, True)
    refused = probe(1, "Sorry, user admin may not run sudo on h.")
    assert refused.kind == "refused"
    assert probe_error("h", refused, True, True) == (
        "admin may not become root with sudo on h (sudo said: Sorry, user admin may not run "
        "sudo on h.): grant it in /etc/sudoers.d/ (see docs/sudo.md), or log in as root")


def test_no_answer_at_all_is_not_taken_for_success():
    assert classify_probe([]).kind == "refused"


def test_a_failure_through_sudo_with_a_password():
    wrong = classify_sudo_failure("h", "admin", [
        "Sorry, try again.", "Sorry, try again.", "sudo: 3 incorrect password attempts"])
    assert wrong.startswith("sudo on h did not accept the password given for admin")
    refused = classify_sudo_failure("h", "nosudo", [
        "nosudo is not in the sudoers file.  This incident will be reported."])
    assert refused.startswith("nosudo may not become root with sudo on h")
    assert "sudo is not installed on h" in classify_sudo_failure("h", "admin", [
        "sh: 1: sudo: not found"])
    assert "no answer" in classify_sudo_failure("h", "admin", [])


def test_the_survey_through_sudo_n_keeps_sudos_words_apart(tmp_path):
    """Run for real with a stand-in `sudo` on PATH: the script's stdout comes through as is,
    sudo's refusal comes back prefixed (so pyinfra never sees its cue to prompt), with rc."""
    import os
    import subprocess

    fake = tmp_path / "sudo"
    fake.write_text("#!/bin/sh\necho 'sudo: a password is required' >&2\nexit 1\n")
    fake.chmod(0o755)
    out = subprocess.run(["sh", "-c", sudo_wrapped("echo uid 0")], capture_output=True,
                         text=True, env={**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"})
    lines = out.stdout.splitlines()
    assert "sudo: a password is required" not in lines
    assert classify_probe(lines).kind == "password"
    fake.write_text('#!/bin/sh\nshift 4\nexec sh -c "$1"\n')  # sudo -H -n sh -c SCRIPT
    out = subprocess.run(["sh", "-c", sudo_wrapped("echo uid 0; echo oops >&2")],
                         capture_output=True, text=True,
                         env={**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"})
    lines = out.stdout.splitlines()
    assert "uid 0" in lines and classify_probe(lines).kind == "ok"


def test_root_or_not():
    assert not_root("h", 0) is None and not_root("h", None) is None
    assert not_root("h", 1000).startswith("commands on h run as uid 1000, not as root")
