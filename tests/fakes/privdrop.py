"""Run a function as user `nobody` in a forked child, for permission tests run as root.

A fork (not a new interpreter) because `nobody` cannot reach root's Python installation; the
child keeps the already imported modules, drops to nobody, runs the function and sends back its
(JSON-able) return value.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from typing import Any

NOBODY_UID = 65534
NOBODY_GID = 65534


def can_drop_privileges() -> bool:
    return os.geteuid() == 0


def run_as_nobody(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: we exec nothing
        pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(NOBODY_GID)
            os.setuid(NOBODY_UID)
            try:
                payload = {"value": func(*args, **kwargs)}
            except BaseException as exc:  # report any failure to the parent
                payload = {"error": f"{type(exc).__name__}: {exc}"}
            with os.fdopen(write_fd, "w") as out:
                json.dump(payload, out)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as inp:
        text = inp.read()
    os.waitpid(pid, 0)
    payload = json.loads(text)
    if "error" in payload:
        raise AssertionError(f"child failed: {payload['error']}")
    return payload["value"]
