"""Hunt for the signing key while deploys run: every process's argv and every file in /tmp and
/var/tmp, sampled continuously on every host and, for argv, on the workstation.

The keys are not known in advance (a rotation makes a new one), so the samplers keep what they
saw, in root-only files, and the test scans it afterwards for every form of every key.
A sampler that saw nothing proves nothing: `Hunt.seen` lets a test check it saw the deploy.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from dataclasses import dataclass, field

HUNT_DIR = "/root/sra-hunt"
UNIT = "sra-secret-hunt"

# Runs on each host as root under systemd-run. Distinct argv lines and distinct (path, content)
# of small files in /tmp and /var/tmp are appended, base64, to files only root can read.
SAMPLER = r'''
import base64, hashlib, os, sys, time
out = sys.argv[1]
os.makedirs(out, mode=0o700, exist_ok=True)
os.chmod(out, 0o700)
seen_argv, seen_tmp = set(), set()
argv_f = open(os.path.join(out, "argv"), "ab")
tmp_f = open(os.path.join(out, "tmp"), "ab")
loops = 0
while True:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                c = f.read()
        except OSError:
            continue
        if c and c not in seen_argv:
            seen_argv.add(c)
            argv_f.write(base64.b64encode(c) + b"\n")
    for top in ("/tmp", "/var/tmp"):
        for root, dirs, files in os.walk(top):
            for name in files:
                p = os.path.join(root, name)
                try:
                    if os.path.getsize(p) > 262144:
                        continue
                    with open(p, "rb") as f:
                        data = f.read()
                except OSError:
                    continue
                h = hashlib.sha256(p.encode() + b"\0" + data).digest()
                if h in seen_tmp:
                    continue
                seen_tmp.add(h)
                tmp_f.write(base64.b64encode(p.encode()) + b" " + base64.b64encode(data) + b"\n")
    argv_f.flush()
    tmp_f.flush()
    loops += 1
    time.sleep(0.005)
'''


def key_forms(key: bytes) -> list[bytes]:
    return [key, key.hex().encode(), base64.b64encode(key), base64.urlsafe_b64encode(key),
            base64.b64encode(key).rstrip(b"=")]


@dataclass
class Samples:
    argv: list[bytes] = field(default_factory=list)
    tmp: list[tuple[str, bytes]] = field(default_factory=list)

    def hits(self, keys: list[bytes]) -> list[str]:
        forms = [f for k in keys for f in key_forms(k)]
        found = [f"argv: {a[:200]!r}" for a in self.argv if any(f in a for f in forms)]
        found += [f"file {p}" for p, data in self.tmp if any(f in data for f in forms)]
        return found


class WorkstationArgv:
    """argv of every process the workstation sees (the containers' included), in a thread."""

    def __init__(self) -> None:
        self.seen: set[bytes] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        self.seen.add(f.read())
                except OSError:
                    continue
            time.sleep(0.005)

    def __enter__(self) -> WorkstationArgv:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Hunt:
    """Samplers on every host of a running topology, from `start` to `collect`."""

    def __init__(self, topo, hosts: list[str]) -> None:
        self.topo, self.hosts = topo, hosts
        self.workstation = WorkstationArgv()

    def start(self) -> Hunt:
        for name in self.hosts:
            self.topo.ssh(name, f"systemctl stop {UNIT} 2>/dev/null; rm -rf {HUNT_DIR}; "
                                f"mkdir -m 0700 {HUNT_DIR}; cat > {HUNT_DIR}.py",
                          input=SAMPLER.encode())
            self.topo.ssh(name, f"systemd-run --quiet --unit={UNIT} --collect "
                                f"python3 {HUNT_DIR}.py {HUNT_DIR}")
        self.workstation.__enter__()
        time.sleep(0.5)
        return self

    def collect(self) -> dict[str, Samples]:
        self.workstation.__exit__()
        out: dict[str, Samples] = {
            "workstation": Samples(argv=[a.replace(b"\0", b" ") for a in self.workstation.seen])}
        for name in self.hosts:
            self.topo.ssh(name, f"systemctl stop {UNIT}", check=False)
            argv = self.topo.ssh(name, f"cat {HUNT_DIR}/argv", text=False).stdout
            tmp = self.topo.ssh(name, f"cat {HUNT_DIR}/tmp", text=False).stdout
            samples = Samples()
            for line in argv.splitlines():
                samples.argv.append(base64.b64decode(line).replace(b"\0", b" "))
            for line in tmp.splitlines():
                path, data = line.split(b" ", 1)
                samples.tmp.append((base64.b64decode(path).decode(errors="replace"),
                                    base64.b64decode(data)))
            out[name] = samples
            self.topo.ssh(name, f"rm -rf {HUNT_DIR} {HUNT_DIR}.py", check=False)
        return out
