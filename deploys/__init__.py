"""Entry files to run from a checkout: `pyinfra INVENTORY deploys/X.py`. The deploys themselves
are in the `slurmrestd_access` package (`slurmrestd_access.deploys`), which an installed wheel
runs from any directory: `pyinfra INVENTORY slurmrestd_access.deploys.slurmrestd_access`."""
