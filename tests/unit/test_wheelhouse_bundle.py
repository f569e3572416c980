"""The tool's wheels as one site-packages tarball: what an installer would have unpacked."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from slurmrestd_access import hostwheel
from slurmrestd_access.wheelhouse import _digest_of, build_bundle


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
    hostwheel.build(tmp_path / "w")
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


def _fresh_wheelhouse(root: Path, monkeypatch, epoch: str):
    """A wheelhouse built from nothing in `root`: the project's wheel built now (with another
    SOURCE_DATE_EPOCH, as two workstations differ), no dependency wheels."""
    from slurmrestd_access import wheelhouse

    monkeypatch.setenv("SRA_WHEELHOUSE", str(root))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
    deps = wheelhouse.dependencies_dir(root, "3.13", "x86_64")
    deps.mkdir(parents=True)
    (deps / ".complete").touch()  # no download: the digest's behaviour is the same
    return wheelhouse.ensure_wheelhouse("3.13", "x86_64")


def test_two_fresh_wheelhouses_of_the_same_source_have_the_same_digest(tmp_path, monkeypatch):
    first = _fresh_wheelhouse(tmp_path / "a", monkeypatch, "315532800")
    second = _fresh_wheelhouse(tmp_path / "b", monkeypatch, "1700000000")
    (wheel_a,), (wheel_b,) = first.wheels, second.wheels
    assert wheel_a.read_bytes() == wheel_b.read_bytes()  # reproducible: the same bytes
    assert first.digest == second.digest  # the same install: nothing to reinstall
    assert first.bundle.name == second.bundle.name == f"bundle-{first.digest}.tar.gz"
    # Asked again (a re-run): the digest comes from the cache, the bundle is not rebuilt.
    mtime = first.bundle.stat().st_mtime_ns
    monkeypatch.setenv("SRA_WHEELHOUSE", str(tmp_path / "a"))
    from slurmrestd_access import wheelhouse

    again = wheelhouse.ensure_wheelhouse("3.13", "x86_64")
    assert again.digest == first.digest and again.bundle.stat().st_mtime_ns == mtime


def test_the_install_digest_follows_what_is_installed_only(tmp_path):
    from slurmrestd_access.wheelhouse import install_digest, site_packages_entries

    def digest(members: dict[str, bytes], executable: tuple[str, ...] = ()) -> str:
        wheel = make_wheel(tmp_path / "demo-1.0-py3-none-any.whl", members, executable)
        return install_digest(site_packages_entries([wheel]))

    base = {"demo/__init__.py": b"X = 1\n", "demo-1.0.dist-info/WHEEL": b"Generator: a\n"}
    same = digest(base)
    assert digest({**base, "demo-1.0.dist-info/WHEEL": b"Generator: b\n"}) == same
    assert digest({**base, "demo/__init__.py": b"X = 2\n"}) != same
    assert digest(base, executable=("demo/__init__.py",)) != same
    assert digest({**base, "demo/extra.py": b""}) != same
    assert digest({"demo/__init__.py": b"X = 1\n", "demo-1.1.dist-info/WHEEL": b""}) != same
