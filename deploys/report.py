"""Kept so that `python -m deploys.report` still works from a checkout: the command is
`slurmrestd-access-report` (or `python -m slurmrestd_access.report`)."""

import sys

from slurmrestd_access.report import main

if __name__ == "__main__":
    sys.exit(main())
