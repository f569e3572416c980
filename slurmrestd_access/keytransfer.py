"""Move a signing key between hosts through the workstation's memory, never its disk.

A host's key is read by the host tool's `key export`, never by a shell redirect: root reads
only a regular file of its own (no symlink, hard link, FIFO or device) owned by root or the
key's owner, at most 1 MiB, and only if it has the SHA-256 the survey (or `key rotate`)
reported: an account that swaps its key for a link to another file between the survey and the
transfer gets a refusal naming the file, and no byte of the other file leaves the host.
The key travels as the standard input of `slurmrestd-access key install` (never as an
argument, so `ps` and pyinfra's output at any verbosity never show it), followed by the
SHA-256 it must have (on stdin too: a digest in argv is readable by every local user), is
checked on arrival, and is installed by the tool atomically with its final owner and mode.
`install_key` runs as a pyinfra FunctionCommand, at execution time. `source_sha256` (compare
before install) runs while the operations are made: for a host source it is never called (the
host's hash is a fact), a workstation file is read and hashed in memory, and a
`key_source_command` is not run at all while planning (push_key defers it to execution), so a
`--dry` run executes nothing of the site's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pyinfra.api import OperationError, StringCommand

from slurmrestd_access import privilege
from slurmrestd_access.hostfail import record_failure


class KeySourceError(RuntimeError):
    pass


@dataclass(frozen=True)
class KeySource:
    """Where the cluster's key comes from. Holds no key material."""

    kind: str  # "host" | "file" | "command"
    where: str  # host name, workstation path, or command line
    path: str = ""  # key path on the source host
    encoding: str = "raw"
    tool: str = ""  # the host tool on the source host (reads the key there)
    owner: str = ""  # who besides root may own the key on the source host

    def describe(self) -> str:
        if self.kind == "host":
            return f"{self.path} on {self.where}"
        return f"workstation {self.kind} {self.where!r}"


def _decode(raw: bytes, encoding: str, what: str) -> bytes:
    if encoding == "base64":
        try:
            return base64.b64decode(b"".join(raw.split()), validate=True)
        except binascii.Error:
            raise KeySourceError(f"{what} is not valid base64") from None
    return raw


def read_workstation_key(source: KeySource) -> bytes:
    """Read the key from a workstation file or command, into memory only."""
    if source.kind == "file":
        path = Path(source.where).expanduser()
        try:
            mode = path.stat().st_mode
            raw = path.read_bytes()
        except OSError as exc:
            raise KeySourceError(f"cannot read key source file {path}: {exc.strerror}") from None
        if mode & 0o077:
            raise KeySourceError(
                f"key source file {path} is readable by group or others (mode {mode & 0o777:o}); "
                f"run: chmod 600 {path}"
            )
        return _decode(raw, source.encoding, f"key source file {path}")
    done = subprocess.run(  # noqa: S602 - the administrator's own command line, by design
        source.where, shell=True, capture_output=True, check=False, timeout=120
    )
    if done.returncode != 0:
        # stderr of a secrets CLI says why it failed; stdout might hold key material: never shown
        raise KeySourceError(
            f"key source command exited {done.returncode}: "
            f"{done.stderr.decode(errors='replace').strip()[-300:]}"
        )
    raw = done.stdout
    if source.encoding == "raw" and raw.endswith(b"\n") and len(raw) == 33:
        raw = raw[:-1]  # `echo`-style trailing newline from a CLI that prints raw keys
    return _decode(raw, source.encoding, "output of the key source command")


# Each command that carries the key has a deadline: a host that dies while one runs (power
# lost, kernel panic) leaves the SSH connection open, and without one the run would wait for
# TCP to give up, about 15 minutes (measured on the testbed: tests/e2e/test_fleet.py kills a
# host mid-rotation).
TRANSFER_TIMEOUT = 120


def export_command(source: KeySource, expect: bool) -> StringCommand:
    return StringCommand(
        shlex.quote(source.tool), "key", "export", "--path", shlex.quote(source.path),
        *(("--owner", shlex.quote(source.owner)) if source.owner else ()),
        *(("--expect-sha256-stdin",) if expect else ()),
    )


def _tool_reason(output) -> str:
    """The host tool's reason, from its JSON on stdout or its ERROR line on stderr."""
    for line in output.stdout_lines:
        try:
            report = json.loads(line)
        except ValueError:
            continue
        if isinstance(report, dict) and report.get("message"):
            return f"{report['message']} — {report.get('hint', '')} ({report.get('detail')})"
    return " ".join(line for line in output.stderr_lines if line.strip())[-500:]


