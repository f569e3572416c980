"""The slurmrestd systemd drop-in of the Slurm-web "unix socket + JWT" mode.

With the default arguments `render_dropin()` returns exactly the text of the Slurm-web
documentation page (its copy in `tests/fixtures/seed-setup-slurmrestd.txt`), so that a host set up
by hand following that page and a host set up by the deploy compare equal and a re-run changes
nothing.
"""

from __future__ import annotations

import posixpath
import re

DROPIN_PATH = "/etc/systemd/system/slurmrestd.service.d/slurm-web.conf"
DEFAULT_SOCKET = "/run/slurmrestd/slurmrestd.socket"
DEFAULT_BIN = "/usr/sbin/slurmrestd"
DEFAULT_SLURM_CONF = "/etc/slurm/slurm.conf"

# No whitespace (ExecStart splits on it), no `%` (systemd specifiers), no `$` (variables),
# no quotes or backslashes (systemd unquoting): a path stays the literal path.
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._+/@:-]*")
_SAFE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")

_TEMPLATE = """\
[Service]
# Unset vendor unit ExecStart and Environment to avoid cumulative definition
ExecStart=
Environment=
Environment="SLURM_JWT=daemon"
{slurm_conf_line}ExecStart={slurmrestd_bin} $SLURMRESTD_OPTIONS -a rest_auth/jwt unix:{socket_path}
RuntimeDirectory={runtime_dir}
RuntimeDirectoryMode=0755
User={user}
Group={group}
DynamicUser=yes
"""


def runtime_directory(socket_path: str) -> str:
    """The RuntimeDirectory= for a socket: its parent directory, relative to /run.

    systemd creates that directory for the service (owned by the dynamic user) and removes it
    when the service stops, which is what lets an unprivileged slurmrestd create its socket.
    """
    parent = posixpath.dirname(socket_path)
    if posixpath.normpath(socket_path) != socket_path or not parent.startswith("/run/"):
        raise ValueError(
            f"socket path {socket_path!r} must be a normalised path in a directory under /run/"
            " (systemd creates it through RuntimeDirectory=)"
        )
    return parent[len("/run/") :]


# On a configless host (no local slurm.conf; sackd or slurmd keep the controller's in
# /run/slurm/conf/): Debian's slurmrestd.service has ConditionPathExists=/etc/slurm/slurm.conf,
# under which a restart stops slurmrestd and silently starts nothing (measured, trixie and forky:
# "skipped, unmet condition check"). The empty assignment clears the vendor's condition; the
# order makes slurmrestd start after the daemon that fetches its configuration.
_CONFIGLESS_UNIT = """\
[Unit]
# Configless Slurm: slurm.conf comes from the controller, through sackd or slurmd
ConditionPathExists=
After=sackd.service slurmd.service

"""


def render_dropin(
    *,
    socket_path: str = DEFAULT_SOCKET,
    slurmrestd_bin: str = DEFAULT_BIN,
    user: str = "slurmrestd",
    group: str = "slurmrestd",
    slurm_conf: str = DEFAULT_SLURM_CONF,
    configless: bool = False,
) -> str:
    """Text of the drop-in; with the defaults, byte for byte the Slurm-web documentation's.

    `configless`: the host has no slurm.conf of its own (see _CONFIGLESS_UNIT).

    Its `Environment=` clears every Environment= line before it, a site's own
    `SLURM_CONF=` for slurmrestd included (measured: slurmrestd then looked for
    /etc/slurm/slurm.conf, found none, and exited). So a slurm.conf elsewhere is said here.
    """
    for name, value in (("socket_path", socket_path), ("slurmrestd_bin", slurmrestd_bin),
                        ("slurm_conf", slurm_conf)):
        if not _SAFE_PATH.fullmatch(value):
            raise ValueError(f"{name} {value!r} is not a plain absolute path")
    for name, value in (("user", user), ("group", group)):
        if not _SAFE_NAME.fullmatch(value):
            raise ValueError(f"{name} {value!r} is not a valid user or group name")
    return (_CONFIGLESS_UNIT if configless else "") + _TEMPLATE.format(
        slurmrestd_bin=slurmrestd_bin,
        socket_path=socket_path,
        runtime_dir=runtime_directory(socket_path),
        user=user,
        group=group,
        slurm_conf_line="" if slurm_conf == DEFAULT_SLURM_CONF
        else f"Environment=SLURM_CONF={slurm_conf}\n",
    )
