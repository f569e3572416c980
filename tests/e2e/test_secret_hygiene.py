"""End-to-end: the signing key never shows in deploy output, journals or readable files."""

from __future__ import annotations

import base64
import os

import pytest

from tests.e2e.pyinfra_run import run_deploy

pytestmark = pytest.mark.e2e

KEY = "/var/spool/slurm/jwt_hs256.key"

# Run on a host: list every regular file that "others" may read (reachable through
# directories others may search) and whose bytes contain a form of the key. Forms on stdin.
SCAN = r"""
import os, stat, sys
forms = [bytes.fromhex(f) for f in sys.stdin.read().split()]
skip = ("/proc", "/sys", "/dev", "/run/udev")
hits = []
for root, dirs, files in os.walk("/", topdown=True):
    if root.startswith(skip):
        dirs[:] = []
        continue
    st = os.stat(root)
    if not st.st_mode & stat.S_IXOTH:
        dirs[:] = []
        continue
    for name in files:
        path = os.path.join(root, name)
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or not st.st_mode & stat.S_IROTH:
                continue
            if st.st_size > 50_000_000:
                continue
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        if any(f in data for f in forms):
            hits.append(path)
print("\n".join(hits))
"""


def key_forms(key: bytes) -> list[bytes]:
    return [key, key.hex().encode(), base64.b64encode(key), base64.urlsafe_b64encode(key),
            base64.b64encode(key).rstrip(b"=")]


@pytest.fixture(scope="module")
def known_key_deploy(testbed):
    topo = testbed.up("split", fresh=True)
    ctl = next(h.name for h in topo.hosts if "slurmctld" in h.roles)
    key = os.urandom(32)
    # Rotate to a key the test knows, the safe way: stdin, temp file, rename.
    topo.ssh(ctl, f"mkdir -p -m 0755 /var/spool/slurm; umask 077; base64 -d > {KEY}.test && "
                  f"chown slurm:slurm {KEY}.test && mv -f {KEY}.test {KEY}",
             input=base64.b64encode(key) + b"\n")
    run = run_deploy(topo.inventory_path, "deploys/slurmrestd_access.py", "-vvv", "--diff",
                     "--debug")
    assert run.returncode == 0, run.output[-6000:]
    return topo, key, run


def test_key_absent_from_deploy_output_at_full_verbosity(known_key_deploy):
    _, key, run = known_key_deploy
    assert run.totals()["changed"] > 0  # the key really moved in this run
    raw = run.output.encode()
    for form in key_forms(key):
        assert form not in raw


def test_key_absent_from_every_journal(known_key_deploy):
    topo, key, _ = known_key_deploy
    for h in topo.hosts:
        journal = topo.ssh(h.name, "journalctl --no-pager -o export -q", check=False,
                           text=False).stdout
        assert journal, f"{h.name}: empty journal; the test would prove nothing"
        for form in key_forms(key):
            assert form not in journal, f"{h.name}: key in the journal"


def test_key_absent_from_files_others_can_read(known_key_deploy):
    topo, key, _ = known_key_deploy
    forms = "\n".join(f.hex() for f in key_forms(key)).encode()
    for h in topo.hosts:
        res = topo.ssh(h.name, f"python3 -c '{SCAN}'", input=forms)
        out = res.stdout.decode() if isinstance(res.stdout, bytes) else res.stdout
        assert out.strip() == "", f"{h.name}: key readable by others in {out}"


def test_the_scan_would_find_a_readable_copy(known_key_deploy):
    """The scan above can fail: a world-readable file holding the key is found."""
    topo, key, _ = known_key_deploy
    name = topo.hosts[0].name
    topo.ssh(name, "base64 -d > /tmp/planted && chmod 0644 /tmp/planted",
             input=base64.b64encode(key) + b"\n")
    try:
        forms = "\n".join(f.hex() for f in key_forms(key)).encode()
        res = topo.ssh(name, f"python3 -c '{SCAN}'", input=forms)
        out = res.stdout.decode() if isinstance(res.stdout, bytes) else res.stdout
        assert "/tmp/planted" in out
    finally:
        topo.ssh(name, "rm -f /tmp/planted")
