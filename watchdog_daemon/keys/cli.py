"""`slurmrestd-access key ensure|install|export|sync|fingerprint|rotate`: JWT signing keys on
this host.

The key itself never goes through a command-line argument (visible in `ps`), never to stderr:
`install` reads it from stdin (one line of base64, then the SHA-256 it must have), `export`
writes it to stdout for the deploy's transfer (one line of base64, and only after the file
passed every rule of `read_key` and matched the SHA-256 given on stdin), `sync` copies it file
to file, and every report names only paths, owners, modes and SHA-256 digests. Digests travel
on stdin too: any local user can read a command line.

Output: `ensure` and `install` print one JSON object ({"result"|"changed", "sha256", ...});
`sync` and `fingerprint` print text, or JSON with `--json`. On failure: `ERROR: <reason>:
<message> — <hint>` on stderr (and with `--json` also {"error", "detail", "message", "hint",
"exit_code", "file"} on stdout), exit the problem's code. <reason> and "error" are the README's
names of the exit code (`change_refused`, `key_insecure`...); "detail" is the finer kind
(`sha256_mismatch`, `key_unstable`, `bad_input`...).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import json
import re
import sys
from pathlib import Path
from typing import Any

from watchdog_daemon.exitcodes import ExitCode
from watchdog_daemon.keys.keyfile import (
    MIN_KEY_BYTES,
    KeyFileError,
    KeyProblem,
    describe_file,
    read_key,
)
from watchdog_daemon.keys.keywrite import (
    ensure_key,
    ensure_private_dir,
    install_key_atomically,
    make_parent_dirs,
    resolve_owner,
    rotate_key,
)
from watchdog_daemon.keys.secret import SecretBytes

# base64 of a key is small; anything larger on stdin is not a key.
MAX_STDIN = 64 * 1024


class CliError(Exception):
    def __init__(self, reason: str, message: str, hint: str, exit_code: ExitCode,
                 path: str | None = None) -> None:
        self.reason, self.message, self.hint = reason, message, hint
        self.exit_code, self.path = exit_code, path
        super().__init__(message)


def _mode(text: str) -> int:
    if not re.fullmatch(r"0?[0-7]{3}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal mode such as 0600")
    mode = int(text, 8)
    if mode & 0o007:
        # Slurm >= 23.11 refuses such a key; the agent copy must be private anyway.
        raise argparse.ArgumentTypeError(f"mode {text} gives access to others: refused")
    return mode


def _sha256_hex(text: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raise argparse.ArgumentTypeError("expected 64 hex digits (a SHA-256)")
    return text.lower()


def register(subparsers: argparse._SubParsersAction) -> None:
    key = subparsers.add_parser(
        "key", help="create, install and fingerprint JWT signing keys",
        description="Manage JWT signing keys without ever showing them.",
    )
    sub = key.add_subparsers(dest="key_command", metavar="ACTION", required=True)

    p = sub.add_parser("ensure", help="create the key if absent (32 random bytes); repair "
                       "owner and mode; never replace an existing key")
    p.add_argument("--path", required=True)
    p.add_argument("--owner", default="slurm")
    p.add_argument("--group", default="slurm")
    p.add_argument("--mode", type=_mode, default=0o600, help="octal (default 0600)")
    p.add_argument("--json", action="store_true", help="accepted; the output is JSON anyway")
    p.set_defaults(func=_run_ensure)

    p = sub.add_parser("install", help="install a key read from stdin (a line of base64, then "
                       "a line with the SHA-256 it must have, checked before anything is "
                       "written)")
    p.add_argument("--path", required=True)
    p.add_argument("--owner", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--mode", type=_mode, default=0o400, help="octal (default 0400)")
    p.add_argument("--json", action="store_true", help="accepted; the output is JSON anyway")
    p.add_argument("--create-parent", action="store_true",
                   help="create missing parent directories 0755 (e.g. /var/spool/slurm, which "
                   "Debian's packages do not create)")
    p.set_defaults(func=_run_install)

    p = sub.add_parser("export", help="print Slurm's key as one line of base64, for the "
                       "deploy's transfer: only a regular file of its own (no symlink, hard "
                       "link, FIFO or device), owned by root or --owner, at most 1 MiB")
    p.add_argument("--path", required=True)
    p.add_argument("--owner", action="append", default=[], metavar="USER",
                   help="who besides root may own the key (repeatable)")
    p.add_argument("--expect-sha256-stdin", action="store_true",
                   help="read the SHA-256 the key must have from stdin; on a mismatch nothing "
                   "is printed")
    p.set_defaults(func=_run_export)

    p = sub.add_parser("sync", help="copy Slurm's key to the agent's copy on this host")
    p.add_argument("--source", required=True, help="Slurm's key (checked with Slurm's rules)")
    p.add_argument("--dest", required=True, help="the agent's copy")
    p.add_argument("--owner", default="slurm-web")
    p.add_argument("--group", default="slurm-web")
    p.add_argument("--mode", type=_mode, default=0o400, help="octal (default 0400)")
    p.add_argument("--private-dir", action="store_true",
                   help="create --dest's directory 0700 for us; refuse one others can enter")
    p.add_argument("--replace-link", action="store_true",
                   help="replace a symlink at --dest (never written through) instead of "
                   "refusing it: a rollback restoring a key")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run_sync)

    p = sub.add_parser("rotate", help="replace the key by 32 new random bytes, keeping the "
                       "current one (ours, 0600) at --keep-previous for a rollback")
    p.add_argument("--path", required=True)
    p.add_argument("--keep-previous", required=True, metavar="PATH")
    p.add_argument("--private-dir", action="store_true",
                   help="create --keep-previous's directory 0700 for us; refuse one others can "
                   "enter")
    p.add_argument("--owner", default="slurm")
    p.add_argument("--group", default="slurm")
    p.add_argument("--mode", type=_mode, default=0o600, help="octal (default 0600)")
    p.add_argument("--json", action="store_true", help="accepted; the output is JSON anyway")
    p.set_defaults(func=_run_rotate)

    p = sub.add_parser("fingerprint", help="owner, mode, size and SHA-256 of a key file")
    p.add_argument("--path", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run_fingerprint)


# ---- output ------------------------------------------------------------------------------------

def _print_json(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def _fail(args: argparse.Namespace, exc: KeyFileError | CliError) -> int:
    if isinstance(exc, KeyFileError):
        reason, path, code = exc.detail, str(exc.path), exc.exit_code
    else:
        reason, path, code = exc.reason, exc.path, exc.exit_code
    # "error" is the README's name of the exit code; "detail" the finer kind.
    error = ExitCode(code).name.lower()
    if getattr(args, "json", False) or args.key_command in (
            "ensure", "install", "rotate", "export"):
        _print_json({"error": error, "detail": reason, "message": exc.message,
                     "hint": exc.hint, "exit_code": int(code), "file": path})
    sys.stderr.write(f"ERROR: {error}: {exc.message} — {exc.hint}\n")
    sys.stderr.flush()
    return int(code)


def _guard(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except (KeyFileError, CliError) as exc:
            return _fail(args, exc)
    return run


# ---- actions ----------------------------------------------------------------------------------

@_guard
def _run_ensure(args: argparse.Namespace) -> int:
    result = ensure_key(args.path, owner=args.owner, group=args.group, mode=args.mode)
    state = describe_file(args.path)
    _print_json({"result": result, "path": args.path, "sha256": state.sha256})
    return ExitCode.OK


_INSTALL_INPUT = "send a line of base64 of the key (base64 -w0), then a line with its SHA-256"


def _read_stdin_key(path: str) -> tuple[SecretBytes, str]:
    """The key and the SHA-256 it must have, from stdin."""
    raw = sys.stdin.buffer.read(MAX_STDIN + 1)
    if len(raw) > MAX_STDIN:
        raise CliError("bad_input", "more than 64 KiB on stdin: not a key", _INSTALL_INPUT,
                       ExitCode.USAGE, path)
    lines = [line.strip() for line in raw.splitlines() if line.strip()]
    if len(lines) != 2:
        raise CliError("bad_input", f"expected two lines on stdin (the key, its SHA-256), got "
                       f"{len(lines)}", _INSTALL_INPUT, ExitCode.USAGE, path)
    try:
        # The error never quotes the input: it is the key.
        data = base64.b64decode(lines[0], validate=True)
    except (binascii.Error, ValueError):
        raise CliError("bad_input", "the first line on stdin is not valid base64",
                       _INSTALL_INPUT, ExitCode.USAGE, path) from None
    try:
        expected = _sha256_hex(lines[1].decode("ascii"))
    except (UnicodeDecodeError, argparse.ArgumentTypeError):
        raise CliError("bad_input", "the second line on stdin is not a SHA-256 (64 hex digits)",
                       _INSTALL_INPUT, ExitCode.USAGE, path) from None
    return SecretBytes(data), expected


def _read_stdin_digest(path: str) -> str:
    raw = sys.stdin.buffer.read(1024).strip()
    try:
        return _sha256_hex(raw.decode("ascii"))
    except (UnicodeDecodeError, argparse.ArgumentTypeError):
        raise CliError("bad_input", "stdin does not hold a SHA-256 (64 hex digits)",
                       "send the SHA-256 the key must have on stdin", ExitCode.USAGE,
                       path) from None


def _refuse_other_key(secret: SecretBytes, expected: str, path: str, received: str) -> None:
    if not hmac.compare_digest(secret.sha256, expected):
        raise CliError(
            "sha256_mismatch",
            f"the key {received} has SHA-256 {secret.fingerprint}..., not the expected "
            f"{expected[:12]}...: nothing was written or sent",
            "the key changed since it was surveyed, or was damaged on the way: run the deploy "
            "again (if it keeps changing, find who rewrites it)",
            ExitCode.CHANGE_REFUSED, path,
        )


@_guard
def _run_install(args: argparse.Namespace) -> int:
    secret, expected = _read_stdin_key(args.path)
    _refuse_other_key(secret, expected, args.path, "received")
    if len(secret) == 0:
        raise KeyFileError(KeyProblem.EMPTY, args.path, "the key received is empty",
                           "send a key of at least 32 bytes")
    if len(secret) < MIN_KEY_BYTES:
        raise KeyFileError(KeyProblem.TOO_SHORT, args.path,
                           f"the key received has {len(secret)} bytes, fewer than "
                           f"{MIN_KEY_BYTES}", "use a key of at least 32 random bytes")
    if args.create_parent:
        make_parent_dirs(Path(args.path).parent)
    changed = install_key_atomically(secret, args.path, owner=args.owner, group=args.group,
                                     mode=args.mode)
    _print_json({"changed": changed, "path": args.path, "sha256": secret.sha256})
    return ExitCode.OK


def _owner_uids(names: list[str], path: str) -> frozenset[int]:
    uids = {0}
    for name in names:
        uids.add(resolve_owner(name, 0, path)[0])
    return frozenset(uids)


@_guard
def _run_export(args: argparse.Namespace) -> int:
    expected = _read_stdin_digest(args.path) if args.expect_sha256_stdin else None
    # Slurm's own rule for its key (group bits allowed, no "other" bit), and the reader's:
    # no symlink, no hard link, no FIFO or device, bounded in size.
    secret = read_key(args.path, allow_group=True, owners=_owner_uids(args.owner, args.path))
    if expected is not None:
        _refuse_other_key(secret, expected, args.path, f"at {args.path}")
    sys.stdout.write(base64.b64encode(secret.reveal()).decode() + "\n")
    sys.stdout.flush()
    return ExitCode.OK


@_guard
def _run_sync(args: argparse.Namespace) -> int:
    # Slurm's own rule for the source (group bits allowed, no "other" bit).
    secret = read_key(args.source, allow_group=True)
    if args.private_dir:
        ensure_private_dir(Path(args.dest).parent)
    changed = install_key_atomically(secret, args.dest, owner=args.owner, group=args.group,
                                     mode=args.mode, replace_link=args.replace_link)
    if args.json:
        _print_json({"changed": changed, "source": args.source, "dest": args.dest,
                     "sha256": secret.sha256})
    else:
        state = "updated" if changed else "already in sync"
        sys.stdout.write(f"{args.dest}: {state} (sha256 {secret.fingerprint})\n")
    return ExitCode.OK


@_guard
def _run_rotate(args: argparse.Namespace) -> int:
    previous, new = rotate_key(args.path, keep_previous=args.keep_previous, owner=args.owner,
                               group=args.group, mode=args.mode, private_dir=args.private_dir)
    _print_json({"changed": True, "path": args.path, "sha256": new,
                 "previous": args.keep_previous, "previous_sha256": previous})
    return ExitCode.OK


@_guard
def _run_fingerprint(args: argparse.Namespace) -> int:
    state = describe_file(args.path)
    if args.json:
        _print_json(state.to_dict())
    elif not state.exists:
        sys.stdout.write(f"{state.path}: absent\n")
    else:
        d = state.to_dict()
        kind = "symlink" if state.is_symlink else ("file" if state.is_regular else "other")
        sys.stdout.write(
            f"{state.path}: {kind} {d['owner'] or d['uid']}:{d['group'] or d['gid']} "
            f"{d['mode']} {state.size} bytes sha256 {state.sha256 or 'unreadable'}\n"
        )
    return ExitCode.OK


__all__ = ["register"]
