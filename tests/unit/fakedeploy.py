"""Run the project's real deploy files with the real pyinfra CLI on pyinfra's @fake hosts.

Each fake host answers the deploy's survey and host-tool commands from a `FakeHost` (files with
owner/mode/hash, units), so a test describes a host's state and reads back, in order, the
commands the deploy would have run on it. No SSH, no testbed, no wheel build: the tool's
wheelhouse is replaced by a fixed digest.

    run = deploy(tmp_path, {"hpc1": host}, roles={...})
    run.commands["@fake/hpc1"]   # every command pyinfra ran on that host, in order

Used as a module (`python -m tests.unit.fakedeploy OUT ARGS...`) inside a subprocess: the
pyinfra CLI patches gevent into its process, and the deploy keeps per-run caches.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from slurmrestd_access.facts import EXIT_MARK

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "f" * 16  # the fake wheelhouse's digest
KEY = "/var/spool/slurm/jwt_hs256.key"
COPY = "/var/lib/slurm-web/slurmrestd.key"


def sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


@dataclass
class FakeHost:
    """What a host looks like to the deploy's survey."""

    cluster: str = "hpc"
    roles: tuple[str, ...] = ("slurmctld", "slurmdbd", "slurmrestd", "compute")
    tool: str = DIGEST  # installed tool's digest ("" = not installed)
    # path -> (owner, group, mode, sha256)
    files: dict[str, tuple[str, str, int, str]] = field(default_factory=dict)
    # unit -> (ActiveState, UnitFileState)
    units: dict[str, tuple[str, str]] = field(default_factory=dict)
    data: dict = field(default_factory=dict)  # extra host data (settings)
    plan_changed: bool = False  # the tool's plan: conf files / agent.ini need a merge
    responses: dict = field(default_factory=dict)  # more canned answers (fake_responses)
    uid: int = 0  # who the survey runs as
    survey_override: list | dict | None = None  # the survey's answer, e.g. sudo's refusal
    # The connect check the installed tool's survey ran along (its JSON, with "exit_code").
    survey_check: dict | None = None

    def survey_lines(self) -> list[str] | dict:
        if self.survey_override is not None:
            return self.survey_override
        # user= and rc=: what the survey through `sudo -n` adds (ignored as root).
        lines = ["user=admin", "rc=0", f"uid {self.uid}", "python 3.13", "machine x86_64",
                 "slurm slurm 24.11.5", f"tool {self.tool}",
                 "jwtplugin /usr/lib/x86_64-linux-gnu/slurm-wlm/auth_jwt.so"]
        for path, (owner, group, mode, digest) in self.files.items():
            lines.append(f"file|{path}|1|{owner}|{group}|{mode:o}|regular file|{digest}")
        for name in ("slurm", "slurm-web"):
            lines += [f"user {name} 1", f"group {name} 1"]
        for unit, (active, unit_file) in self.units.items():
            lines += [f"unit Id={unit}", "unit LoadState=loaded", f"unit ActiveState={active}",
                      f"unit UnitFileState={unit_file}", "unit "]
        if self.tool:  # the installed tool's plan, brought along by the deploy's survey
            lines += ["__slurmrestd_access_plan_begin", json.dumps(self.plan()), f"{EXIT_MARK}0",
                      "__slurmrestd_access_plan_end"]
        if self.tool and self.survey_check is not None:
            lines += ["__slurmrestd_access_check_begin", json.dumps(self.survey_check),
                      f"{EXIT_MARK}{self.survey_check.get('exit_code', 0)}",
                      "__slurmrestd_access_check_end"]
        return lines

    def plan(self) -> dict:
        conf = [{"file": "/etc/slurm/slurm.conf", "exit_code": 0, "changed": self.plan_changed}]
        if "slurmdbd" in self.roles:
            conf.append({"file": "/etc/slurm/slurmdbd.conf", "exit_code": 0,
                         "changed": self.plan_changed})
        return {"exit_code": 0, "conf": conf,
                "preflight": {"ok": True, "findings": [], "exit_code": 0},
                "agent_ini": {"exit_code": 0, "changed": self.plan_changed}}


def deployed_host(key_sha: str = "a" * 64, **overrides) -> FakeHost:
    """A single host on which the deploy already ran: every file and unit as it leaves them."""
    from slurmrestd_access.settings import Settings, settings_from_host_data
    from slurmrestd_access.watchconf import (
        WATCH_CONFIG_PATH,
        WATCH_UNIT,
        WATCH_UNIT_PATH,
        render_watch_toml,
        render_watch_unit,
    )
    from watchdog_daemon.config.dropin import render_dropin

    data = overrides.pop("data", {})
    known = {f.name for f in fields(Settings)}  # (data may hold a typo a test is about)
    s = settings_from_host_data("h", {"cluster": "hpc",
                                      **{k: v for k, v in data.items() if k in known}})
    host = FakeHost(data=data, **overrides)
    host.files = {
        KEY: ("slurm", "slurm", 0o600, key_sha),
        COPY: ("slurm-web", "slurm-web", 0o400, key_sha),
        s.slurmrestd_dropin: ("root", "root", 0o644,
                              sha(render_dropin(socket_path=s.slurmrestd_socket))),
        WATCH_CONFIG_PATH: ("root", "root", 0o644, sha(render_watch_toml(s))),
        WATCH_UNIT_PATH: ("root", "root", 0o644, sha(render_watch_unit(s))),
        s.slurm_conf: ("root", "root", 0o644, "c" * 64),
        s.slurmdbd_conf: ("slurm", "slurm", 0o600, "d" * 64),
        s.agent_ini: ("root", "root", 0o644, "e" * 64),
        **host.files,
    }
    host.units = {u: ("active", "enabled") for u in (
        "slurmctld.service", "slurmdbd.service", "slurmrestd.service",
        "slurm-web-agent.service", WATCH_UNIT)} | host.units
    return host


