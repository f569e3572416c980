"""The deploy's survey of a host, from one Python process of the installed tool.

The workstation's shell survey (slurmrestd_access.hoststate.survey_script) starts some sixty
processes (stat, sha256sum, getent, a tool run per key); on a no-change re-run that was most of
the remote time. Once the tool is installed, `slurmrestd-access survey` answers instead, with
the same tagged lines, so the workstation's parser and every decision stay one. What it cannot
answer as the shell would (python3 older than 3.9: the shell lists the other interpreters) it
declines, and the shell survey runs.

Root reads here: files the deploy writes or Slurm reads (lstat, opened with O_NOFOLLOW, checked
with fstat after opening, a bounded read), and keys as `key fingerprint` describes them.
"""

from __future__ import annotations

import glob
import grp
import json
import os
import pwd
import re
import shlex
import stat
import subprocess
from collections.abc import Iterable

from watchdog_daemon.config.slurmrelease import VERSION_COMMANDS
from watchdog_daemon.keys.keyfile import (
    OPEN_READ_FLAGS,
    describe_file,
    name_of_gid,
    name_of_uid,
    sha256_of_fd,
)

# Where distributions put Slurm's plugins; PluginDir of slurm.conf is searched first.
PLUGIN_DIRS = ("/usr/lib/x86_64-linux-gnu/slurm-wlm", "/usr/lib/aarch64-linux-gnu/slurm-wlm",
               "/usr/lib64/slurm", "/usr/lib/slurm", "/usr/local/lib/slurm")
SBIN_PATH = ":/usr/sbin:/sbin:/usr/local/sbin"  # slurmctld, slurmd and slurmdbd live there
# Files the deploy compares are configuration, units and keys: a larger one is not hashed (it
# then matches nothing, and the deploy acts where it would).
MAX_HASHED_BYTES = 64 << 20
_PLUGINDIR = re.compile(r"^\s*plugindir\s*=\s*(.*)$", re.IGNORECASE)
# stat(1)'s %F words, which the shell survey reports and the deploy compares against.
_KINDS = ((stat.S_ISDIR, "directory"), (stat.S_ISLNK, "symbolic link"), (stat.S_ISFIFO, "fifo"),
          (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character special file"),
          (stat.S_ISBLK, "block special file"))


class Declined(Exception):
    """This host needs the shell survey (see the module's text)."""


def _c_env() -> dict[str, str]:
    return {**os.environ, "LC_ALL": "C"}


def _start(argv: list[str], path: str | None = None) -> subprocess.Popen[str] | None:
    env = _c_env()
    if path is not None:
        env["PATH"] = path
    try:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL, text=True, env=env)
    except OSError:
        return None


def _finish(proc: subprocess.Popen[str] | None, timeout: float = 15) -> tuple[int, str]:
    if proc is None:
        return 127, ""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return 124, ""
    return proc.returncode, out


def file_kind(mode: int, size: int) -> str:
    if stat.S_ISREG(mode):
        return "regular empty file" if size == 0 else "regular file"
    for test, word in _KINDS:
        if test(mode):
            return word
    return "weird file"


def _sha256_of(path: str, st: os.stat_result) -> str:
    """Of a regular file with one name, as opened (never through a link): "" otherwise."""
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size > MAX_HASHED_BYTES:
        return ""
    try:
        fd = os.open(path, OPEN_READ_FLAGS)
    except OSError:
        return ""
    try:
        opened = os.fstat(fd)
        if (opened.st_ino, opened.st_dev) != (st.st_ino, st.st_dev) or opened.st_nlink != 1:
            return ""
        return sha256_of_fd(fd, MAX_HASHED_BYTES) or ""
    except OSError:
        return ""
    finally:
        os.close(fd)


def file_line(path: str) -> str:
    """`file|PATH|1|OWNER|GROUP|MODE|KIND|SHA256|LINKS`, or `file|PATH|0`: the shell's line."""
    try:
        st = os.lstat(path)
    except OSError:
        return f"file|{path}|0"
    # stat(1)'s word for an id without a name
    owner, group = name_of_uid(st.st_uid) or "UNKNOWN", name_of_gid(st.st_gid) or "UNKNOWN"
    mode = f"{stat.S_IMODE(st.st_mode):o}"
    kind = file_kind(st.st_mode, st.st_size)
    return f"file|{path}|1|{owner}|{group}|{mode}|{kind}|{_sha256_of(path, st)}|{st.st_nlink}"


def key_line(path: str) -> str:
    """A key (or a file in a directory another account owns), as `key fingerprint` says."""
    if not os.path.lexists(path):
        return f"file|{path}|0"
    return f"keyjson|{path}|{json.dumps(describe_file(path).to_dict())}"


