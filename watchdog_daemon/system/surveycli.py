"""`slurmrestd-access survey`: the deploy's survey, plan and connect check in one process.

A no-change re-run of the deploy asks each host three things: what is there (the survey), what
the tool would change (`plan`), and, on the agent's host, whether slurmrestd accepts the
agent's token (`check`). Answered by one command, they cost one round trip and one Python
start-up; the check runs in a child process (it becomes the agent's user for good, see
privdrop) while the parent surveys as root.

Output: the survey's tagged lines (hostsurvey), then each requested report between markers,
as `slurmrestd-access plan|check --json` prints it followed by `__slurmrestd_access_exit=N`.
Everything is written at the end, at once: a run that fails prints nothing. A check that has
not finished within --check-wait is stopped and left out. Exit 0; 3 when
this host needs the shell survey instead (hostsurvey.Declined); 2 for a protocol this tool
does not speak (an older tool: the workstation then uses the shell survey).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import select
import shlex
import signal
import sys
import time

PROTOCOL = 1
DECLINED = 3
# A slurmrestd that answers slowly (a controller handing over, one that hangs) must not hold
# the survey for the check's whole timeout: past this, the deploy's own check decides.
CHECK_WAIT = 5.0
EXIT_MARK = "__slurmrestd_access_exit="
PLAN_BEGIN, PLAN_END = "__slurmrestd_access_plan_begin", "__slurmrestd_access_plan_end"
CHECK_BEGIN, CHECK_END = "__slurmrestd_access_check_begin", "__slurmrestd_access_check_end"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "survey", help="the deploy's survey of this host (with its plan and check): one run",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    p.add_argument("--protocol", type=int, required=True,
                   help=f"the output's form the caller reads (this tool: {PROTOCOL})")
    p.add_argument("--file", action="append", default=[], metavar="PATH")
    p.add_argument("--key", action="append", default=[], metavar="PATH",
                   help="a --file that holds key material or lies in another account's "
                        "directory: described as `key fingerprint` does")
    p.add_argument("--unit", action="append", default=[], metavar="UNIT")
    p.add_argument("--user", action="append", default=[], metavar="USER")
    p.add_argument("--group", action="append", default=[], metavar="GROUP")
    p.add_argument("--tool-prefix", required=True, metavar="DIR")
    p.add_argument("--slurm-conf", default="/etc/slurm/slurm.conf", metavar="FILE")
    p.add_argument("--plan", default=None, metavar="ARGS",
                   help="also `plan ARGS --json` (ARGS in one shell-quoted string)")
    p.add_argument("--check", default=None, metavar="ARGS",
                   help="also `check ARGS --json`, in a child process")
    p.add_argument("--check-wait", type=float, default=CHECK_WAIT, metavar="SECONDS",
                   help="give the check this long, then stop it and leave it out (the "
                        f"deploy then checks live, with its own timeout; default {CHECK_WAIT:g})")
    p.add_argument("--json", action="store_true", help="accepted; the output is tagged lines")
    p.set_defaults(func=run)


def _tool(argv: list[str]) -> list[str]:
    """Another subcommand of this tool, in this process: its output lines and exit mark."""
    from watchdog_daemon.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return [*out.getvalue().splitlines(), f"{EXIT_MARK}{code}"]


def _start_check(args: str) -> tuple[int, int]:
    """Fork the check; (pid, read end of its output)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; measured through the parent's output
        code = 1
        try:
            os.close(read_end)
            # Not the survey's output: an orphaned check must not hold the caller's channel.
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
            lines = _tool(["check", *shlex.split(args), "--json"])
            os.write(write_end, ("\n".join(lines) + "\n").encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    return pid, read_end


def _collect_check(pid: int, read_end: int, wait: float) -> list[str]:
    """The check's lines; none when it did not finish within `wait` (it is then killed)."""
    deadline = time.monotonic() + wait
    chunks: list[bytes] = []
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read_end], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                chunks = []
                break
            data = os.read(read_end, 1 << 16)
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    return b"".join(chunks).decode("utf-8", "replace").splitlines()


def run(args: argparse.Namespace) -> int:
    if args.protocol != PROTOCOL:
        print(f"ERROR: survey protocol {args.protocol} is not this tool's ({PROTOCOL})",
              file=sys.stderr)
        return 2
    check = _start_check(args.check) if args.check is not None else None
    from watchdog_daemon.system.hostsurvey import Declined, Survey

    try:
        lines = Survey(files=args.file, keys=args.key, units=args.unit, users=args.user,
                       groups=args.group, tool_prefix=args.tool_prefix,
                       slurm_conf=args.slurm_conf).lines()
        if args.plan is not None:
            lines += [PLAN_BEGIN, *_tool(["plan", *shlex.split(args.plan), "--json"]),
                      PLAN_END]
    except BaseException as exc:
        if check is not None:
            _collect_check(*check, wait=0)  # stopped: this run prints nothing
        if not isinstance(exc, Declined):
            raise
        print(f"survey declined: {exc}", file=sys.stderr)
        return DECLINED
    checked = _collect_check(*check, wait=args.check_wait) if check is not None else []
    if checked:
        lines += [CHECK_BEGIN, *checked, CHECK_END]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    return 0


__all__ = ["register", "run"]
