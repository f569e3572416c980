"""Which Slurm release a host runs, and whether Slurm-web's agent can use it. Pure but for
`read_release`.

Slurm-web's agent (v5, v6) talks to slurmrestd's REST API v0.0.41 or later, which Slurm serves
from 24.05 on: on an older Slurm the agent cannot work, whatever JWT setup it is given
(SchedMD/slurm `src/plugins/openapi/` per tag, and the lifecycle table of
`doc/html/rest_clients.shtml`; docs/releases.md). The deploy therefore refuses such a host before
it changes anything, unless the site says in host data that it wants JWT there anyway (for other
REST clients): `allow_unsupported_slurm: True`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

# The oldest release that serves the REST API version Slurm-web's agent needs.
MINIMUM = (24, 5)
AGENT_API = "v0.0.41"
OPT_IN = "allow_unsupported_slurm"

# REST API versions each release serves (SchedMD/slurm src/plugins/openapi, RELEASE_NOTES).
API_VERSIONS = {
    (20, 2): ("0.0.33", "0.0.35"),
    (20, 11): ("0.0.35", "0.0.36"),
    (21, 8): ("0.0.35", "0.0.37"),
    (22, 5): ("0.0.36", "0.0.38"),
    (23, 2): ("0.0.37", "0.0.39"),
    (23, 11): ("0.0.38", "0.0.40"),
    (24, 5): ("0.0.39", "0.0.41"),
    (24, 11): ("0.0.40", "0.0.42"),
    (25, 5): ("0.0.40", "0.0.43"),
    (25, 11): ("0.0.41", "0.0.44"),
    (26, 5): ("0.0.42", "0.0.45"),
}

# Binaries that print the release with -V, in the order tried: one of them is on every Slurm host
# (slurm-client's sinfo on most; a compute-only host may have only slurmd).
VERSION_COMMANDS = ("sinfo", "slurmctld", "slurmd", "slurmdbd", "slurmrestd", "scontrol")
# `slurm 24.11.5`, `slurm-wlm 22.05.8`, `slurm 26.05.0-0rc1`
_RELEASE_RE = re.compile(r"\b(\d{2})\.(\d{2})(?:\.(\d+))?")

Release = tuple  # (major, minor, micro)


def parse_release(text: str) -> Release | None:
    """(major, minor, micro) from `-V` output or a version string, None when there is none."""
    m = _RELEASE_RE.search(text or "")
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def short(release: Release) -> str:
    return f"{release[0]:02d}.{release[1]:02d}"


def full(release: Release) -> str:
    return f"{short(release)}.{release[2]}"


def api_range(release: Release) -> str | None:
    """`v0.0.35 to v0.0.36` for a known release, None for one this table does not know."""
    served = API_VERSIONS.get(release[:2])
    return f"v{served[0]} to v{served[1]}" if served else None


def supported(release: Release) -> bool:
    return release[:2] >= MINIMUM


@dataclass(frozen=True)
class Verdict:
    ok: bool
    message: str  # one line: what was found, and why it is (not) enough
    hint: str = ""  # what to do about it; "" when ok

    def to_dict(self) -> dict:
        return {"ok": self.ok, "message": self.message, "hint": self.hint}


def decide(version_text: str | None, allow_unsupported: bool = False) -> Verdict:
    """May the deploy go on with the Slurm that printed `version_text` (None: none answered)?"""
    minimum = short((*MINIMUM, 0))
    why = (f"Slurm-web's agent needs slurmrestd's REST API {AGENT_API} or later, "
           f"served from Slurm {minimum} on")
    opt_in = (f"or, to set up JWT anyway for other REST clients, set {OPT_IN}: True in this "
              "host's inventory data")
    release = parse_release(version_text) if version_text else None
    if release is None:
        found = f"'{version_text.strip()}'" if version_text and version_text.strip() else "nothing"
        if allow_unsupported:
            return Verdict(True, f"Slurm's release could not be read ({found}); going on "
                                 f"because {OPT_IN} is set")
        return Verdict(
            False,
            f"cannot tell which Slurm release this host runs ({' / '.join(VERSION_COMMANDS)} "
            f"-V printed {found}); the deploy supports Slurm {minimum} and later: {why}",
            f"install Slurm's packages (sinfo -V must answer), {opt_in}",
        )
    served = api_range(release)
    serves = f"; {short(release)} serves {served}" if served else ""
    if supported(release):
        return Verdict(True, f"Slurm {full(release)} (supported: {minimum} and later{serves})")
    if allow_unsupported:
        return Verdict(
            True,
            f"Slurm {full(release)} is older than {minimum}, which Slurm-web's agent needs; going "
            f"on because {OPT_IN} is set{serves}",
        )
    return Verdict(
        False,
        f"Slurm {full(release)} is not supported: the minimum is Slurm {minimum}, because {why}"
        f"{serves}. Nothing was changed",
        f"upgrade Slurm to {minimum} or later, {opt_in}",
    )


def read_release(commands: tuple[str, ...] = VERSION_COMMANDS, timeout: float = 15) -> str | None:
    """The first `-V` output of an installed Slurm binary on this host, None when none answers."""
    for name in commands:
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")
        if path is None:
            continue
        try:
            done = subprocess.run([path, "-V"], capture_output=True, text=True, timeout=timeout,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and parse_release(done.stdout):
            return done.stdout.strip()
    return None
