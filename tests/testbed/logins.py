"""Whether every account the testbed's inventories use can log in to a host and run a command.

A booted host answers root over SSH seconds before it lets anyone else in: until
systemd-user-sessions.service has run, `/run/nologin` exists and PAM (pam_nologin, in the
account stack of /etc/pam.d/sshd) refuses every login but root's. Under load (five hosts booting
on two CPUs, other topologies still up) that gap grew long enough that tests as `admin` and
`nosudo` started inside it (issue 18; measured in tests/testbed/MEASUREMENTS.md). So a host is
ready only when each account has logged in and said who it is.

The rule is pure (`login_problem`, `unready`); the waiting over SSH is `wait_logins`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tests.testbed.accounts import ADMIN_USER, NOSUDO_USER
from tests.testbed.errors import TestbedError

# Every account an inventory of the testbed logs in as: root (`<topology>.py`), admin
# (`<topology>-sudo.py`) and nosudo (the tests' inventories of a user without sudo).
LOGIN_ACCOUNTS = ("root", ADMIN_USER, NOSUDO_USER)

# Run as each account: who it is, and whether the host still refuses non-root logins (for the
# error message; root is the account that can see it while others cannot log in).
PROBE = "id -un; test -e /run/nologin && echo nologin || true"

# Run as root on a host that kept refusing: what PAM and sshd made of the logins.
DIAGNOSE = ("ls -l /run/nologin /etc/nologin 2>&1; systemctl is-active systemd-user-sessions; "
            "journalctl -b -u ssh --no-pager -n 15 -o short-monotonic")


@dataclass(frozen=True)
class LoginResult:
    returncode: int
    stdout: str
    stderr: str


def login_problem(user: str, result: LoginResult) -> str | None:
    """None when `user` logged in and ran the probe as itself; otherwise what went wrong."""
    if result.returncode == 0:
        first = result.stdout.splitlines()[0].strip() if result.stdout.strip() else ""
        if first == user:
            return None
        return f"logged in but the command ran as {first or 'nobody'!r}, not {user!r}"
    said = " ".join(result.stderr.split())[-300:] or "no message"
    if result.returncode == 255:
        return f"login refused (ssh exit 255: {said})"
    return f"command failed (exit {result.returncode}: {said})"


def unready(results: dict[str, LoginResult]) -> dict[str, str]:
    """The accounts of one host that are not ready, with why; empty when the host is ready.

    An account that was not tried is not ready: a host is ready only when all were proven.
    """
    problems = {}
    for user in LOGIN_ACCOUNTS:
        if user not in results:
            problems[user] = "not tried"
            continue
        problem = login_problem(user, results[user])
        if problem is not None:
            problems[user] = problem
    return problems


Probe = Callable[[str, str], LoginResult]  # (host name, user) -> result


def wait_logins(hosts: Iterable[str], probe: Probe, timeout: float,
                interval: float = 0.5, clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep,
                diagnose: Callable[[str], str] | None = None) -> dict[str, float]:
    """Wait until every account logs in on every host; returns each host's wait in seconds.

    Raises TestbedError naming each host and account still refused after `timeout` seconds,
    with the last thing its login said and, from `diagnose(host)`, what the host says of it.
    """
    names = list(hosts)
    start = clock()
    deadline = start + timeout

    def one(host: str) -> tuple[float, dict[str, str]]:
        results: dict[str, LoginResult] = {}
        while True:
            for user in LOGIN_ACCOUNTS:
                if user not in results or login_problem(user, results[user]) is not None:
                    results[user] = probe(host, user)
            problems = unready(results)
            if not problems:
                return clock() - start, {}
            if clock() >= deadline:
                root = results.get("root")
                if root is not None and "nologin" in root.stdout.split():
                    problems = {u: f"{p}; /run/nologin still exists" for u, p in problems.items()}
                return clock() - start, problems
            sleep(interval)

    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        outcomes = dict(zip(names, pool.map(one, names), strict=True))
    failed = {h: p for h, (_, p) in outcomes.items() if p}
    if failed:
        details = "; ".join(f"{user}@{host}: {why}" for host, problems in failed.items()
                            for user, why in problems.items())
        if diagnose is not None:
            details += "".join(f"\n--- {host} ---\n{diagnose(host)}" for host in failed)
        raise TestbedError(
            f"not every account could log in within {timeout:.0f} s: {details}\nInspect with "
            "`python -m tests.testbed ssh HOST -- journalctl -b -u ssh -u "
            "systemd-user-sessions --no-pager` (SRA_TESTBED_SSH_TIMEOUT raises the wait)"
        )
    return {h: waited for h, (waited, _) in outcomes.items()}
