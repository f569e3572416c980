"""HAND CHECK ONLY (never run by CI or the e2e tests): put the REAL Slurm-web agent in place of
the stand-in on a running testbed host.

    flock /tmp/testbed.lock python -m tests.testbed.realagent.install hpc1 \
        [--wheelhouse /var/tmp/slurm-web-realagent/v5.2.0]

The wheelhouse comes from build-wheelhouse.sh. It is sent over the testbed's root SSH (the host
has no network) with host-install.sh and probe.py into /opt/slurm-web-realagent/, and
host-install.sh runs there (what it lays out: its header). README.md beside this file says how
the checks by hand use it.
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
from pathlib import Path

from tests.testbed.testbed import Testbed

HERE = Path(__file__).resolve().parent
HOST_DIR = "/opt/slurm-web-realagent"
DEFAULT_WHEELHOUSE = "/var/tmp/slurm-web-realagent/v5.2.0"


def bundle(wheelhouse: Path) -> bytes:
    """A tar of the wheelhouse plus the host-side scripts, for `tar -x` on the host."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("TAG", "wheels", "stubs", "share"):
            tar.add(wheelhouse / name, arcname=name)
        tar.add(HERE / "host-install.sh", arcname="host-install.sh")
        tar.add(HERE / "probe.py", arcname="probe.py")
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.testbed.realagent.install",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("host")
    parser.add_argument("--wheelhouse", type=Path, default=Path(DEFAULT_WHEELHOUSE))
    args = parser.parse_args(argv)
    if not (args.wheelhouse / "TAG").is_file():
        print(f"no wheelhouse at {args.wheelhouse}: run tests/testbed/realagent/"
              "build-wheelhouse.sh first", file=sys.stderr)
        return 2
    done = Testbed().ssh(
        args.host,
        f"rm -rf {HOST_DIR} && mkdir -p {HOST_DIR} && tar -x -C {HOST_DIR} && "
        f"sh {HOST_DIR}/host-install.sh",
        input=bundle(args.wheelhouse), timeout=600)
    sys.stdout.write(done.stdout.decode(errors="replace"))
    sys.stderr.write(done.stderr.decode(errors="replace"))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
