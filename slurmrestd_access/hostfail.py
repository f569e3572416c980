"""A failure of one host fails that host only, never the whole run.

pyinfra 3.10 treats an OperationError raised by an operation's body as a bug of the deploy:
the greenlet's exception propagates out of `run_ops` and the WHOLE run stops, every other
cluster included (measured with the @fake connector: the remaining operations never ran on the
other hosts). A failed *command*, on the other hand, fails only its host. So every operation of
the deploy is wrapped by `host_local`, which turns an OperationError into a command that logs
the message and fails: that host stops, the others (other clusters) go on, and pyinfra still
exits non-zero because the host is in `state.failed_hosts`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from pyinfra import logger
from pyinfra.api import FunctionCommand, OperationError


class ClusterStopped(OperationError):
    """This host stops because another host of its cluster failed (not a cause of its own)."""


class HostBlocked(OperationError):
    """This host cannot be worked on at all (e.g. its commands cannot run as root): every
    operation of the host raises it, and it is said once."""


@dataclass(frozen=True)
class Failure:
    reason: str
    stopped_by_cluster: bool


# host name -> its first failure of this run, read by the summary at the end of the run.
failures: dict[str, Failure] = {}


def record_failure(host: Any, message: str, stopped_by_cluster: bool = False) -> bool:
    """Log why this host fails and keep it for the summary; False = the command failed."""
    failures.setdefault(host.name, Failure(message, stopped_by_cluster))
    host.log_styled(message, fg="red", log_func=logger.error)
    return False  # a False status fails this host, and only this host


def _fail(state: Any, host: Any, message: str, stopped_by_cluster: bool) -> bool:
    return record_failure(host, message, stopped_by_cluster)


def fail_command(exc: OperationError) -> FunctionCommand:
    return FunctionCommand(_fail, (str(exc), isinstance(exc, ClusterStopped)), {})


_said: set[tuple[str, str]] = set()


def host_local(func: Callable[..., Generator]) -> Callable[..., Generator]:
    """Wrap an operation body (under @operation) so that its OperationError fails this host only.

    While planning (--dry, change detection), the failure shows as a change of this operation and
    its message is logged; at execution the host fails with it.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Generator:
        try:
            yield from func(*args, **kwargs)
        except OperationError as exc:
            from pyinfra import host, state

            said = (host.name, str(exc))
            if isinstance(exc, HostBlocked) and said in _said:
                yield fail_command(exc)  # already said; the host stops at its first one
                return
            _said.add(said)
            if not state.is_executing:
                host.log_styled(f"would fail: {exc}", fg="red", log_func=logger.warning)
            yield fail_command(exc)

    return wrapper
