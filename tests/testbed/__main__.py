"""`python -m tests.testbed up|down|base|status|ssh|sudo-mode|slurmweb`: the testbed's command
line."""

from __future__ import annotations

import argparse
import signal
import sys

from tests.testbed.accounts import SUDO_MODES
from tests.testbed.errors import TestbedError
from tests.testbed.testbed import Testbed
from tests.testbed.topology import SLURMWEB_RELEASES


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tests.testbed",
        description="Real Slurm clusters (Debian 11 to 14) in booted systemd-nspawn hosts "
                    "on this machine.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="boot the hosts of topologies (reuses healthy ones)")
    up.add_argument("topologies", nargs="+", metavar="TOPOLOGY")
    up.add_argument("--fresh", action="store_true",
                    help="rebuild the topologies' hosts even if healthy (back to the start state)")
    down = sub.add_parser("down", help="stop every host, unmount overlays, delete the bridge")
    down.add_argument("topologies", nargs="*", metavar="TOPOLOGY",
                      help="only these (the bridge goes when no host is left)")
    base = sub.add_parser("base", help="build the cached base of Debian releases (boots nothing)")
    base.add_argument("releases", nargs="+", metavar="RELEASE",
                      help="bullseye, bookworm, trixie, forky")
    sub.add_parser("status", help="each host, its roles, whether it is up")
    ssh = sub.add_parser("ssh", help="run a command on a host; its exit code is passed through")
    ssh.add_argument("-u", "--user", default="root",
                     help="root (default), admin (sudo) or nosudo; all take the testbed key")
    ssh.add_argument("host")
    ssh.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    sudo = sub.add_parser(
        "sudo-mode",
        help="switch the admin account's sudo rule on a topology's hosts or one host "
             "(without MODE: show it)",
    )
    sudo.add_argument("target", metavar="TOPOLOGY|HOST")
    sudo.add_argument("mode", nargs="?", choices=[*SUDO_MODES, "default"],
                      help="default: each host's `sudo` in topologies.toml")
    slurmweb = sub.add_parser(
        "slurmweb",
        help="switch an agent host's Slurm-web release: its stand-in package reinstalled, the "
             "agent restarted if active (without RELEASE: show it)",
    )
    slurmweb.add_argument("host")
    slurmweb.add_argument("release", nargs="?", choices=[*SLURMWEB_RELEASES, "default"],
                          help="default: the host's `slurmweb` in topologies.toml")
    return p


def main(argv: list[str] | None = None) -> int:
    # `status | head` must end quietly, like any Unix tool.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = _parser().parse_args(argv)
    testbed = Testbed()
    try:
        if args.command == "up":
            testbed.up(args.topologies, fresh=args.fresh)
            print(testbed.inventory_path())
        elif args.command == "base":
            for path in testbed.build_bases(args.releases):
                print(path)
        elif args.command == "down":
            testbed.down(args.topologies or None)
        elif args.command == "status":
            running = {t.name for t in testbed.running_topologies()}
            for topo in testbed.catalog.topologies.values():
                print(f"{topo.name}: {'up' if topo.name in running else 'down'}")
                for st in (s for s in testbed.status() if s.host in topo.hosts):
                    state = "up" if st.running and st.ssh else ("booting" if st.running else "down")
                    print(f"  {st.host.name:<12} {st.host.address:<14} {st.host.cluster:<6} "
                          f"{state:<8} {','.join(st.host.roles)}")
        elif args.command == "ssh":
            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            if not cmd:
                print("usage: python -m tests.testbed ssh HOST -- COMMAND", file=sys.stderr)
                return 2
            # Like ssh(1): the words are joined into one remote shell command line.
            res = testbed.ssh(args.host, " ".join(cmd), stream=True, user=args.user)
            return res.returncode
        elif args.command == "sudo-mode":
            if args.mode is None:
                modes = testbed.sudo_modes(args.target)
            else:
                modes = testbed.set_sudo_mode(args.target, args.mode)
            for host, mode in modes.items():
                print(f"{host} {mode or 'unknown (no testbed rule on the host)'}")
        elif args.command == "slurmweb":
            if args.release is None:
                version = testbed.slurmweb(args.host)
            else:
                version = testbed.set_slurmweb(args.host, args.release)
            print(f"{args.host} {version or 'not installed'}")
    except TestbedError as exc:
        print(f"testbed: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