@dataclass
class FakeRun:
    returncode: int
    output: str
    commands: dict[str, list[str]]
    sudo: dict[str, list[bool]] = field(default_factory=dict)  # per command: run with _sudo
    # (host, command) of every host in the order they ran: what one host did before another.
    sequence: list[tuple[str, str]] = field(default_factory=list)

    def ran(self, host: str, text: str) -> list[int]:
        """Indexes of this host's commands that contain `text`."""
        return [i for i, c in enumerate(self.commands.get(host, [])) if text in c]


def _inventory(hosts: dict[str, FakeHost]) -> str:
    lines = ["import re"]
    groups: dict[str, list[str]] = {}
    entries = []
    for name, h in hosts.items():
        responses = {
            **h.responses,
            "export LC_ALL=C": h.survey_lines(),
            "slurmrestd-access plan": [json.dumps(h.plan()), f"{EXIT_MARK}0"],
            "slurmrestd-access check": [json.dumps({"slurm": "24.11.5", "cluster": h.cluster}),
                                        f"{EXIT_MARK}0"],
        }
        data = {"cluster": h.cluster, "fake_delay": 0, "fake_delay_jitter": 0,
                "fake_responses": responses, **h.data}
        entries.append(f"    ({'@fake/' + name!r}, {data!r}),")
        for role in h.roles:
            groups.setdefault(role, []).append("@fake/" + name)
    lines.append("hosts = [\n" + "\n".join(entries) + "\n]")
    for role in ("slurmctld", "slurmdbd", "slurmrestd", "compute"):
        lines.append(f"{role} = {groups.get(role, [])!r}")
    return "\n".join(lines) + "\n"


def deploy(tmp_path: Path, hosts: dict[str, FakeHost], *args: str,
           deploy_file: str = "deploys/slurmrestd_access.py", env: dict | None = None) -> FakeRun:
    """Run `pyinfra [-y] INVENTORY DEPLOY ARGS` on fake hosts; `--dry` among ARGS plans only."""
    inventory = tmp_path / "inventory.py"
    inventory.write_text(_inventory(hosts))
    out = tmp_path / "commands.json"
    yes = [] if "--dry" in args else ["-y"]
    done = subprocess.run(
        [sys.executable, "-m", "tests.unit.fakedeploy", str(out), *yes, str(inventory),
         deploy_file, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        stdin=subprocess.DEVNULL,  # as in CI: no terminal to prompt on
        env={**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT), **(env or {})})
    logged = json.loads(out.read_text()) if out.exists() else {}
    commands = {h: [c for c, _s in entries] for h, entries in logged.items()}
    sudo = {h: [s for _c, s in entries] for h, entries in logged.items()}
    order = Path(f"{out}.order")
    sequence = [tuple(e) for e in json.loads(order.read_text())] if order.exists() else []
    return FakeRun(done.returncode, done.stdout + done.stderr, commands, sudo, sequence)


def _main(out: str, argv: list[str]) -> None:
    """In the subprocess: fake wheelhouse, command log, then pyinfra's own CLI."""
    import atexit
    import tempfile

    from pyinfra.connectors.fake import FakeConnector

    from slurmrestd_access import operations, wheelhouse

    bundle = Path(tempfile.mkdtemp()) / f"bundle-{DIGEST}.tar.gz"
    bundle.write_bytes(b"")
    operations.ensure_wheelhouse = lambda python, machine: wheelhouse.Wheelhouse(
        bundle.parent, (), DIGEST, bundle)

    log: dict[str, list[tuple[str, bool]]] = {}
    sequence: list[tuple[str, str]] = []
    original = FakeConnector.run_shell_command

    def logged(self, command, *a, **kw):
        text = command if isinstance(command, str) else command.get_masked_value()
        log.setdefault(self.host.name, []).append((text, bool(kw.get("_sudo"))))
        sequence.append((self.host.name, text))
        return original(self, command, *a, **kw)

    FakeConnector.run_shell_command = logged
    atexit.register(lambda: Path(out).write_text(json.dumps(log)))
    atexit.register(lambda: Path(f"{out}.order").write_text(json.dumps(sequence)))

    from pyinfra_cli.main import main

    sys.argv = ["pyinfra", *argv]
    main()


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2:])
