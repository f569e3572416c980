"""The host-side tool's own wheel, built from the installed `watchdog_daemon` package.

The workstation may run from a checkout or from the project's wheel installed in a venv: either
way the hosts get a wheel of `watchdog_daemon` alone (never the workstation's code, which needs
Python 3.11), of the same version, with the host-side dependencies. Written here rather than by
`pip wheel` of a source tree, which an installed package does not have. Reproducible: the same
files give the same bytes (fixed timestamps, sorted entries).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement

import watchdog_daemon

DISTRIBUTION = "slurmrestd-access"
PACKAGE_DIR = Path(watchdog_daemon.__file__).resolve().parent
# In a checkout, pyproject.toml sits beside the package and is the truth (an editable install's
# metadata is as old as the install); an installed wheel has its metadata instead.
CHECKOUT_ROOT = PACKAGE_DIR.parent if (PACKAGE_DIR.parent / "pyproject.toml").is_file() \
    and (PACKAGE_DIR.parent / "slurmrestd_access").is_dir() else None
ENTRY_POINTS = "[console_scripts]\nslurmrestd-access = watchdog_daemon.cli:main\n"
_ZIP_TIME = (2020, 9, 13, 12, 26, 40)


def version() -> str:
    return watchdog_daemon.__version__


def host_requirements() -> list[str]:
    """The host tool's dependencies, with their environment markers (pyproject's
    `dependencies`: the `deploy` and `test` extras are the workstation's)."""
    if CHECKOUT_ROOT is not None:
        project = tomllib.loads((CHECKOUT_ROOT / "pyproject.toml").read_text())["project"]
        return list(project["dependencies"])
    requires = importlib.metadata.requires(DISTRIBUTION) or []
    # An extra's requirement carries `extra == "..."` in its marker.
    return [r for r in requires if "extra" not in str(Requirement(r).marker or "")]


def package_files() -> list[tuple[str, Path]]:
    """(path in the wheel, file) of everything the package holds, byte code left out."""
    out = []
    for path in sorted(PACKAGE_DIR.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            out.append((f"watchdog_daemon/{path.relative_to(PACKAGE_DIR).as_posix()}", path))
    return out


def source_digest() -> str:
    """Hash of what goes into the wheel, to rebuild it only when that changed."""
    digest = hashlib.sha256(f"{version()}\n{host_requirements()}\n".encode())
    for name, path in package_files():
        digest.update(name.encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _metadata() -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {DISTRIBUTION}", f"Version: {version()}",
             "Summary: slurmrestd-access host-side tool (connect check, key sync, watchdog)",
             "Requires-Python: >=3.9"]
    lines += [f"Requires-Dist: {r}" for r in host_requirements()]
    return "\n".join(lines) + "\n"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build(target: Path) -> Path:
    """Write the wheel into `target`; returns its path."""
    dist_info = f"slurmrestd_access-{version()}.dist-info"
    entries: list[tuple[str, bytes]] = [(n, p.read_bytes()) for n, p in package_files()]
    entries += [
        (f"{dist_info}/METADATA", _metadata().encode()),
        (f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: slurmrestd-access\n"
                               b"Root-Is-Purelib: true\nTag: py3-none-any\n"),
        (f"{dist_info}/entry_points.txt", ENTRY_POINTS.encode()),
    ]
    record = [_record_line(n, d) for n, d in entries] + [f"{dist_info}/RECORD,,"]
    entries.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))
    target.mkdir(parents=True, exist_ok=True)
    wheel = target / f"slurmrestd_access-{version()}-py3-none-any.whl"
    partial = wheel.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name, _ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    partial.rename(wheel)
    return wheel
