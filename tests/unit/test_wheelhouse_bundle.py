"""The tool's wheels as one site-packages tarball: what an installer would have unpacked."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from deploys.lib.wheelhouse import _build_project_wheel, _digest_of, build_bundle


def make_wheel(path: Path, members: dict[str, bytes], executable: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o755 if name in executable else 0o644) << 16
            archive.writestr(info, data)
    return path


def entries(bundle: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as tar:
        return {m.name: m for m in tar.getmembers()}


def test_members_go_where_an_installer_puts_them(tmp_path):
    wheel = make_wheel(tmp_path / "demo-1.0-py3-none-any.whl", {
        "demo/__init__.py": b"X = 1\n",
        "demo/__pycache__/__init__.cpython-311.pyc": b"stale",
        "demo/tool.sh": b"#!/bin/sh\n",
        "demo-1.0.data/purelib/demo_extra.py": b"Y = 2\n",
        "demo-1.0.data/scripts/demo": b"#!python\n",
        "demo-1.0.dist-info/METADATA": b"Name: demo\n",
        "demo-1.0.dist-info/RECORD": b"",
    }, executable=("demo/tool.sh",))
    found = entries(build_bundle([wheel]))
    assert set(n for n, m in found.items() if m.isfile()) == {
        "demo/__init__.py", "demo/tool.sh", "demo_extra.py", "demo-1.0.dist-info/METADATA",
        "demo-1.0.dist-info/RECORD", "demo-1.0.dist-info/INSTALLER"}
    assert found["demo"].isdir()
    assert found["demo/tool.sh"].mode == 0o755 and found["demo/__init__.py"].mode == 0o644
    assert all(m.uid == 0 and m.gid == 0 for m in found.values())


def test_a_member_cannot_escape_site_packages(tmp_path):
    wheel = make_wheel(tmp_path / "evil-1.0-py3-none-any.whl", {
        "../../etc/cron.d/evil": b"x", "/etc/passwd": b"x", "ok/__init__.py": b""})
    assert set(n for n, m in entries(build_bundle([wheel])).items() if m.isfile()) == {
        "ok/__init__.py"}


def test_same_wheels_same_bytes(tmp_path):
    wheel = make_wheel(tmp_path / "demo-1.0-py3-none-any.whl", {"demo/__init__.py": b"X = 1\n"})
    first = build_bundle([wheel])
    wheel.touch()
    assert build_bundle([wheel]) == first
    assert gzip.decompress(first)  # a plain gzip stream: `tar -xzf` on any host


def test_the_digest_follows_the_wheels_content(tmp_path):
    one = make_wheel(tmp_path / "a-1.0-py3-none-any.whl", {"a/__init__.py": b"1"})
    before = _digest_of([one])
    make_wheel(one, {"a/__init__.py": b"2"})
    assert _digest_of([one]) != before


def test_the_real_wheels_unpack_into_a_working_tool(tmp_path):
    """The project's own wheel and its dependencies, as the deploy ships them."""
    _build_project_wheel(tmp_path / "w")
    site = tmp_path / "site"
    site.mkdir()
    with tarfile.open(fileobj=io.BytesIO(build_bundle(sorted((tmp_path / "w").glob("*.whl")))),
                      mode="r:gz") as tar:
        tar.extractall(site, filter="data")
    done = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
         "import watchdog_daemon.cli as c; print(c.__file__)", str(site)],
        capture_output=True, text=True, check=True, cwd=tmp_path)
    assert done.stdout.strip().startswith(str(site))
    assert (next(site.glob("slurmrestd_access-*.dist-info")) / "INSTALLER").read_text() == (
        "slurmrestd-access\n")
