"""Machine-side plumbing: prerequisites, the bridge, per-host overlays and nspawn processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.testbed.errors import TestbedError
from tests.testbed.hostconfig import HostFile
from tests.testbed.mounts import is_mountpoint, remove_tree, unmount_below
from tests.testbed.proc import run
from tests.testbed.topology import Network

SETUP_HINT = "run tests/testbed/setup-host.sh (as root) to install what the testbed needs"
GIB = 1024**3
# Free space wanted on the cache's file system: a base is about 1 GB, hosts' upper dirs small.
NEED_FOR_BUILD = 4 * GIB
NEED_FOR_HOSTS = 1 * GIB


@dataclass(frozen=True)
class HostDirs:
    top: Path

    @property
    def upper(self) -> Path:
        return self.top / "upper"

    @property
    def work(self) -> Path:
        return self.top / "work"

    @property
    def root(self) -> Path:
        return self.top / "root"

    @property
    def pid_file(self) -> Path:
        return self.top / "nspawn.pid"

    @property
    def console_log(self) -> Path:
        return self.top / "console.log"


def check_root() -> None:
    if os.geteuid() != 0:
        raise TestbedError(
            "the testbed must run as root (it mounts overlays, creates a bridge and runs "
            "systemd-nspawn): run it with sudo, e.g. `sudo python -m tests.testbed up single`"
        )


def check_tools(building: bool) -> None:
    tools = {
        "systemd-nspawn": "systemd-container",
        "ip": "iproute2",
        "ssh": "openssh-client",
        "ssh-keygen": "openssh-client",
        "mount": "mount",
    }
    if building:
        tools["debootstrap"] = "debootstrap"
    missing = [f"{t} (Debian package {p})" for t, p in tools.items() if shutil.which(t) is None]
    if missing:
        raise TestbedError(f"missing on this machine: {', '.join(missing)}; {SETUP_HINT}")


def check_disk(cache: Path, building: bool) -> None:
    probe = cache
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    need = NEED_FOR_BUILD if building else NEED_FOR_HOSTS
    if free < need:
        raise TestbedError(
            f"only {free / GIB:.1f} GiB free on the file system holding {cache} "
            f"(the testbed needs {need / GIB:.0f} GiB): free some space or point "
            "SRA_TESTBED_CACHE at a directory on a larger file system"
        )


# --- bridge -------------------------------------------------------------------------------


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def ensure_bridge(net: Network) -> None:
    if not link_exists(net.bridge):
        run(["ip", "link", "add", net.bridge, "type", "bridge"], what="create the testbed bridge")
    run(["ip", "addr", "replace", f"{net.gateway}/{net.prefixlen}", "dev", net.bridge],
        what="address the testbed bridge")
    run(["ip", "link", "set", net.bridge, "up"], what="bring the testbed bridge up")


def remove_bridge(net: Network) -> None:
    if link_exists(net.bridge):
        run(["ip", "link", "del", net.bridge], what="delete the testbed bridge")


# --- nspawn processes ---------------------------------------------------------------------


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def nspawn_pids_below(hosts_dir: Path, bridge: str | None = None) -> dict[int, Path]:
    """Every systemd-nspawn process (pid -> root dir) whose root lies under hosts_dir or, given
    bridge, that is attached to the testbed bridge (a host booted with another cache dir)."""
    found: dict[int, Path] = {}
    prefix = str(hosts_dir) + "/"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        args = _cmdline(int(entry.name))
        if not args or not args[0].endswith("systemd-nspawn") or _is_zombie(int(entry.name)):
            continue
        roots = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-D", "--directory")]
        ours = bridge is not None and f"--network-bridge={bridge}" in args
        if roots and (roots[0].startswith(prefix) or ours):
            found[int(entry.name)] = Path(roots[0])
    return found


def running_pid(dirs: HostDirs) -> int | None:
    try:
        pid = int(dirs.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    args = _cmdline(pid)
    if args and args[0].endswith("systemd-nspawn") and str(dirs.root) in args:
        return pid
    return None


def signal_pid(pid: int, sig: int = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def stop_pid(pid: int, timeout: float = 30) -> None:
    """SIGTERM makes nspawn power the container off; SIGKILL only if that hangs."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not Path(f"/proc/{pid}").exists():
            return
        if _is_zombie(pid):
            # Exited; its parent (PID 1 once `up` has exited) reaps it shortly: wait for that
            # so `down` really leaves no process entry behind, but never for long.
            _wait_gone(pid, 5)
            return
        time.sleep(0.2)
    # The container's init first: it has a session of its own, so killing nspawn (or its
    # process group) alone leaves the container running. Measured: after a SIGKILL of nspawn,
    # the container's systemd was still running minutes later, after its host was rebuilt.
    children = _children(pid)
    for child in children:
        signal_pid(child, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for child in children:
        _wait_gone(child, 10)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.1)


def _reap(pid: int) -> None:
    # nspawn is our child when `up` ran in this same process (the pytest fixture).
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


# --- overlay and host root ----------------------------------------------------------------


