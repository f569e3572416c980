"""The connect check: does slurmrestd, and Slurm behind it, accept the agent's token."""
