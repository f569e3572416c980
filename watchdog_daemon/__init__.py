"""Host side of slurmrestd-access: connect check, key sync, config merging and the rotation watchdog."""

__version__ = "0.1.0"
