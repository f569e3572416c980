"""Fill the workstation's wheelhouse for the testbed's hosts before anything is timed.

The wheelhouse (wheels and the site-packages bundle, see slurmrestd_access/wheelhouse.py) is built
once per workstation and tool version, not once per deploy: a benchmark of deploys reports
its cost apart instead of charging it to whichever run comes first.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = "import platform, sys; print('%d.%d' % sys.version_info[:2], platform.machine())"


def warm_wheelhouse(host: str) -> float:
    """Seconds it took to make the wheelhouse for `host`'s Python and machine ready."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from slurmrestd_access.wheelhouse import ensure_wheelhouse

    # `testbed ssh` hands its words to the remote shell as one line: quote the script.
    done = subprocess.run([sys.executable, "-m", "tests.testbed", "ssh", host, "--",
                           f"python3 -c {shlex.quote(PROBE)}"], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    version, machine = done.stdout.split()
    start = time.monotonic()
    ensure_wheelhouse(version, machine)
    return time.monotonic() - start
