"""The `slurm-web-agent` package of an agent host: the stand-in, as a real .deb of one release.

A real Slurm-web install is a package: `dpkg-query -W -f='${Version}' slurm-web-agent` answers
its release, and it ships the release's settings definitions at
/usr/share/slurm-web/conf/agent.yml, which the agent loads under agent.ini. The host tool reads
both to know the release without running the agent, so the testbed installs the stand-in the
same way: a .deb built here (pure Python, deterministic: same inputs, same bytes) holding

- agent.yml, rendered from tests/fixtures/slurmweb-agent-definitions.json's table for that
  release in RFL's format (types, defaults, choices, required, deprecated, `content` of lists;
  no docs, which RFL does not need): RFL.settings loads it (tests/unit/test_slurmweb_pkg.py);
- the stand-in itself and the two agent units, which run it as that release
  (`Environment=STANDIN_RELEASE=...`, as a real package's units run its own code);
- the release's commands: 5.x `/usr/libexec/slurm-web/slurm-web-agent` and
  `slurm-web-connect-check`, 6.x the unified `/usr/bin/slurm-web` (`agent`, `connect-check`);
- a digest of all that, so that installing the same package again is skipped.

Installed before boot with the host's own dpkg in a chroot of its overlay (`install_offline`),
or on a running host over SSH (`INSTALL_SCRIPT`: dpkg -i, daemon-reload, restart of an agent
unit that was active), which is how a test switches a host's release.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shlex
import tarfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from tests.testbed.errors import TestbedError
from tests.testbed.hostconfig import STANDIN_PATH, UNIT_DIR, standin_unit
from tests.testbed.proc import run
from tests.testbed.topology import AGENT_UNITS, SLURMWEB_RELEASES

PACKAGE = "slurm-web-agent"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "slurmweb-agent-definitions.json"
AGENT_YML = "/usr/share/slurm-web/conf/agent.yml"
DIGEST_PATH = "/usr/share/slurm-web/standin-digest"
# Slurm-web's own version of each release the stand-in can be (the fixture's keys).
VERSIONS = {"5.2": "5.2.0", "6.0": "6.0.0"}
# Fixed so that the same package is the same bytes (its digest decides a reinstall).
_MTIME = 1764288000  # 2025-11-28, Slurm-web 6.0.0's release day
# Property order in the rendered agent.yml, as Slurm-web writes its own.
_PROPERTIES = ("type", "content", "default", "choices", "required", "deprecated")


def package_version(release: str) -> str:
    """What dpkg-query answers for the package of `release`, e.g. 5.2.0-1standin."""
    return f"{VERSIONS[_known(release)]}-1standin"


def _known(release: str) -> str:
    if release not in SLURMWEB_RELEASES:
        raise TestbedError(f"unknown Slurm-web release {release!r} "
                           f"(known: {', '.join(SLURMWEB_RELEASES)})")
    return release


@cache
def definitions(release: str) -> dict[str, dict[str, dict[str, Any]]]:
    """The release's settings table (section -> key -> properties) from the fixture."""
    table = json.loads(FIXTURE.read_text())["releases"][VERSIONS[_known(release)]]
    return table["sections"]


def _scalar(value: Any) -> str:
    # JSON's scalars are YAML's: a quoted string stays a string ("0.0.41", "yes", "~").
    return json.dumps(value)


def agent_yml(release: str) -> str:
    """Slurm-web's conf/vendor/agent.yml of `release`, as the table holds it, in YAML."""
    version = VERSIONS[_known(release)]
    lines = [
        f"# Slurm-web {version} agent settings definitions (conf/vendor/agent.yml), written by",
        "# the slurmrestd-access testbed from Slurm-web's table",
        "# (tests/fixtures/slurmweb-agent-definitions.json; docs left out).",
        "# STAND-IN package for the testbed: NOT Slurm-web's own file.",
    ]
    for section, keys in definitions(release).items():
        lines.append(f"{section}:")
        for key, props in keys.items():
            lines.append(f"  {key}:")
            unknown = set(props) - set(_PROPERTIES)
            if unknown:
                raise TestbedError(f"[{section}] {key}: properties {sorted(unknown)} are not "
                                   "rendered")
            for prop in (p for p in _PROPERTIES if p in props):
                value = props[prop]
                if isinstance(value, list):
                    lines.append(f"    {prop}:")
                    lines.extend(f"    - {_scalar(item)}" for item in value)
                elif isinstance(value, dict):
                    lines.append(f"    {prop}:")
                    lines.extend(f"      {k}: {_scalar(v)}" for k, v in value.items())
                elif prop in ("type", "content"):
                    lines.append(f"    {prop}: {value}")
                else:
                    lines.append(f"    {prop}: {_scalar(value)}")
    return "\n".join(lines) + "\n"


def _wrapper(release: str, what: str, *args: str) -> str:
    command = " ".join(["/usr/bin/python3", STANDIN_PATH, *args])
    return (f"#!/bin/sh\n# STAND-IN for Slurm-web {VERSIONS[release]}'s {what} (testbed only; "
            f"NOT Slurm-web).\nexport STANDIN_RELEASE={release}\n"
            f'exec {command} "$@"\n')


def commands(release: str) -> dict[str, str]:
    """The release's commands (path -> script), where its own packages put them."""
    if _known(release) == "5.2":
        return {
            "/usr/libexec/slurm-web/slurm-web-agent": _wrapper(release, "slurm-web-agent",
                                                               "agent"),
            "/usr/libexec/slurm-web/slurm-web-connect-check": _wrapper(
                release, "slurm-web-connect-check", "connect-check"),
        }
    return {"/usr/bin/slurm-web": _wrapper(release, "slurm-web command")}


