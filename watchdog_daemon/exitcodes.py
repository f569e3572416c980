"""Exit codes of `slurmrestd-access`, one per failure reason, stable for scripts.

Documented in docs/check.md and docs/watchdog.md (exit tables); tests/unit/test_docs_drift.py
keeps both in step.
"""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL_ERROR = 1  # a bug: report it
    USAGE = 2  # argparse's own code for bad command-line arguments

    CONFIG_INVALID = 10  # agent.ini / slurm.conf / tool config missing, malformed or incomplete
    KEY_MISSING = 11
    KEY_UNREADABLE = 12
    KEY_EMPTY = 13
    KEY_TOO_SHORT = 14  # fewer than 32 bytes
    KEY_INSECURE = 15  # readable or writable by others, a symlink, or not a regular file
    USER_MISSING = 16  # a system user or group named in the configuration does not exist

    SOCKET_MISSING = 20
    PERMISSION_DENIED = 21
    CONNECTION_REFUSED = 22
    NO_API_VERSION = 23  # slurmrestd answers none of the REST API versions we know
    SLURMRESTD_ERROR = 24  # slurmrestd answered something we cannot interpret
    # The Slurm-web release installed asks for REST API versions this Slurm does not serve.
    SLURMWEB_INCOMPATIBLE = 25

    REJECTED_BY_SLURMCTLD = 30
    REJECTED_BY_SLURMDBD = 31
    CONTROLLER_UNREACHABLE = 32  # slurmctld down, unresolvable or timed out
    SLURMDBD_UNREACHABLE = 33

    CHANGE_REFUSED = 40  # a file could not be merged safely (conflict, parse error); left untouched
    PREFLIGHT_FAILED = 41  # the host is not in a state the deploy can start from

    # `slurmrestd-access status` only: the watchdog's states in which the agent may not serve.
    WATCH_NOT_READY = 50  # no watchdog running, or it has not finished its first look yet
    RESTART_PENDING = 51  # the copy holds a key Slurm accepts; the agent still runs an older one
    CIRCUIT_OPEN = 52  # agent restarts keep failing: none is tried until the cool-down ends
    # watch: a runtime I/O error it could not get past (after logging and retrying); unlike
    # CONFIG_INVALID (at start only), systemd restarts the daemon on this one.
    IO_ERROR = 53
    # `status` only: the agent unit in use is not active (stopped, failed), or none is in use.
    AGENT_NOT_ACTIVE = 54
    # `status` only: the watchdog's last proof is older than it may be: the daemon is stuck.
    PROOF_TOO_OLD = 55
