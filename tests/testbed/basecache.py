"""The cached Debian base root file systems the hosts are overlays of, one per release.

Keyed by a hash of what goes into it; built in a temporary directory and renamed into place only
when complete, so an interrupted build never looks like a usable base.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from tests.testbed.accounts import ACCOUNTS
from tests.testbed.errors import TestbedError
from tests.testbed.hostconfig import DB_NAME, DB_PASSWORD, DB_USER
from tests.testbed.mounts import remove_tree, unmount_below
from tests.testbed.proc import run, say
from tests.testbed.topology import SACKD_RELEASES, UWSGI_RELEASES

SUITE = "trixie"
MIRROR = os.environ.get("SRA_TESTBED_MIRROR", "http://deb.debian.org/debian")
# What debootstrap itself installs (minbase plus a bootable systemd).
BOOTSTRAP_INCLUDE = ("systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "iproute2")
# What goes in through apt-get in the chroot before any boot (a booted host has no registry).
PACKAGES = (
    "slurmctld",
    "slurmd",
    "slurmdbd",
    "slurmrestd",
    "slurm-client",
    # auth/jwt for slurmctld/slurmdbd is a separate Debian package, not even a Recommends.
    "slurm-wlm-jwt-plugin",
    "munge",
    "mariadb-server",
    "openssh-server",
    "python3",
    "python3-venv",
    "iproute2",
    "procps",
    "less",
    # Not in debootstrap's minbase: the unprivileged admin account deploys through it.
    "sudo",
)
# Debian's uWSGI, as Slurm-web's slurm-web-agent-uwsgi.service runs it (`/usr/bin/uwsgi`,
# `plugin = python3`), in the bases of topology.UWSGI_RELEASES only. Debian has both packages
# in every release the testbed builds (apt, 2026-12): bullseye and bookworm 2.0.19.1 and
# 2.0.21, trixie 2.0.28 (+2.4 MB, plugin +0.3 MB, libpython3.13 is there already), forky 2.0.31,
# where `uwsgi-core` is a transitional package for `uwsgi`.
UWSGI_PACKAGES = ("uwsgi-core", "uwsgi-plugin-python3")
# sackd, which keeps a configless host's copy of slurm.conf (Slurm 23.11 and later; Debian ships
# it apart, at the exact version of its Slurm: trixie 24.11.5-4+deb13u1), in the bases of
# topology.SACKD_RELEASES only (the `configless` topology's).
SACKD_PACKAGES = ("sackd",)
# Bump when the build steps below change in a way the package list does not show.
# 2: the unprivileged accounts (accounts.ACCOUNTS).
RECIPE = 2
# Units the packages enable that only some roles want: each host enables its own.
DISABLED_IN_BASE = (
    "slurmctld.service",
    "slurmd.service",
    "slurmdbd.service",
    "slurmrestd.service",
    "mariadb.service",
)
MARKER = ".testbed-base.json"


@dataclass(frozen=True)
class BaseSpec:
    suite: str
    mirror: str
    include: tuple[str, ...]
    packages: tuple[str, ...]
    recipe: int
    # debootstrap script to use when it has none named after the suite (forky on Debian 12).
    script: str = ""
    # Boot with a cgroup v2 hierarchy (systemd >= 258 refuses v1). Not part of the base's key.
    unified_cgroup: bool = False

    def manifest(self) -> dict[str, object]:
        manifest: dict[str, object] = {
            "suite": self.suite,
            "mirror": self.mirror,
            "include": sorted(self.include),
            "packages": sorted(self.packages),
            "recipe": self.recipe,
        }
        if self.script:
            manifest["script"] = self.script
        return manifest

    @property
    def key(self) -> str:
        """Stable over order; changes whenever a package, the suite or the recipe changes."""
        blob = json.dumps(self.manifest(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]




def _with_uwsgi(release: str, packages: tuple[str, ...]) -> tuple[str, ...]:
    packages = packages + UWSGI_PACKAGES if release in UWSGI_RELEASES else packages
    return packages + SACKD_PACKAGES if release in SACKD_RELEASES else packages


DEFAULT_SPEC = BaseSpec(SUITE, MIRROR, BOOTSTRAP_INCLUDE, _with_uwsgi(SUITE, PACKAGES), RECIPE)

# The Debian releases a topology can run on (`release = ...` in topologies.toml). Measured
# package differences (apt-cache in each release's chroot):
# - bullseye (Slurm 20.11.4, "20.11.7+really20.11.4"): no slurm-wlm-jwt-plugin package;
#   auth_jwt.so ships inside slurm-wlm-basic-plugins. Configs in /etc/slurm (not slurm-llnl);
#   Debian's slurmrestd unit reads only /etc/default/slurmrestd and listens on
#   unix:/run/slurmrestd.socket; Python 3.9.2, MariaDB 10.5 (has mariadbd).
# - bookworm (22.05.8) and later ship auth/jwt apart, in slurm-wlm-jwt-plugin.
# - forky (testing): this machine's debootstrap (Debian 12) has no script named forky; sid's
#   script bootstraps any current suite.
_NO_JWT_PLUGIN = tuple(p for p in PACKAGES if p != "slurm-wlm-jwt-plugin")
RELEASES: dict[str, BaseSpec] = {
    "bullseye": BaseSpec("bullseye", MIRROR, BOOTSTRAP_INCLUDE,
                         _with_uwsgi("bullseye", _NO_JWT_PLUGIN), RECIPE),
    "bookworm": BaseSpec("bookworm", MIRROR, BOOTSTRAP_INCLUDE,
                         _with_uwsgi("bookworm", PACKAGES), RECIPE),
    "trixie": DEFAULT_SPEC,
    "forky": BaseSpec("forky", MIRROR, BOOTSTRAP_INCLUDE, _with_uwsgi("forky", PACKAGES), RECIPE,
                      script="/usr/share/debootstrap/scripts/sid", unified_cgroup=True),
}


def spec_for(release: str) -> BaseSpec:
    try:
        return RELEASES[release]
    except KeyError:
        raise TestbedError(
            f"unknown Debian release {release!r} (known: {', '.join(RELEASES)})"
        ) from None


def base_dir(cache: Path, spec: BaseSpec = DEFAULT_SPEC) -> Path:
    # The suite in the name keeps each release's base apart (and readable in `ls`).
    return cache / f"base-{spec.suite}-{spec.key}"


def is_complete(path: Path) -> bool:
    return (path / MARKER).is_file()


def stale_builds(cache: Path) -> list[Path]:
    """Leftovers of interrupted builds: temp dirs, and base dirs without the marker."""
    if not cache.is_dir():
        return []
    found = [p for p in cache.glob("base-*.building-*") if p.is_dir()]
    found += [
        p for p in cache.glob("base-*")
        if p.is_dir() and ".building-" not in p.name and not is_complete(p)
    ]
    return sorted(found)


def ensure_base(cache: Path, spec: BaseSpec = DEFAULT_SPEC) -> Path:
    """Return the complete base for spec, building it if needed (caller holds the cache lock)."""
    target = base_dir(cache, spec)
    for stale in stale_builds(cache):
        say(
            f"testbed: removing half-built base {stale} left by an interrupted run "
            "(it was never used; a complete base is rebuilt)"
        )
        remove_tree(stale)
    if is_complete(target):
        return target
    started = time.monotonic()
    say(f"testbed: building base {target.name} (Debian {spec.suite}; a few minutes, once)")
    tmp = cache / f"{target.name}.building-{os.getpid()}"
    try:
        _build(tmp, spec)
        (tmp / MARKER).write_text(json.dumps(spec.manifest(), indent=2) + "\n")
        os.rename(tmp, target)
    except BaseException:
        remove_tree(tmp)
        raise
    say(f"testbed: base {target.name} built in {time.monotonic() - started:.0f} s")
    _remove_other_bases(cache, keep=target, suite=spec.suite)
    return target


def _build(root: Path, spec: BaseSpec) -> None:
    root.mkdir(parents=True)
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(spec.include)}",
            spec.suite,
            str(root),
            spec.mirror,
            *([spec.script] if spec.script else []),
        ],
        what=f"debootstrap of Debian {spec.suite} from {spec.mirror}",
        timeout=1800,
    )
    # Packages must not start daemons inside the chroot.
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    run(["mount", "-t", "proc", "proc", str(root / "proc")], what="mount /proc in the base")
    try:
        env = ["env", "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C.UTF-8"]
        # Testing's Release file carries a Valid-Until a week ahead; a mirror that serves an
        # older snapshot (measured here: forky's had expired 24 days before) is still what we
        # want to install from.
        run(["chroot", str(root), *env, "apt-get", "-o", "Acquire::Check-Valid-Until=false",
             "update"], what="apt-get update in the base", timeout=600)
        run(
            ["chroot", str(root), *env, "apt-get", "install", "-y", "--no-install-recommends",
             *spec.packages],
            what="apt-get install in the base",
            timeout=1800,
        )
        run(["chroot", str(root), "apt-get", "clean"], what="apt-get clean in the base")
        _create_db_user(root)
    finally:
        unmount_below(root / "proc")
    policy.unlink()
    # sackd's package enables it: only a configless host that is not a compute node runs it.
    sackd = ("sackd.service",) if "sackd" in spec.packages else ()
    run(["chroot", str(root), "systemctl", "disable", *DISABLED_IN_BASE, *sackd],
        what="disable role daemons in the base")
    run(
        ["chroot", str(root), "useradd", "--system", "--user-group", "--home-dir",
         "/var/lib/slurm-web", "--create-home", "--shell", "/usr/sbin/nologin", "slurm-web"],
        what="create the slurm-web user in the base",
    )
    _create_accounts(root)
    # Small buffers: several MariaDB servers share one machine in the fleet topology.
    (root / "etc/mysql/mariadb.conf.d/90-testbed.cnf").write_text(
        "# testbed: keep MariaDB small, several run on one machine\n"
        "[mysqld]\ninnodb_buffer_pool_size=32M\nperformance_schema=OFF\n"
    )
    # Each host writes its own machine-id; an empty one here keeps the base neutral.
    (root / "etc/machine-id").write_text("")


def _create_accounts(root: Path) -> None:
    """admin and nosudo: ordinary login accounts, no password and no sudo rule yet (each host
    gets its authorized_keys before boot, admin's password and rule at `up`: accounts.py)."""
    for user in ACCOUNTS:
        run(["chroot", str(root), "useradd", "--create-home", "--user-group", "--shell",
             "/bin/bash", user], what=f"create the {user} account in the base")
        run(["chroot", str(root), "install", "-d", "-m", "700", "-o", user, "-g", user,
             f"/home/{user}/.ssh"], what=f"create {user}'s ~/.ssh in the base")


def _create_db_user(root: Path) -> None:
    """Create slurmdbd's database user offline (mariadbd --bootstrap needs no running server)."""
    sql = (
        "FLUSH PRIVILEGES;\n"
        f"CREATE USER IF NOT EXISTS '{DB_USER}'@'localhost' IDENTIFIED BY '{DB_PASSWORD}';\n"
        f"GRANT ALL ON {DB_NAME}.* TO '{DB_USER}'@'localhost';\n"
    )
    run(["chroot", str(root), "/usr/sbin/mariadbd", "--bootstrap", "--user=mysql"],
        input=sql.encode(), what="create the slurmdbd database user in the base", timeout=120)


def suite_of(base: Path) -> str | None:
    """The suite a complete base was built from (its marker), None when unreadable."""
    try:
        suite = json.loads((base / MARKER).read_text()).get("suite")
    except (OSError, ValueError, AttributeError):
        return None
    return suite if isinstance(suite, str) else None


def _remove_other_bases(cache: Path, keep: Path, suite: str) -> None:
    """Outdated bases of the same release go; other releases' bases stay (they are current)."""
    for other in cache.glob("base-*"):
        if other == keep or not other.is_dir() or suite_of(other) != suite:
            continue
        if _in_use(other):
            continue
        say(f"testbed: removing outdated base {other.name}")
        remove_tree(other)


def _in_use(base: Path) -> bool:
    info = Path("/proc/self/mountinfo").read_text()
    return f"lowerdir={base}" in info


def check_not_stale(cache: Path) -> None:
    """Explain a half-built cache the user may find by hand."""
    stale = stale_builds(cache)
    if stale:
        raise TestbedError(
            "half-built testbed base(s) from an interrupted run: "
            + ", ".join(map(str, stale))
            + "; `python -m tests.testbed up ...` removes and rebuilds them"
        )
