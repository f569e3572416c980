"""What sudo answered, classified (pure): the messages are sudo 1.9's own, as Debian ships it."""

from __future__ import annotations

from deploys.lib.privilege import Probe, classify_probe, classify_sudo_run, not_root, probe_error

MARK = "__slurmrestd_access_uid="


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


def test_the_run_through_sudo_with_a_password():
    assert classify_sudo_run("h", "admin", True, [f"{MARK}0"], []) is None
    assert "run as uid 1001, not as root" in classify_sudo_run("h", "admin", True,
                                                                [f"{MARK}1001"], [])
    wrong = classify_sudo_run("h", "admin", False, [], [
        "Sorry, try again.", "Sorry, try again.", "sudo: 3 incorrect password attempts"])
    assert wrong.startswith("sudo on h did not accept the password given for admin")
    refused = classify_sudo_run("h", "nosudo", False, [], [
        "nosudo is not in the sudoers file.  This incident will be reported."])
    assert refused.startswith("nosudo may not become root with sudo on h")
    assert "no answer" in classify_sudo_run("h", "admin", False, [], [])


def test_root_or_not():
    assert not_root("h", 0) is None and not_root("h", None) is None
    assert not_root("h", 1000).startswith("commands on h run as uid 1000, not as root")
