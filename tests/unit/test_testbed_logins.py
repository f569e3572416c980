"""The testbed's readiness rule for logins (tests/testbed/logins.py): a host is ready only when
root, admin and nosudo have each logged in and run a command as themselves."""

from __future__ import annotations

import pytest

from tests.testbed.errors import TestbedError
from tests.testbed.logins import LOGIN_ACCOUNTS, LoginResult, login_problem, unready, wait_logins

OK = {user: LoginResult(0, f"{user}\n", "") for user in LOGIN_ACCOUNTS}
# What OpenSSH's client says while pam_nologin refuses a non-root account (measured on a
# booting trixie host: sshd logs "Access denied for user nosudo by PAM account configuration").
REFUSED = LoginResult(255, "", "nosudo@10.213.47.43: Permission denied (publickey).\n")


def test_every_account_logged_in_as_itself_is_ready():
    assert unready(OK) == {}


def test_a_host_whose_non_root_login_is_refused_is_not_ready():
    results = {**OK, "nosudo": REFUSED}
    problems = unready(results)
    assert list(problems) == ["nosudo"]
    assert "login refused" in problems["nosudo"] and "Permission denied" in problems["nosudo"]


def test_root_alone_is_not_enough():
    assert set(unready({"root": OK["root"]})) == {"admin", "nosudo"}


def test_a_login_that_ran_as_someone_else_is_not_ready():
    assert "ran as 'root'" in login_problem("admin", LoginResult(0, "root\n", ""))


def test_a_failing_command_after_login_is_not_ready():
    assert "command failed (exit 1" in login_problem("admin", LoginResult(1, "", "boom"))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_wait_logins_waits_until_nologin_is_gone():
    clock = FakeClock()

    def probe(host: str, user: str) -> LoginResult:
        if user != "root" and clock.now < 3:
            return REFUSED
        return OK[user]

    waited = wait_logins(["beta-rest"], probe, timeout=10, clock=clock, sleep=clock.sleep)
    assert waited["beta-rest"] == pytest.approx(3.0)


def test_wait_logins_names_the_host_and_account_still_refused():
    clock = FakeClock()

    def probe(host: str, user: str) -> LoginResult:
        if host == "beta-rest" and user == "nosudo":
            return REFUSED
        if user == "root":
            return LoginResult(0, "root\nnologin\n", "") if host == "beta-rest" else OK["root"]
        return OK[user]

    with pytest.raises(TestbedError) as err:
        wait_logins(["beta-ctl", "beta-rest"], probe, timeout=5, clock=clock, sleep=clock.sleep)
    text = str(err.value)
    assert "nosudo@beta-rest: login refused" in text
    assert "/run/nologin still exists" in text
    assert "beta-ctl" not in text and "admin@" not in text


def test_a_refusal_that_lasts_brings_the_hosts_own_account_of_it():
    clock = FakeClock()

    def probe(host: str, user: str) -> LoginResult:
        return OK[user] if user == "root" else REFUSED

    with pytest.raises(TestbedError) as err:
        wait_logins(["beta-rest"], probe, timeout=2, clock=clock, sleep=clock.sleep,
                    diagnose=lambda host: f"{host}: Access denied by PAM account configuration")
    assert "--- beta-rest ---\nbeta-rest: Access denied by PAM" in str(err.value)


def test_every_host_settles_the_unit_that_lets_non_root_accounts_in():
    from tests.testbed.provision import host_units
    from tests.testbed.topology import load_catalog

    for host in load_catalog().all_hosts:
        assert "systemd-user-sessions.service" in host_units(host), host.name


def test_sshd_does_not_penalise_the_machine_where_openssh_knows_how_to():
    """OpenSSH >= 9.8 (trixie, forky) locks out an address after failed logins, root's too;
    bullseye's and bookworm's sshd would refuse to start on the option."""
    from tests.testbed.hostconfig import SSHD_DROPIN, host_files
    from tests.testbed.topology import load_catalog

    catalog = load_catalog()
    for host in catalog.all_hosts:
        files = {f.path: f for f in host_files(catalog, host, b"m" * 1024, "ssh-ed25519 AAAA k",
                                              "0" * 32)}
        if host.release in ("trixie", "forky"):
            assert files[SSHD_DROPIN].content.strip().endswith(
                f"PerSourcePenaltyExemptList {catalog.network.gateway}/32"), host.name
        else:
            assert SSHD_DROPIN not in files, host.name