def mount_overlay(base: Path, dirs: HostDirs) -> None:
    for d in (dirs.upper, dirs.work, dirs.root):
        d.mkdir(parents=True, exist_ok=True)
    if is_mountpoint(dirs.root):
        return
    opts = f"lowerdir={base},upperdir={dirs.upper},workdir={dirs.work}"
    run(["mount", "-t", "overlay", "overlay", "-o", opts, str(dirs.root)],
        what=f"mount the overlay for {dirs.top.name}")


def _ids(root: Path, db: str) -> dict[str, int]:
    ids = {}
    for line in (root / "etc" / db).read_text().splitlines():
        parts = line.split(":")
        if len(parts) > 2:
            ids[parts[0]] = int(parts[2])
    return ids


def write_files(root: Path, files: list[HostFile]) -> None:
    """Write files into the host's root, owners resolved from the host's own passwd/group."""
    users, groups = _ids(root, "passwd"), _ids(root, "group")
    for f in files:
        target = root / f.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        data = f.content.encode() if isinstance(f.content, str) else f.content
        tmp = target.with_name(f".{target.name}.testbed-tmp")
        tmp.write_bytes(data)
        os.chown(tmp, users[f.owner], groups[f.group])
        tmp.chmod(f.mode)
        os.replace(tmp, target)
    ssh_dir = root / "root/.ssh"
    if ssh_dir.is_dir():
        ssh_dir.chmod(0o700)


def enable_units(root: Path, units: list[str]) -> None:
    """What `systemctl enable` does for WantedBy=multi-user.target, without a running systemd."""
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in units:
        for where in ("etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system"):
            if (root / where / unit).exists():
                link = wants / unit
                if link.is_symlink() or link.exists():
                    link.unlink()
                link.symlink_to(f"/{where}/{unit}")
                break
        else:
            raise TestbedError(f"unit {unit} not found in {root}: the base is incomplete")


# Keep the Popen objects of hosts booted by this process: a collected Popen of a running child
# warns (ResourceWarning), and pytest would show that for every host.
_BOOTED: list[subprocess.Popen[bytes]] = []


def shared_dir(path: Path, root: Path, owner: str) -> Path:
    """A machine directory several hosts bind (`boot`'s binds), owned by `owner` as the hosts'
    passwd and group (read in `root`, one of them, all from the same base) know it."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, _ids(root, "passwd")[owner], _ids(root, "group")[owner])
    path.chmod(0o755)
    return path


def boot(dirs: HostDirs, name: str, bridge: str, unified_cgroup: bool = False,
         binds: tuple[tuple[Path, str], ...] = ()) -> int:
    """Boot a host; `unified_cgroup` gives it a cgroup v2 hierarchy even on a cgroup v1 machine.

    `binds`: (machine directory, path in the host) pairs. nspawn mounts them in the container's
    own mount namespace: they end with it, nothing stays mounted on the machine.

    systemd 258 and later refuse to run on cgroup v1 ("Detected unsupported legacy cgroup
    hierarchy, refusing execution"), which nspawn hands a container by default when the
    machine itself is on v1 (measured: forky's systemd 262 on this Debian 12 machine).
    """
    env = {**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"} if unified_cgroup else None
    log = dirs.console_log.open("ab")
    try:
        proc = subprocess.Popen(
            [
                "systemd-nspawn",
                "-D", str(dirs.root),
                "--boot",
                # No system bus on this machine: do not register with machined (without
                # --register=no --keep-unit: "Failed to open system bus").
                "--register=no",
                "--keep-unit",
                f"--network-bridge={bridge}",
                "-M", name,
                "--link-journal=no",
                "--console=read-only",
                *(f"--bind={src}:{dst}" for src, dst in binds),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    finally:
        log.close()
    _BOOTED.append(proc)
    dirs.pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def kill_container(dirs: HostDirs) -> None:
    """A power failure: SIGKILL the container's init (its whole PID namespace dies at once,
    nothing shuts down cleanly, no TCP connection is closed), then nspawn. The disk (overlay)
    stays as the host left it, for `boot` to start it again."""
    pid = running_pid(dirs)
    if pid is None:
        return
    for child in _children(pid):
        signal_pid(child, signal.SIGKILL)
    signal_pid(pid, signal.SIGKILL)
    _wait_gone(pid, 10)
    remove_stale_veth(dirs)


def remove_stale_veth(dirs: HostDirs) -> None:
    # nspawn's host-side veth can outlive a container killed hard; a new boot of the same
    # host would then fail with "File exists".
    veth = f"vb-{dirs.top.name}"
    if Path(f"/sys/class/net/{veth}").exists():
        subprocess.run(["ip", "link", "del", veth], capture_output=True, check=False)


def reap_exited() -> None:
    """Collect the exit of every nspawn this process booted that has ended. A host often ends
    on the first SIGTERM, before destroy_host looks: its nspawn, no longer "running" to
    running_pid, was never waited for and stayed a zombie (measured: 8 in one suite run)."""
    for proc in list(_BOOTED):
        if proc.poll() is not None:
            _BOOTED.remove(proc)


def destroy_host(dirs: HostDirs) -> None:
    pid = running_pid(dirs)
    if pid is not None:
        stop_pid(pid)
    reap_exited()
    remove_stale_veth(dirs)
    unmount_below(dirs.top)
    remove_tree(dirs.top)