def _read_small(path: str, limit: int = 1 << 16, follow: bool = True) -> str:
    """At most `limit` bytes of a regular file ("" otherwise). follow=False: never through a
    symlink (slurm.conf's directory may belong to slurm); /etc/os-release is one by design."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
    if not follow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        return os.read(fd, limit).decode("utf-8", "replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


def os_ids(text: str) -> list[str]:
    """/etc/os-release's ID and ID_LIKE words, as `. /etc/os-release; echo $ID $ID_LIKE`."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() in ("ID", "ID_LIKE"):
            try:
                values[key.strip()] = " ".join(shlex.split(value))
            except ValueError:
                values[key.strip()] = value.strip()
    return f"{values.get('ID', '')} {values.get('ID_LIKE', '')}".split()


def plugin_dirs(slurm_conf_text: str) -> list[str]:
    """PluginDir of slurm.conf (the last one; colon-separated), then the distributions'."""
    found = [m.group(1) for line in slurm_conf_text.splitlines()
             if (m := _PLUGINDIR.match(line))]
    return (found[-1].replace(":", " ").split() if found else []) + list(PLUGIN_DIRS)


def _tool_version(tool_prefix: str) -> str:
    found = sorted(glob.glob(f"{glob.escape(tool_prefix)}/current/lib/python*/site-packages/"
                             "slurmrestd_access-*.dist-info"))
    if not found:
        return ""
    name = found[0].rsplit("slurmrestd_access-", 1)[1]
    return name[:-len(".dist-info")] if name.endswith(".dist-info") else name


class Survey:
    """Starts the survey's slow processes (systemctl, python3, Slurm's -V) at once, so that they
    run while the files are read; `lines()` collects them."""

    def __init__(self, *, files: Iterable[str], keys: Iterable[str], units: list[str],
                 users: Iterable[str], groups: Iterable[str], tool_prefix: str,
                 slurm_conf: str) -> None:
        self.files, self.keys = list(files), set(keys)
        self.units, self.users, self.groups = units, list(users), list(groups)
        self.tool_prefix, self.slurm_conf = tool_prefix, slurm_conf
        self._python = _start(["python3", "-c", "import sys;print('%d.%d'%sys.version_info[:2])"])
        self._units = _start(["systemctl", "show", "-p", "Id,LoadState,ActiveState,UnitFileState",
                              *units]) if units else None
        self._sbin = os.environ.get("PATH", "") + SBIN_PATH
        self._slurm = _start([VERSION_COMMANDS[0], "-V"], self._sbin)

    def _slurm_version(self) -> str:
        code, out = _finish(self._slurm)
        first = out.splitlines()[0] if out else ""
        if code == 0 and first:
            return first
        for command in VERSION_COMMANDS[1:]:
            code, out = _finish(_start([command, "-V"], self._sbin))
            if code == 0 and out.splitlines():
                return out.splitlines()[0]
        return ""

    def lines(self) -> list[str]:
        # The files first: python3, systemctl and Slurm's -V run meanwhile.
        files = [key_line(p) if p in self.keys else file_line(p) for p in self.files]
        code, version = _finish(self._python)
        version = version.strip()
        if code != 0 or not re.fullmatch(r"\d+\.\d+", version) or \
                tuple(int(p) for p in version.split(".")) < (3, 9):
            raise Declined("python3 is missing or older than 3.9")
        out = [f"uid {os.geteuid()}", f"python {version}", f"machine {os.uname().machine}",
               "pythons"]
        out.append(f"os {' '.join(os_ids(_read_small('/etc/os-release')))}".rstrip())
        slurm = self._slurm_version()
        if slurm:
            out.append(f"slurm {slurm}")
        installed = _read_small(f"{self.tool_prefix}/INSTALLED", 4096, follow=False)
        out.append(f"tool {installed.rstrip(chr(10))}")
        out.append(f"toolversion {_tool_version(self.tool_prefix)}")
        # Not through a symlink (the shell's sed did follow one): root reads nothing another
        # account could point elsewhere.
        for directory in plugin_dirs(_read_small(self.slurm_conf, 1 << 22, follow=False)):
            if os.path.exists(f"{directory}/auth_jwt.so"):
                out.append(f"jwtplugin {directory}/auth_jwt.so")
                break
        out.extend(files)
        for user in self.users:
            out.append(f"user {user} {int(_exists(pwd.getpwnam, user))}")
        for group in self.groups:
            out.append(f"group {group} {int(_exists(grp.getgrnam, group))}")
        if self._units is not None:
            _, shown = _finish(self._units)
            out.extend(f"unit {line}" for line in shown.splitlines())
        return out


def _exists(lookup, name: str) -> bool:
    try:
        lookup(name)
    except KeyError:
        return False
    return True
