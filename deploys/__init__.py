"""Workstation side of slurmrestd-access: pyinfra deploys.

Run them with `pyinfra INVENTORY deploys/X.py`. The workstation needs Python 3.11 or later
(pyinfra 3.10, tomllib); the host-side tool it installs (watchdog_daemon/) runs on 3.9 and later.
"""

import sys

if sys.version_info < (3, 11):  # noqa: UP036 - pyproject says 3.9 for the host wheel
    raise SystemExit(
        "slurmrestd-access: the workstation side (deploys/) needs Python 3.11 or later, this is "
        f"{sys.version_info[0]}.{sys.version_info[1]}; the cluster hosts may run 3.9 and later"
    )
