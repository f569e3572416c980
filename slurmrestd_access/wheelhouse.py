"""The host-side tool as wheels, built and fetched on the workstation, and packed for upload.

Agent hosts are often air-gapped: everything the tool needs travels from the workstation.
The wheelhouse is cached under `.cache/wheelhouse/` (or $SRA_WHEELHOUSE) per target Python
and machine, so a re-run neither rebuilds nor re-downloads anything.

Every wheel the tool needs is pure Python or already built for the target (no build step on
the host), so installing one is unpacking it into site-packages. The workstation does that
once, into one tar.gz (the bundle): a host gets one upload and one `tar -x` instead of a pip
run, which costs seconds of CPU per host and per cluster.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from slurmrestd_access import hostwheel

# Part of the digest: a host installed from another bundle layout is re-installed.
BUNDLE_FORMAT = b"site-packages-tar-2"


# pyinfra runs hosts as gevent greenlets in one thread (threading is monkey-patched, so this lock
# is cooperative); a blocking flock() would freeze every greenlet, hence the polling below.
_build_lock = threading.Lock()


class WheelhouseError(RuntimeError):
    pass


@dataclass(frozen=True)
class Wheelhouse:
    directory: Path
    wheels: tuple[Path, ...]
    # Hash over what the wheels install (see install_digest): equal on the host means
    # installed and current, whichever workstation built the wheels.
    digest: str
    # The wheels unpacked as site-packages, in one tar.gz (see build_bundle).
    bundle: Path


def cache_root() -> Path:
    """$SRA_WHEELHOUSE; else `.cache/wheelhouse/` of a checkout; else, installed from the
    wheel, the user's cache directory (XDG)."""
    if os.environ.get("SRA_WHEELHOUSE"):
        return Path(os.environ["SRA_WHEELHOUSE"])
    if hostwheel.CHECKOUT_ROOT is not None:
        return hostwheel.CHECKOUT_ROOT / ".cache" / "wheelhouse"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "slurmrestd-access" / "wheelhouse"


def requirements(python_version: str | None = None) -> list[str]:
    """The tool's dependencies; with `python_version`, only those that version needs.

    `pip download --python-version` picks wheels for the target but evaluates environment
    markers (`tomli; python_version < '3.11'`) for the workstation's own Python: they are
    evaluated here for the host's, and passed on without them.
    """
    wanted = hostwheel.host_requirements()
    if python_version is None:
        return wanted
    env = _target_env(python_version)
    out = []
    for text in wanted:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate(env):
            req.marker = None
            out.append(str(req))
    return out


def platform_tag(machine: str) -> str:
    known = {"x86_64": "manylinux2014_x86_64", "aarch64": "manylinux2014_aarch64"}
    if machine not in known:
        raise WheelhouseError(f"no wheels for machine type {machine!r} (known: {sorted(known)})")
    return known[machine]


def _digest_of(wheels: list[Path]) -> str:
    """Hash of the wheel files' bytes: the cache key of install_digest (cheap), never sent to a
    host, since two builds of the same source differ in their zip timestamps."""
    digest = hashlib.sha256(BUNDLE_FORMAT)
    for wheel in sorted(wheels, key=lambda p: p.name):
        digest.update(wheel.name.encode())
        digest.update(hashlib.sha256(wheel.read_bytes()).digest())
    return digest.hexdigest()[:16]


def install_digest(entries: dict[str, tuple[bytes, int]]) -> str:
    """What the host gets, as one hash: every installed file's name, mode and content.

    Two builds of the same source (another workstation, a wiped cache) give the same digest,
    so a re-run installs nothing. Only the *names* of the `.dist-info` directories count
    (distribution and version): their files are written by the build tools (WHEEL's
    generator, RECORD, METADATA's layout) and differ between setuptools versions.
    """
    digest = hashlib.sha256(BUNDLE_FORMAT)
    for name in sorted(entries):
        top = name.split("/", 1)[0]
        if top.endswith(".dist-info"):
            continue
        data, mode = entries[name]
        digest.update(f"{name}\0{mode:o}\0".encode())
        digest.update(hashlib.sha256(data).digest())
    for top in sorted({n.split("/", 1)[0] for n in entries if ".dist-info" in n.split("/")[0]}):
        digest.update(f"{top}\0".encode())
    return digest.hexdigest()[:16]


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise WheelhouseError(
            f"{what} failed (exit {done.returncode}): {done.stderr.strip()[-800:]}\n"
            "On a workstation without access to the package index, fill the wheelhouse "
            "elsewhere and point SRA_WHEELHOUSE at it."
        )


def _target_env(python_version: str) -> dict[str, str]:
    """Environment markers as the host's Python evaluates them (Linux, CPython)."""
    return {"python_version": python_version, "python_full_version": f"{python_version}.0",
            "implementation_name": "cpython", "platform_python_implementation": "CPython",
            "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
            "extra": ""}


def missing_dependencies(wheels: list[Path], python_version: str) -> list[str]:
    """What the wheels require on the host's Python that is not among them.

    pip evaluates every dependency's markers for the workstation's Python: structlog's
    `typing-extensions; python_version < "3.11"` is skipped for a 3.9 host when the workstation
    runs 3.11 (measured on bullseye1: `No module named 'typing_extensions'`).
    """
    env = _target_env(python_version)
    have = {canonicalize_name(w.name.split("-")[0]) for w in wheels}
    wanted: dict[str, str] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            meta = next((n for n in archive.namelist()
                         if n.endswith(".dist-info/METADATA") and n.count("/") == 1), None)
            if meta is None:
                continue
            text = archive.read(meta).decode("utf-8", "replace")
        for line in text.split("\n\n", 1)[0].splitlines():
            if not line.startswith("Requires-Dist:"):
                continue
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            name = canonicalize_name(req.name)
            if name not in have:
                req.marker = None
                req.extras = set()
                wanted.setdefault(name, str(req))
    return sorted(wanted.values())


