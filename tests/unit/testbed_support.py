"""Shared set-ups of the testbed's and the stand-in's unit tests (no hosts, no network)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.testbed import testbed as testbed_mod
from tests.testbed.topology import load_catalog


def fake_testbed(tmp_path: Path, monkeypatch: Any, fake: Any, topology: str
                 ) -> testbed_mod.Testbed:
    """A Testbed whose hosts of `topology` look running and whose SSH is `fake.ssh`."""
    monkeypatch.setattr(testbed_mod, "ssh", fake.ssh)
    bed = testbed_mod.Testbed(load_catalog(), cache=tmp_path / "cache",
                              state_dir=tmp_path / "state")
    running = {h.name for h in bed.catalog.topology(topology).hosts}
    monkeypatch.setattr(testbed_mod.machine, "running_pid",
                        lambda dirs: 1 if dirs.top.name in running else None)
    bed.state_dir.mkdir()
    bed.key_path.write_text("k")
    bed.fake = fake  # type: ignore[attr-defined]
    bed.running = running  # type: ignore[attr-defined]
    return bed


def agent_files(tmp_path: Path, key: bytes) -> tuple[Path, Path, Path, Path, Path]:
    """What the stand-in reads, pointing at a slurmrestd socket in tmp_path: (socket, key copy,
    agent.ini, slurm.conf with accounting, the agent's own gateway key)."""
    sock = tmp_path / "slurmrestd.socket"
    copy = tmp_path / "slurmrestd.key"
    copy.write_bytes(key)
    gateway = tmp_path / "jwt.key"
    gateway.write_bytes(b"g" * 32)
    ini = tmp_path / "agent.ini"
    ini.write_text(f"[service]\ncluster=hpc\n[slurmrestd]\nuri=unix://{sock}\njwt_key={copy}\n"
                   f"[jwt]\nkey={gateway}\n")
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=hpc\nAccountingStorageType=accounting_storage/slurmdbd\n")
    return sock, copy, ini, conf, gateway
