"""The project as a site uses it: the wheel built here, installed in a fresh venv outside the
checkout, called from the site's own deploy file with keywords, and run by its module name."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from slurmrestd_access import __version__
from tests.e2e import hostcheck
from tests.e2e.pyinfra_run import ROOT, DeployRun

pytestmark = pytest.mark.e2e

SITE_LINE = "# site: slurmrestd access for Slurm-web by slurmrestd-access"


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None,
        timeout: int = 900) -> DeployRun:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1", **(env or {})}
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    start = time.monotonic()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env, check=False)
    output = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)
    return DeployRun(done.returncode, output, time.monotonic() - start)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict[str, Path]:
    """dist/ built from the checkout (sdist, and the wheel from the sdist), then a fresh venv in a
    directory of its own with the wheel and its `deploy` extra, and nothing of the checkout."""
    base = tmp_path_factory.mktemp("site")
    dist = base / "dist"
    built = run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist),
                 str(ROOT)], cwd=base)
    assert built.returncode == 0, built.output[-3000:]
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    (wheel,) = dist.glob("slurmrestd_access-*.whl")
    (sdist,) = dist.glob("slurmrestd_access-*.tar.gz")
    assert wheel.name == f"slurmrestd_access-{__version__}-py3-none-any.whl"
    assert sdist.name == f"slurmrestd_access-{__version__}.tar.gz"
    venv = base / "venv"
    made = run([sys.executable, "-m", "venv", str(venv)], cwd=base)
    assert made.returncode == 0, made.output
    pip = run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
               "--disable-pip-version-check", f"{wheel}[deploy]"], cwd=base)
    assert pip.returncode == 0, pip.output[-3000:]
    # The site's own wheelhouse cache (XDG), seeded with the dependency wheels the package
    # index would give, so that the test does not download them again.
    xdg = base / "xdg"
    house = xdg / "slurmrestd-access" / "wheelhouse"
    house.mkdir(parents=True)
    for deps in (ROOT / ".cache" / "wheelhouse").glob("deps-*"):
        shutil.copytree(deps, house / deps.name)
    work = base / "work"
    work.mkdir()
    return {"venv": venv, "work": work, "xdg": xdg, "house": house}


def in_venv(site: dict[str, Path], *args: str) -> DeployRun:
    command = [str(site["venv"] / "bin" / args[0]), *args[1:]]
    return run(command, cwd=site["work"], env={"XDG_CACHE_HOME": str(site["xdg"])})


def test_the_installed_package_is_the_library_and_not_the_checkout(site):
    python = str(site["venv"] / "bin" / "python")
    done = run([python, "-c", "import slurmrestd_access, watchdog_daemon; "
                "print(slurmrestd_access.__version__, slurmrestd_access.__file__)"],
               cwd=site["work"])
    assert done.returncode == 0, done.output
    version, path = done.output.split()
    assert version == __version__ and path.startswith(str(site["venv"]))
    # The checkout's entry folder is not part of it: no clash with a site's own `deploys`.
    assert run([python, "-c", "import deploys"], cwd=site["work"]).returncode != 0
    for command in ("slurmrestd-access", "slurmrestd-access-rollout",
                    "slurmrestd-access-report"):
        done = in_venv(site, command, "--version")
        assert done.output.strip() == f"{command} {__version__}", done.output


def test_a_site_deploy_file_calls_it_with_keywords_next_to_its_own_operation(site, testbed):
    topo = testbed.up("single", fresh=True)
    rest = next(h.name for h in topo.hosts if "slurmrestd" in h.roles)
    deploy_file = site["work"] / "site_deploy.py"
    deploy_file.write_text(textwrap.dedent(f'''\
        from pyinfra import host
        from pyinfra.operations import files

        from slurmrestd_access.deploys import slurmrestd_access

        if "slurmrestd" in host.groups:
            files.line(name="Site: our own line in /etc/motd", path="/etc/motd",
                       line={SITE_LINE!r}, present=True)
        slurmrestd_access(watch_health_interval=45, watch_restart_spacing=1.5)
        '''))
    first = in_venv(site, "pyinfra", "-y", str(topo.inventory_path), "site_deploy.py")
    assert first.returncode == 0, first.output[-6000:]
    assert first.output.count("--> Per-cluster summary:") == 1, first.output[-3000:]
    assert f"--> slurmrestd-access {__version__}" in first.output
    # The site's own operation ran, and the deploy with the call's keywords.
    assert SITE_LINE in topo.ssh(rest, "cat /etc/motd").stdout
    toml = topo.ssh(rest, "cat /etc/slurmrestd-access/watch.toml").stdout
    assert "health_interval = 45" in toml and "restart_spacing = 1.5" in toml, toml
    check = topo.ssh(rest, "runuser -u slurm-web -- slurmrestd-access check", check=False)
    assert check.returncode == 0 and "✅ connection successful" in check.stdout, check.stdout
    assert hostcheck.watchdog(topo, rest) == hostcheck.WATCHDOG_HEALTHY
    # The host runs the release installed on the workstation, built without the checkout.
    assert topo.ssh(rest, "slurmrestd-access --version").stdout.strip() == \
        f"slurmrestd-access {__version__}"
    assert list(site["house"].glob("project-*/slurmrestd_access-*.whl"))
    again = in_venv(site, "pyinfra", "-y", str(topo.inventory_path), "site_deploy.py")
    assert again.returncode == 0, again.output[-6000:]
    assert again.totals()["changed"] == 0, again.output[-4000:]


def test_a_misspelt_keyword_stops_the_run_before_any_change(site, testbed):
    topo = testbed.up("single")
    (site["work"] / "typo_deploy.py").write_text(
        "from slurmrestd_access.deploys import slurmrestd_access\n"
        "slurmrestd_access(agent_units='slurm-web-agent.service')\n")
    done = in_venv(site, "pyinfra", "-y", str(topo.inventory_path), "typo_deploy.py")
    assert done.returncode != 0
    assert "keyword 'agent_units' is not a setting of this deploy: did you mean 'agent_unit'?" \
        in done.output, done.output[-3000:]
    assert "Traceback" not in done.output


def test_the_deploy_runs_by_its_module_name_from_any_directory(site, testbed):
    topo = testbed.up("split", fresh=True)
    module = "slurmrestd_access.deploys.slurmrestd_access"
    first = in_venv(site, "pyinfra", "-y", str(topo.inventory_path), module)
    assert first.returncode == 0, first.output[-6000:]
    for h in topo.hosts:
        if "slurmrestd" in h.roles:
            check = topo.ssh(h.name, "runuser -u slurm-web -- slurmrestd-access check",
                             check=False)
            assert check.returncode == 0, check.stdout
    dry = in_venv(site, "pyinfra", "--dry", str(topo.inventory_path), module)
    assert dry.returncode == 0 and dry.planned_changes() == [], dry.output[-4000:]
    again = in_venv(site, "pyinfra", "-y", str(topo.inventory_path), module)
    assert again.returncode == 0 and again.totals()["changed"] == 0, again.output[-4000:]
    report = in_venv(site, "slurmrestd-access-report", str(topo.inventory_path), "--json")
    assert report.returncode == 0, report.output[-3000:]
    assert f'"tool": "{__version__}"' in report.output
