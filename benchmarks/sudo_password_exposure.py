"""Measure what pyinfra's own sudo-password handling exposes on the hosts (docs/sudo.md).

    .venv/bin/python benchmarks/sudo_password_exposure.py

Boots `split` fresh, samples every process's argv and every small file in /tmp and /var/tmp on
each host (tests/e2e/secrethunt.py) during a first deploy as the testbed's `admin` over sudo
(`.testbed/split-sudo.py`: split-ctl and split-rest ask for a password, split-db does not), and
counts where admin's sudo password was seen. Prints the counts and each hit with the password
masked; nothing is asserted. Takes the testbed down at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.pyinfra_run import run_deploy  # noqa: E402
from tests.e2e.secrethunt import Hunt  # noqa: E402
from tests.testbed.pytest_support import TestbedFactory  # noqa: E402
from tests.testbed.testbed import Testbed  # noqa: E402


def main() -> int:
    factory = TestbedFactory(Testbed(), lambda message: sys.exit(message))
    try:
        topo = factory.up("split", fresh=True)
        hunt = Hunt(topo, [h.name for h in topo.hosts]).start()
        run = run_deploy(topo.sudo_inventory_path)
        print(f"first deploy over sudo: exit {run.returncode}")
        samples = hunt.collect()
        password = topo.sudo_password().encode()
        for name, seen in samples.items():
            argv = [a for a in seen.argv if password in a]
            files = [p for p, data in seen.tmp if password in data]
            print(f"{name}: {len(seen.argv)} distinct argv, {len(argv)} with the password; "
                  f"{len(files)} files in /tmp or /var/tmp with it")
            for line in argv[:3]:
                print("    " + line.replace(password, b"<PASSWORD>")[:200].decode(errors="replace"))
        return 0 if run.returncode == 0 else 1
    finally:
        factory.close()


if __name__ == "__main__":
    sys.exit(main())
