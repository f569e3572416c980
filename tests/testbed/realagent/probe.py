"""HAND CHECK ONLY: ask the real Slurm-web agent on this host for its data endpoints, as its
gateway would, and print one line per endpoint: `PATH STATUS first-200-chars-of-body`.

Run on the agent host as root with the real agent's venv python (it has RFL):
    /opt/slurm-web-realagent/venv/bin/python probe.py [PATH ...]
Default paths: the agent's own /version, then /v{release}/jobs (slurmctld through slurmrestd),
/v{release}/accounts (slurmdbd) and /v{release}/stats.

The agent accepts only a Bearer token its gateway signed with the agent's own `[jwt] key`
(/var/lib/slurm-web/jwt.key, audience `slurm-web`): this signs one with RFL's JWTManager, the
class the agent decodes it with, for a user `handcheck` (vendor policy: every authenticated user
has the `user` role, which may view jobs, accounts and stats). Exit 0 when every path answered
200, else 1.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path

from rfl.authentication.jwt import JWTManager
from rfl.authentication.user import AuthenticatedUser

AGENT = "http://localhost:5012"
JWT_KEY = Path("/var/lib/slurm-web/jwt.key")


def agent_release() -> str:
    from importlib.metadata import version

    return version("Slurm-web")


def main(paths: list[str]) -> int:
    release = agent_release()
    paths = paths or ["/version", f"/v{release}/jobs", f"/v{release}/accounts",
                      f"/v{release}/stats"]
    token = JWTManager.key(audience="slurm-web", algorithm="HS256", path=JWT_KEY).generate(
        AuthenticatedUser(login="handcheck", groups=[]), 1)
    worst = 0
    for path in paths:
        req = urllib.request.Request(AGENT + path, headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                status, body = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, body = err.code, err.read()
        except OSError as err:
            status, body = 0, str(err).encode()
        text = body.decode("utf-8", "replace").replace("\n", " ")[:200]
        print(f"{path} {status} {text}")
        worst = worst or (status != 200)
    return 1 if worst else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