def _download_dependencies(target: Path, python_version: str, machine: str) -> None:
    with tempfile.TemporaryDirectory() as download_dir:
        wanted = requirements(python_version)
        for _ in range(10):  # each round adds what the previous wheels need on the host
            _run(
                [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
                 "--python-version", python_version, "--implementation", "cp",
                 "--platform", platform_tag(machine), "--platform", "any",
                 "-d", download_dir, *wanted],
                f"downloading wheels for Python {python_version} on {machine}",
            )
            wanted = missing_dependencies(sorted(Path(download_dir).glob("*.whl")),
                                          python_version)
            if not wanted:
                break
        else:
            raise WheelhouseError(f"the dependencies for Python {python_version} never closed: "
                                  f"still missing {wanted}")
        target.mkdir(parents=True, exist_ok=True)
        for wheel in Path(download_dir).glob("*.whl"):
            shutil.move(str(wheel), target / wheel.name)


def dependencies_dir(root: Path, python_version: str, machine: str) -> Path:
    """Where the dependency wheels for one host Python and machine are kept."""
    # Keyed by the requirements too: a dependency added later is fetched into a new directory.
    # (and by the dependency closure's logic: an older cache lacks what pip skipped for 3.9)
    reqs = hashlib.sha256(("closure-1\n" + "\n".join(requirements(python_version))).encode()
                          ).hexdigest()[:8]
    return root / f"deps-py{python_version}-{machine}-{reqs}"


def ensure_wheelhouse(python_version: str, machine: str) -> Wheelhouse:
    """Return the wheels for a host running `python_version` on `machine`, building if needed.

    Safe to call from several hosts' deploys at once: a file lock serialises the builds.
    """
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    deps_dir = dependencies_dir(root, python_version, machine)
    project_dir = root / f"project-{hostwheel.source_digest()}"
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
            hostwheel.build(project_dir)
            (project_dir / ".complete").touch()
        # pip is not needed on the host any more (older caches hold its wheel)
        wheels = [w for w in sorted(deps_dir.glob("*.whl")) if not w.name.startswith("pip-")]
        wheels += sorted(project_dir.glob("*.whl"))
        # install_digest needs the wheels unpacked: done once per set of wheel files, the
        # result kept beside the bundle under the (cheap) hash of the wheel files.
        index = root / f"digest-{_digest_of(wheels)}"
        digest = index.read_text().strip() if index.exists() else ""
        bundle = root / f"bundle-{digest}.tar.gz"
        if not digest or not bundle.exists():
            entries = site_packages_entries(wheels)
            digest = install_digest(entries)
            bundle = root / f"bundle-{digest}.tar.gz"
            if not bundle.exists():
                temp = bundle.with_suffix(".partial")
                temp.write_bytes(pack_bundle(entries))
                temp.rename(bundle)
            index.write_text(digest + "\n")
    return Wheelhouse(deps_dir, tuple(wheels), digest, bundle)


def _site_packages_name(member: str) -> str | None:
    """Where a wheel's member goes in site-packages, None for what the tool does not need.

    A wheel's `*.data/purelib` and `*.data/platlib` belong to site-packages as well; its
    scripts, headers and data are not needed (the host gets its own entry point).
    """
    head, _, rest = member.partition("/")
    if head.endswith(".data"):
        kind, _, inner = rest.partition("/")
        return inner if kind in ("purelib", "platlib") and inner else None
    return member


def build_bundle(wheels: list[Path]) -> bytes:
    """The wheels installed as site-packages, as a reproducible tar.gz (same wheels, same bytes).

    Every entry is root-owned, 0644 (0755 when the wheel marks it executable), with a fixed
    mtime; no byte code (the host compiles for its own Python version).
    """
    return pack_bundle(site_packages_entries(wheels))


def site_packages_entries(wheels: list[Path]) -> dict[str, tuple[bytes, int]]:
    """{path in site-packages: (content, mode)} of everything the wheels install."""
    entries: dict[str, tuple[bytes, int]] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for info in archive.infolist():
                name = _site_packages_name(info.filename)
                parts = (name or "").split("/")
                if info.is_dir() or name is None or "__pycache__" in parts or ".." in parts \
                        or name.startswith("/"):
                    continue
                executable = (info.external_attr >> 16) & 0o111
                entries[name] = (archive.read(info), 0o755 if executable else 0o644)
                if parts[0].endswith(".dist-info"):
                    # As an installer would: who installed this distribution.
                    entries[f"{parts[0]}/INSTALLER"] = (b"slurmrestd-access\n", 0o644)
    return entries


def pack_bundle(entries: dict[str, tuple[bytes, int]]) -> bytes:
    """site_packages_entries as a reproducible tar.gz (same entries, same bytes)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directories: set[str] = set()
        for name in sorted(entries):
            parts = name.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                directory = "/".join(parts[:depth])
                if directory not in directories:
                    directories.add(directory)
                    tar.addfile(_tar_info(directory, tarfile.DIRTYPE, 0o755, 0))
            data, mode = entries[name]
            tar.addfile(_tar_info(name, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0, compresslevel=6) as gz:
        gz.write(raw.getvalue())
    return packed.getvalue()


def _tar_info(name: str, kind: bytes, mode: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size = kind, mode, size
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 1_600_000_000
    return info
