"""Host side of slurmrestd-access.

The connect check, key sync, config merging and the key-rotation watchdog.
"""

__version__ = "0.2.0"
