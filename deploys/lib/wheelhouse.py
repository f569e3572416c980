"""The host-side tool as wheels, built and fetched on the workstation.

Agent hosts are often air-gapped: everything the tool needs travels from the workstation.
The wheelhouse is cached under `.cache/wheelhouse/` (or $SRA_WHEELHOUSE) per target Python
and machine, so a re-run neither rebuilds nor re-downloads anything.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = PROJECT_ROOT / "watchdog_daemon"


# pyinfra runs hosts as gevent greenlets in one thread (threading is monkey-patched, so this lock
# is cooperative); a blocking flock() would freeze every greenlet, hence the polling below.
_build_lock = threading.Lock()


class WheelhouseError(RuntimeError):
    pass


@dataclass(frozen=True)
class Wheelhouse:
    directory: Path
    wheels: tuple[Path, ...]
    # Hash over every wheel's content: equal on the host means installed and current.
    digest: str

    @property
    def pip_wheel(self) -> Path:
        for wheel in self.wheels:
            if wheel.name.startswith("pip-"):
                return wheel
        raise WheelhouseError(f"no pip wheel in {self.directory}")


def cache_root() -> Path:
    return Path(os.environ.get("SRA_WHEELHOUSE", PROJECT_ROOT / ".cache" / "wheelhouse"))


def source_digest() -> str:
    """Hash of what goes into the project's own wheel, to rebuild it only when it changed."""
    digest = hashlib.sha256()
    files = [PROJECT_ROOT / "pyproject.toml", *sorted(PACKAGE_DIR.rglob("*"))]
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(PROJECT_ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def requirements() -> list[str]:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], "pip"]


def platform_tag(machine: str) -> str:
    known = {"x86_64": "manylinux2014_x86_64", "aarch64": "manylinux2014_aarch64"}
    if machine not in known:
        raise WheelhouseError(f"no wheels for machine type {machine!r} (known: {sorted(known)})")
    return known[machine]


def _digest_of(wheels: list[Path]) -> str:
    digest = hashlib.sha256()
    for wheel in sorted(wheels, key=lambda p: p.name):
        digest.update(wheel.name.encode())
        digest.update(hashlib.sha256(wheel.read_bytes()).digest())
    return digest.hexdigest()[:16]


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise WheelhouseError(
            f"{what} failed (exit {done.returncode}): {done.stderr.strip()[-800:]}\n"
            "On a workstation without access to the package index, fill the wheelhouse "
            "elsewhere and point SRA_WHEELHOUSE at it."
        )


def _build_project_wheel(target: Path) -> None:
    with tempfile.TemporaryDirectory() as build_dir:
        _run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
             "-q", "-w", build_dir, str(PROJECT_ROOT)],
            "building the slurmrestd-access wheel",
        )
        # setuptools leaves build/ behind in the source tree; it must not leak into later builds
        shutil.rmtree(PROJECT_ROOT / "build", ignore_errors=True)
        built = list(Path(build_dir).glob("slurmrestd_access-*.whl"))
        if len(built) != 1:
            raise WheelhouseError(f"expected one wheel, got {built}")
        target.mkdir(parents=True, exist_ok=True)
        shutil.move(str(built[0]), target / built[0].name)


def _download_dependencies(target: Path, python_version: str, machine: str) -> None:
    with tempfile.TemporaryDirectory() as download_dir:
        _run(
            [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
             "--python-version", python_version, "--implementation", "cp",
             "--platform", platform_tag(machine), "--platform", "any",
             "-d", download_dir, *requirements()],
            f"downloading wheels for Python {python_version} on {machine}",
        )
        target.mkdir(parents=True, exist_ok=True)
        for wheel in Path(download_dir).glob("*.whl"):
            shutil.move(str(wheel), target / wheel.name)


def ensure_wheelhouse(python_version: str, machine: str) -> Wheelhouse:
    """Return the wheels for a host running `python_version` on `machine`, building if needed.

    Safe to call from several hosts' deploys at once: a file lock serialises the builds.
    """
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    deps_dir = root / f"deps-py{python_version}-{machine}"
    project_dir = root / f"project-{source_digest()}"
    with _build_lock, open(root / ".lock", "w") as lock:
        while True:  # other processes (parallel runs) building the same cache
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(0.2)
        if not (deps_dir / ".complete").exists():
            shutil.rmtree(deps_dir, ignore_errors=True)
            _download_dependencies(deps_dir, python_version, machine)
            (deps_dir / ".complete").touch()
        if not (project_dir / ".complete").exists():
            shutil.rmtree(project_dir, ignore_errors=True)
            _build_project_wheel(project_dir)
            (project_dir / ".complete").touch()
    wheels = sorted(deps_dir.glob("*.whl")) + sorted(project_dir.glob("*.whl"))
    return Wheelhouse(deps_dir, tuple(wheels), _digest_of(wheels))
