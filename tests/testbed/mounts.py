"""Find and remove mounts below a directory (so nothing is left mounted and rm -rf is safe)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.testbed.errors import TestbedError


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_below(root: Path, mountinfo: str | None = None) -> list[Path]:
    """Mount points at or below root, deepest first."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    root_s = str(root.resolve()) if root.exists() else str(root)
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = _unescape(fields[4])
        if point == root_s or point.startswith(root_s.rstrip("/") + "/"):
            found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def unmount_below(root: Path) -> list[Path]:
    """Unmount everything at or below root; lazily if a plain unmount is refused."""
    done = []
    for point in mounts_below(root):
        res = subprocess.run(["umount", str(point)], capture_output=True, check=False)
        if res.returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)
        done.append(point)
    left = mounts_below(root)
    if left:
        raise TestbedError(
            f"could not unmount {', '.join(map(str, left))}: stop whatever uses them "
            "(fuser -vm PATH) and run `python -m tests.testbed down` again"
        )
    return done


def remove_tree(path: Path) -> None:
    """rm -rf that never follows into a mount (a bind of /dev or /proc must never be emptied)."""
    if not path.exists() and not path.is_symlink():
        return
    unmount_below(path)
    # --one-file-system is a second guard in case a mount appeared in between.
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)
    if path.exists():
        raise TestbedError(f"could not remove {path}: remove it by hand (after checking mounts)")


def is_mountpoint(path: Path) -> bool:
    return os.path.ismount(path)
