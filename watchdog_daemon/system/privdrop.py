"""Become another user for good, the way `runuser -u USER` would leave a process.

The connect check proves what the Slurm-web agent's user can do (read agent.ini and the key
copy, connect to slurmrestd's socket). Started as root with `--as-user`, it first imports its
HTTP and JWT libraries (root writes their byte code into the tool's venv, which the agent's
user cannot), then drops to the agent's user before it touches any file or socket: from there
on the kernel checks exactly what it would check for the agent.
"""

from __future__ import annotations

import os
import pwd


class UserMissingError(LookupError):
    pass


class NotPermittedError(PermissionError):
    pass


def become(user: str) -> None:
    """Supplementary groups, then real/effective/saved gid, then uid: all the user's."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise UserMissingError(f"user {user!r} does not exist") from None
    uid, gid = entry.pw_uid, entry.pw_gid
    if os.getresuid() == (uid, uid, uid) and os.getresgid() == (gid, gid, gid):
        return
    if os.geteuid() != 0:
        raise NotPermittedError(f"only root can run the check as {user!r}; run it as {user} "
                                f"(runuser -u {user} -- slurmrestd-access check) instead")
    os.initgroups(user, gid)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            return
        raise RuntimeError(f"could regain root after becoming {user!r}")  # pragma: no cover
