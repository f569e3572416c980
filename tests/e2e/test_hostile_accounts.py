"""End-to-end: a compromised `slurm` account on the controller turns its key into a link to a
root-only file while the deploy and the rotation run (issue 21).

The split cluster: split-ctl (slurmctld, the key's origin), split-db (slurmdbd, gets the key by
transfer), split-rest (the agent's copy, by transfer). On split-ctl the key's directory is
given to `slurm`, as a StateSaveLocation is, and a real process of the `slurm` account waits
with inotify for root to read the key (the survey), or for the rotation to rename the new key
into place, and at once renames a symlink to /etc/shadow over it: the swap the security review
timed by hand. Each run must fail on split-ctl with a reason naming the key and the link, and
no byte of /etc/shadow may reach another host or another account: every key, copy and kept
key of the cluster is compared by SHA-256 with /etc/shadow's.
"""

from __future__ import annotations

import shlex
import time

import pytest

from tests.e2e import hostcheck
from tests.e2e.pyinfra_run import run_deploy
from tests.e2e.test_deploy import COPY, KEY

pytestmark = pytest.mark.e2e

CTL, DB, REST = "split-ctl", "split-db", "split-rest"
KEY_DIR = KEY.rsplit("/", 1)[0]
TARGET = "/etc/shadow"
ATTACKER = "/tmp/swap-key-for-link.py"
SAVED = "/root/saved-jwt.key"
STATE = "/var/lib/slurmrestd-access/previous"
# Waits (inotify, the account's own directory) for the first event of the given kind on the
# key's name, then renames a symlink over the key. Plain python3 and ctypes: what any account
# on the host has.
ATTACK = r'''
import ctypes, os, struct, sys
directory, name, target, kind = sys.argv[1:5]
mask = {"read": 0x10, "renamed": 0x80}[kind]  # IN_CLOSE_NOWRITE, IN_MOVED_TO
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init()
assert fd >= 0 and libc.inotify_add_watch(fd, directory.encode(), mask) >= 0
print("armed", flush=True)
while True:
    buf, off = os.read(fd, 65536), 0
    while off < len(buf):
        _wd, _mask, _cookie, size = struct.unpack_from("iIII", buf, off)
        found = buf[off + 16:off + 16 + size].rstrip(b"\0").decode()
        off += 16 + size
        if found == name:
            link = os.path.join(directory, ".swap")
            os.symlink(target, link)
            os.rename(link, os.path.join(directory, name))
            print("swapped", flush=True)
            sys.exit(0)
'''


def _hash(topo, host: str, path: str) -> str | None:
    res = topo.ssh(host, f"test -f {shlex.quote(path)} && sha256sum < {shlex.quote(path)}",
                   check=False)
    return hostcheck._text(res).split()[0] if res.returncode == 0 else None


def _key_material(topo) -> dict[str, str | None]:
    """SHA-256 of every key, copy and kept key of the cluster (links not followed)."""
    found: dict[str, str | None] = {}
    for host in (CTL, DB, REST):
        listing = hostcheck._text(topo.ssh(
            host, f"for f in {KEY} {COPY} {KEY}.previous {COPY}.previous {STATE}/*; do "
                  "[ -f \"$f\" ] && [ ! -L \"$f\" ] && echo \"$f $(sha256sum < \"$f\" | "
                  "cut -c1-64)\"; done; true"))
        for line in listing.splitlines():
            path, digest = line.rsplit(" ", 1)
            found[f"{host}:{path}"] = digest
    return found


def _arm(topo, kind: str) -> None:
    topo.ssh(CTL, f"cat > {ATTACKER} <<'EOF'\n{ATTACK}\nEOF\nchmod 0755 {ATTACKER}; "
                  "systemctl reset-failed key-attacker 2>/dev/null; "
                  f"systemd-run --unit=key-attacker --uid=slurm --gid=slurm "
                  f"python3 {ATTACKER} {KEY_DIR} {KEY.rsplit('/', 1)[1]} {TARGET} {kind}")
    deadline = time.monotonic() + 20
    while "armed" not in hostcheck.journal(topo, CTL, "key-attacker"):
        assert time.monotonic() < deadline, "the attacker did not start"
        time.sleep(0.2)


def _swapped(topo) -> bool:
    return "swapped" in hostcheck.journal(topo, CTL, "key-attacker")