def read_host_key(state, source: KeySource, expected_sha256: str | None = None) -> bytes:
    src = state.inventory.get_host(source.where)
    if not src.connected:
        src.connect(raise_exceptions=True)
    try:
        ok, output = src.run_shell_command(
            export_command(source, expected_sha256 is not None), print_output=False,
            _stdin=expected_sha256, _timeout=TRANSFER_TIMEOUT, **privilege.arguments(state, src),
        )
    except TimeoutError:
        raise KeySourceError(f"no answer from {source.where} within {TRANSFER_TIMEOUT} s while "
                             f"reading the key {source.path} (the host went down?)") from None
    if not ok:
        raise KeySourceError(f"cannot read the key {source.path} on {source.where}: "
                             + (_tool_reason(output) or "no answer (the connection was lost?)"))
    try:
        key = base64.b64decode("".join(output.stdout_lines), validate=True)
    except binascii.Error:
        raise KeySourceError(f"unreadable key {source.path} on {source.where}") from None
    if expected_sha256 is not None and hashlib.sha256(key).hexdigest() != expected_sha256:
        raise KeySourceError(f"the key read from {source.path} on {source.where} does not have "
                             f"the SHA-256 it was surveyed with ({expected_sha256[:12]}...)")
    return key


def load_key(state, source: KeySource, expected_sha256: str | None = None) -> bytes:
    if source.kind == "host":
        return read_host_key(state, source, expected_sha256)
    return read_workstation_key(source)


_source_hashes: dict[KeySource, str] = {}


def source_sha256(state, source: KeySource) -> str:
    """SHA-256 of the source key, asked once per run; the key itself is dropped at once."""
    if source not in _source_hashes:
        try:
            _source_hashes[source] = hashlib.sha256(load_key(state, source)).hexdigest()
        except KeySourceError as exc:
            raise OperationError(str(exc)) from None
    return _source_hashes[source]


def install_key(
    state, host, source: KeySource, tool: str, dest: str, owner: str, group: str, mode: int,
    create_parent: bool = False, expected_sha256: str | None = None,
) -> bool:
    """FunctionCommand body: load the key and install it on `host` through stdin.

    `expected_sha256`: the key's hash as the survey or `key rotate` reported it; the source
    host refuses to send, and `host` to install, any other. None only when nothing has
    reported it yet (a first deploy, whose controller creates the key in the same run)."""
    try:
        key = load_key(state, source, expected_sha256)
    except KeySourceError as exc:
        raise OperationError(str(exc)) from None
    if len(key) < 32:
        raise OperationError(
            f"the key from {source.describe()} has {len(key)} bytes; at least 32 are needed"
        )
    digest = hashlib.sha256(key).hexdigest()
    command = StringCommand(
        shlex.quote(tool), "key", "install", "--path", shlex.quote(dest), "--owner",
        shlex.quote(owner), "--group", shlex.quote(group),
        "--mode", f"{mode:04o}", "--json",
        *(["--create-parent"] if create_parent else []),
    )
    encoded = base64.b64encode(key).decode() + "\n" + (expected_sha256 or digest) + "\n"
    del key
    # Under sudo, stdin still reaches the tool: sudo reads no password from it (NOPASSWD, or
    # pyinfra's askpass helper with -A).
    try:
        ok, output = host.run_shell_command(command, print_output=False, _stdin=encoded,
                                            _timeout=TRANSFER_TIMEOUT,
                                            **privilege.arguments(state, host))
    except TimeoutError:
        raise OperationError(
            f"installing the key at {dest} on {host.name} failed: no answer from {host.name} "
            f"within {TRANSFER_TIMEOUT} s (the host went down, or the connection was lost)"
        ) from None
    if not ok:
        # The tool's own reason (stderr, or its JSON on stdout); a lost connection or a timeout
        # leaves neither, and the reason must still name the host and the step.
        detail = " ".join(line for line in output.stderr_lines if line.strip())[-500:] or \
            " ".join(line for line in output.stdout_lines if line.strip())[-500:]
        raise OperationError(
            f"installing the key at {dest} on {host.name} failed: "
            + (detail or f"no answer from {host.name} (the connection was lost, the host went "
               "down, or the command timed out)")
        )
    return True


def install_key_step(state, host, *args, **kwargs) -> bool:
    """FunctionCommand body of the deploy: `install_key`, its refusal said as this host's
    reason (a red line, and the per-cluster summary's), not as a Python traceback."""
    try:
        return install_key(state, host, *args, **kwargs)
    except OperationError as exc:
        return record_failure(host, str(exc))
