"""A key from the site's own command (key_source_command, e.g. a secrets manager's CLI): a dry
run never runs it; a real run does, and pushes that key by hash (fake hosts, real deploy)."""

from __future__ import annotations

from tests.unit.fakedeploy import KEY, deploy, deployed_host

SITE_KEY = "k" * 32  # what the command prints (its command line does not hold it)


def site(tmp_path):
    marker = tmp_path / "command-ran"
    command = f"touch {marker}; yes k | head -c 64 | tr -d '\\n'"
    return marker, {"hpc1": deployed_host(data={"key_source_command": command})}


def test_a_dry_run_does_not_run_the_key_source_command(tmp_path):
    marker, hosts = site(tmp_path)
    run = deploy(tmp_path, hosts, "--dry", "-v")
    assert run.returncode == 0, run.output[-3000:]
    assert not marker.exists()
    assert "compared with the key from workstation command" in run.output
    assert "at execution" in run.output
    assert not [c for c in run.commands.get("@fake/hpc1", []) if "key install" in c]


def test_a_real_run_runs_it_and_installs_its_key(tmp_path):
    marker, hosts = site(tmp_path)
    run = deploy(tmp_path, hosts)
    assert run.returncode == 0, run.output[-3000:]
    assert marker.exists()
    assert run.ran("@fake/hpc1", f"key install --path {KEY}")
    assert SITE_KEY not in run.output and SITE_KEY not in str(run.commands)
