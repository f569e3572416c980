"""`slurmrestd-access key ensure|install|sync|fingerprint|rotate`: JWT signing keys on this host.

The key itself never goes through a command-line argument (visible in `ps`), never to stdout or
stderr: `install` reads it from stdin (one line of base64), `sync` copies it file to file, and
every report names only paths, owners, modes and SHA-256 digests.

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
    install_key_atomically,
    make_parent_dirs,
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

    p = sub.add_parser("install", help="install a key read from stdin (one line of base64), "
                       "checked against --expect-sha256 before anything is written")
    p.add_argument("--path", required=True)
    p.add_argument("--owner", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--mode", type=_mode, default=0o400, help="octal (default 0400)")
    p.add_argument("--expect-sha256", type=_sha256_hex, required=True, metavar="HEX")
    p.add_argument("--json", action="store_true", help="accepted; the output is JSON anyway")
    p.add_argument("--create-parent", action="store_true",
                   help="create missing parent directories 0755 (e.g. /var/spool/slurm, which "
                   "Debian's packages do not create)")
    p.set_defaults(func=_run_install)

    p = sub.add_parser("sync", help="copy Slurm's key to the agent's copy on this host")
    p.add_argument("--source", required=True, help="Slurm's key (checked with Slurm's rules)")
    p.add_argument("--dest", required=True, help="the agent's copy")
    p.add_argument("--owner", default="slurm-web")
    p.add_argument("--group", default="slurm-web")
    p.add_argument("--mode", type=_mode, default=0o400, help="octal (default 0400)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run_sync)

    p = sub.add_parser("rotate", help="replace the key by 32 new random bytes, keeping the "
                       "current one (owner only) at --keep-previous for a rollback")
    p.add_argument("--path", required=True)
    p.add_argument("--keep-previous", required=True, metavar="PATH")
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
        reason, path, code = exc.reason, str(exc.path), exc.exit_code
    else:
        reason, path, code = exc.reason, exc.path, exc.exit_code
    # "error" is the README's name of the exit code; "detail" the finer kind.
    error = ExitCode(code).name.lower()
    if getattr(args, "json", False) or args.key_command in ("ensure", "install", "rotate"):
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


def _read_stdin_key(path: str) -> SecretBytes:
    raw = sys.stdin.buffer.read(MAX_STDIN + 1)
    if len(raw) > MAX_STDIN:
        raise CliError("bad_input", "more than 64 KiB on stdin: not a key",
                       "send the key as one line of base64", ExitCode.USAGE, path)
    lines = [line for line in raw.splitlines() if line.strip()]
    if len(lines) != 1:
        raise CliError("bad_input", f"expected one line of base64 on stdin, got {len(lines)}",
                       "send the key as one line of base64 (base64 -w0)", ExitCode.USAGE, path)
    try:
        # The error never quotes the input: it is the key.
        data = base64.b64decode(lines[0].strip(), validate=True)
    except (binascii.Error, ValueError):
        raise CliError("bad_input", "stdin is not valid base64", "send base64 -w0 of the key",
                       ExitCode.USAGE, path) from None
    return SecretBytes(data)


@_guard
def _run_install(args: argparse.Namespace) -> int:
    secret = _read_stdin_key(args.path)
    if not hmac.compare_digest(secret.sha256, args.expect_sha256):
        raise CliError(
            "sha256_mismatch",
            f"the key received has SHA-256 {secret.fingerprint}..., not the expected "
            f"{args.expect_sha256[:12]}...: nothing was written",
            "the key changed or was damaged on the way: run the deploy again",
            ExitCode.CHANGE_REFUSED, args.path,
        )
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


@_guard
def _run_sync(args: argparse.Namespace) -> int:
    # Slurm's own rule for the source (group bits allowed, no "other" bit).
    secret = read_key(args.source, allow_group=True)
    changed = install_key_atomically(secret, args.dest, owner=args.owner, group=args.group,
                                     mode=args.mode)
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
                               group=args.group, mode=args.mode)
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
