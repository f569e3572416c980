"""Which Python on a cluster host runs the host tool (3.9 or later). Pure.

EL8's python3 is 3.6 and EL9's 3.9, while both offer newer interpreters as separate packages
(python3.11 from 8.8 and 9.2, python3.12 from 8.10 and 9.4: Red Hat's AppStream
life cycle): a host whose
`python3` is too old but has a newer `python3.X` installed uses that one; without one the deploy
stops and names the package to install.
"""

from __future__ import annotations

from dataclasses import dataclass

MINIMUM = (3, 9)
# The python3.X names the survey looks for, newest first.
CANDIDATES = ("3.14", "3.13", "3.12", "3.11", "3.10", "3.9")
_RHEL_LIKE = {"rhel", "centos", "fedora", "rocky", "almalinux", "ol", "amzn"}
_DEBIAN_LIKE = {"debian", "ubuntu"}


class HostPythonError(Exception):
    """No usable Python on the host; the message says what to install."""


@dataclass(frozen=True)
class HostPython:
    command: str  # what the host runs: "python3" or "python3.11"
    version: str  # "3.11": the wheels are fetched for it


def _version(text: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in text.split(".")[:2])
    except ValueError:
        return None


def install_hint(os_ids: list[str]) -> str:
    ids = {i.lower() for i in os_ids}
    if ids & _RHEL_LIKE:
        return "dnf install python3.11"
    if ids & _DEBIAN_LIKE:
        return "apt install python3 (Debian 11 or later, Ubuntu 22.04 or later ship 3.9+)"
    return "install Python 3.9 or later as python3 or python3.X"


def choose(python3: str, others: list[str], os_ids: list[str]) -> HostPython:
    """`python3` when it is new enough, else the newest installed python3.X that is."""
    minimum = ".".join(map(str, MINIMUM))
    default = _version(python3) if python3 else None
    if default is not None and default >= MINIMUM:
        return HostPython("python3", python3)
    usable = [v for v in others if (_version(v) or (0,)) >= MINIMUM]
    if usable:
        best = max(usable, key=lambda v: _version(v) or (0,))
        return HostPython(f"python{best}", best)
    found = f"python3 is {python3}" if python3 else "python3 is not installed"
    raise HostPythonError(
        f"{found} and no python3.X of {minimum} or later is installed; the slurmrestd-access host "
        f"tool needs Python {minimum} or later: {install_hint(os_ids)}, then run the deploy again"
    )
