"""Kept so that `python -m deploys.rollout` still works from a checkout: the command is
`slurmrestd-access-rollout` (or `python -m slurmrestd_access.rollout`)."""

import sys

from slurmrestd_access.rollout import main

if __name__ == "__main__":
    sys.exit(main())