def _disarm_and_restore(topo, key_from: str) -> None:
    """Root puts a real key back (the attack is over) and slurmctld back onto it."""
    topo.ssh(CTL, "systemctl stop key-attacker 2>/dev/null; systemctl reset-failed "
                  f"key-attacker 2>/dev/null; rm -f {KEY} && install -o slurm -g slurm -m 0600 "
                  f"{shlex.quote(key_from)} {KEY} && systemctl restart slurmctld && "
                  "for i in $(seq 120); do scontrol ping | grep -q UP && exit 0; sleep 0.5; "
                  "done; exit 1")


@pytest.fixture(scope="module")
def cluster(testbed):
    topo = testbed.up("split", fresh=True)
    first = run_deploy(topo.inventory_path)
    assert first.returncode == 0, first.output[-6000:]
    # The account owns the key's directory, as slurm owns its StateSaveLocation.
    topo.ssh(CTL, f"chown slurm:slurm {KEY_DIR}")
    shadow = _hash(topo, CTL, TARGET)
    assert shadow
    yield topo, shadow
    topo.ssh(CTL, f"systemctl stop key-attacker 2>/dev/null; rm -f {ATTACKER} {SAVED}; "
                  f"chown root:root {KEY_DIR}", check=False)


def _assert_refused(run, shadow: str, topo) -> None:
    assert run.returncode != 0, run.output[-6000:]
    # The reason, in the per-cluster summary too: the host, the file, what is wrong with it.
    (line,) = [s for s in run.output.splitlines() if s.strip().startswith("split: failed")]
    assert f"split-ctl: key file {KEY} is a symbolic link" in line, line
    material = _key_material(topo)
    assert shadow not in material.values(), material
    # Nor is /etc/shadow's content anywhere in the run's output.
    raw = hostcheck._text(topo.ssh(CTL, f"base64 -w0 {TARGET}"))
    assert len(raw) > 40 and raw not in run.output


def test_a_key_swapped_for_a_link_during_a_deploy_is_refused_and_nothing_is_sent(cluster):
    topo, shadow = cluster
    good = _hash(topo, CTL, KEY)
    topo.ssh(CTL, f"install -m 0600 {KEY} {SAVED}")
    # split-db holds another key, so this deploy must send it the controller's.
    topo.ssh(DB, f"head -c 32 /dev/urandom > {KEY}.new && chown slurm:slurm {KEY}.new && "
                 f"chmod 0600 {KEY}.new && mv -f {KEY}.new {KEY}")
    stale = _hash(topo, DB, KEY)
    _arm(topo, "read")
    run = run_deploy(topo.inventory_path)
    assert _swapped(topo), "the attacker never saw root read the key"
    _assert_refused(run, shadow, topo)
    assert _hash(topo, DB, KEY) == stale and _hash(topo, REST, COPY) == good
    # The attack over, one deploy converges the cluster.
    _disarm_and_restore(topo, SAVED)
    again = run_deploy(topo.inventory_path)
    assert again.returncode == 0, again.output[-6000:]
    assert _hash(topo, DB, KEY) == good and _hash(topo, REST, COPY) == good
    assert hostcheck.agent_view(topo, REST)["accepted"] is True


def test_a_new_key_swapped_for_a_link_during_a_rotation_never_leaves_the_controller(cluster):
    topo, shadow = cluster
    old = _hash(topo, CTL, KEY)
    topo.ssh(CTL, f"install -m 0600 {KEY} {SAVED}")
    _arm(topo, "renamed")
    run = run_deploy(topo.inventory_path, "deploys/rotate_key.py")
    assert _swapped(topo), "the attacker never saw the new key renamed into place"
    _assert_refused(run, shadow, topo)
    # Nothing of the new key or of the link reached split-db or the agent, and the rollback
    # replaced the link (never followed) with the previous key, kept in root's directory.
    assert "rotation of cluster split failed" in run.output
    assert "rolled back to the previous key" in run.output and "BUT" not in run.output
    assert _hash(topo, CTL, KEY) == old
    assert _hash(topo, DB, KEY) == old and _hash(topo, REST, COPY) == old
    assert hostcheck._text(topo.ssh(CTL, f"stat -c '%F' {KEY}")).strip() == "regular file"
    kept = hostcheck._text(topo.ssh(CTL, f"stat -c '%U %a' {STATE}")).split()
    assert kept == ["root", "700"]
    assert hostcheck.agent_view(topo, REST)["accepted"] is True
    _disarm_and_restore(topo, SAVED)
    again = run_deploy(topo.inventory_path)
    assert again.returncode == 0, again.output[-6000:]
    assert hostcheck.agent_view(topo, REST)["accepted"] is True