@dataclass(frozen=True)
class PackageFile:
    path: str
    content: bytes
    mode: int = 0o644


def package_files(release: str, standin_source: str) -> list[PackageFile]:
    """Every file of the release's package, the digest file last."""
    files = [
        PackageFile(AGENT_YML, agent_yml(release).encode()),
        PackageFile(STANDIN_PATH, standin_source.encode(), 0o755),
        *(PackageFile(f"{UNIT_DIR}/{unit}", standin_unit(unit, release).encode())
          for unit in AGENT_UNITS),
        *(PackageFile(path, text.encode(), 0o755) for path, text in commands(release).items()),
    ]
    return [*files, PackageFile(DIGEST_PATH, (digest(files) + "\n").encode())]


def digest(files: list[PackageFile]) -> str:
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        h.update(f"{f.path}\0{f.mode:o}\0{len(f.content)}\0".encode())
        h.update(f.content)
    return h.hexdigest()[:16]


def _control(release: str, files: list[PackageFile]) -> str:
    size_kib = sum((len(f.content) + 1023) // 1024 for f in files)
    version = VERSIONS[release]
    return (f"Package: {PACKAGE}\n"
            f"Version: {package_version(release)}\n"
            "Architecture: all\n"
            "Maintainer: slurmrestd-access testbed <testbed@invalid>\n"
            f"Installed-Size: {size_kib}\n"
            "Depends: python3\n"
            "Section: web\n"
            "Priority: optional\n"
            f"Description: STAND-IN for the Slurm-web {version} agent (testbed only)\n"
            " NOT Slurm-web: the slurmrestd-access testbed's stand-in agent, its commands and\n"
            f" Slurm-web {version}'s agent settings definitions.\n")


def _tar_gz(entries: list[tuple[str, bytes | None, int]]) -> bytes:
    """A gzipped tar of (./path, content or None for a directory, mode), owned by root."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, content, mode in entries:
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = mode, _MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return gzip.compress(buf.getvalue(), mtime=0)


def _ar_member(name: str, data: bytes) -> bytes:
    header = (f"{name:<16}{_MTIME:<12}{0:<6}{0:<6}{0o100644:<8o}{len(data):<10}`\n").encode()
    return header + data + (b"\n" if len(data) % 2 else b"")


def build_deb(release: str, standin_source: str) -> bytes:
    """The package of `release` as .deb bytes (what dpkg -i takes)."""
    files = package_files(_known(release), standin_source)
    dirs = sorted({str(p) for f in files for p in Path(f.path).parents if str(p) != "/"})
    data = _tar_gz([("./", None, 0o755), *((f".{d}/", None, 0o755) for d in dirs),
                    *((f".{f.path}", f.content, f.mode) for f in files)])
    md5sums = "".join(f"{hashlib.md5(f.content, usedforsecurity=False).hexdigest()}  "
                      f"{f.path.lstrip('/')}\n" for f in files)
    control = _tar_gz([("./", None, 0o755),
                       ("./control", _control(release, files).encode(), 0o644),
                       ("./md5sums", md5sums.encode(), 0o644)])
    return (b"!<arch>\n" + _ar_member("debian-binary", b"2.0\n")
            + _ar_member("control.tar.gz", control) + _ar_member("data.tar.gz", data))


def package_digest(release: str, standin_source: str) -> str:
    return digest(package_files(release, standin_source)[:-1])


# On a running host, the .deb on stdin: install it unless the same one is installed, reload
# systemd (the units changed with the release, as a real package's postinst would), and restart
# an agent unit that was active so it runs as the new release. A failed or stopped one stays so.
# Prints the installed version, then `installed` or `unchanged`.
INSTALL_SCRIPT = """set -e
want={digest}
if [ "$(dpkg-query -W -f='${{Status}}' {package} 2>/dev/null)" = "install ok installed" ] \\
   && [ "$(cat {digest_path} 2>/dev/null)" = "$want" ]; then
  cat > /dev/null
  dpkg-query -W -f='${{Version}}\\n' {package}
  echo unchanged
  exit 0
fi
deb=$(mktemp /tmp/{package}.XXXXXX)
trap 'rm -f "$deb"' EXIT
cat > "$deb"
dpkg -i "$deb" > /dev/null
systemctl daemon-reload
for unit in {units}; do
  if systemctl -q is-active "$unit"; then systemctl restart "$unit"; fi
done
dpkg-query -W -f='${{Version}}\\n' {package}
echo installed
"""


def install_script(release: str, standin_source: str) -> str:
    return INSTALL_SCRIPT.format(
        digest=package_digest(release, standin_source), package=PACKAGE,
        digest_path=DIGEST_PATH, units=" ".join(shlex.quote(u) for u in AGENT_UNITS))


def install_offline(root: Path, release: str, standin_source: str) -> None:
    """Install the package into a host's root before it boots, with the host's own dpkg."""
    deb = root / "tmp" / f"{PACKAGE}-standin.deb"
    deb.write_bytes(build_deb(release, standin_source))
    try:
        run(["chroot", str(root), "dpkg", "-i", f"/tmp/{deb.name}"],
            what=f"installing the Slurm-web {release} stand-in package in {root}", timeout=120)
    finally:
        deb.unlink(missing_ok=True)
