"""The stand-in's slurm-web-agent package: one release's agent.yml, commands and units, as a .deb
that dpkg installs and answers for, and agent.yml that Slurm-web's own loader (RFL.settings)
reads exactly as the stand-in reads agent.ini."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import warnings
from pathlib import Path

import pytest
import yaml
from rfl.settings import RuntimeSettings

from tests.testbed import hostconfig, slurmweb_pkg
from tests.testbed.standin import slurm_web_agent_standin as standin
from tests.testbed.testbed import STANDIN_SOURCE
from tests.testbed.topology import SLURMWEB_RELEASES

SOURCE = STANDIN_SOURCE.read_text()
TABLE = json.loads(slurmweb_pkg.FIXTURE.read_text())["releases"]
RELEASES = ["5.2", "6.0"]


def test_the_testbed_and_the_standin_know_the_same_releases():
    assert list(SLURMWEB_RELEASES) == list(standin.RELEASES) == list(slurmweb_pkg.VERSIONS)
    assert {r: v.version for r, v in standin.RELEASES.items()} == slurmweb_pkg.VERSIONS
    assert set(slurmweb_pkg.VERSIONS.values()) <= set(TABLE)


@pytest.mark.parametrize("release", RELEASES)
def test_agent_yml_is_the_releases_table(release):
    # Every property of the table, nothing else: docs are left out.
    assert yaml.safe_load(slurmweb_pkg.agent_yml(release)) == (
        TABLE[slurmweb_pkg.VERSIONS[release]]["sections"])


def test_agent_yml_renders_the_properties_that_differ_between_releases():
    v52 = yaml.safe_load(slurmweb_pkg.agent_yml("5.2"))["slurmrestd"]
    v60 = yaml.safe_load(slurmweb_pkg.agent_yml("6.0"))["slurmrestd"]
    assert v52["version"] == {"type": "str", "default": "0.0.41"}  # a string, not a float
    assert "versions" not in v52
    assert v60["version"]["deprecated"] == {"section": "slurmrestd", "parameter": "versions"}
    assert v60["versions"] == {"type": "list", "content": "str",
                               "default": ["0.0.44", "0.0.43", "0.0.42", "0.0.41"]}


def _rfl(release: str, ini_text: str, tmp_path: Path) -> RuntimeSettings:
    defs = tmp_path / f"agent-{release}.yml"
    defs.write_text(slurmweb_pkg.agent_yml(release))
    ini = tmp_path / "agent.ini"
    ini.write_text(ini_text)
    settings = RuntimeSettings.yaml_definition(defs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        settings.override_ini(ini)
    return settings


INIS = [
    "[service]\ncluster=hpc\n",
    "[service]\ncluster=hpc\n[slurmrestd]\nversions=0.0.42\n",
    "[service]\ncluster=hpc\n[slurmrestd]\nversion=0.0.42\n",
    "[service]\ncluster=hpc\n[slurmrestd]\nversion=0.0.42\nversions=0.0.44\n  0.0.43\n",
    "[service]\ncluster=hpc\n[slurmrestd]\nversion=$bad\nversions=0.0.44\n",
    "[service]\ncluster=hpc\n[filters]\nassociations=account\n",
    "[service]\ncluster=hpc\n[cache]\nassociations=120\n",
    "[service]\ncluster=hpc\n[cache]\njobs=30\n",
    "[service]\ncluster=hpc\n[slurmrestd]\nsocket=/run/s.sock\n",
    "[service]\ncluster=hpc\n[slurmrestd]\nsocket=/run/s.sock\nuri=unix:///run/u.sock\n",
    "[service]\ncluster=hpc\n[slurmrestd]\nsocket=$bad\nuri=unix:///run/u.sock\n",
    "[service]\ncluster=hpc\n[slurmrestd]\nversion=0.0.42\nversions=0.0.44\n[cache]\njobs=x\n",
    "[service]\ncluster=hpc\n[slurmrestd]\njwt_lifespan=x\n",
    "[service]\ncluster=hpc\n[slurmrestd]\nuri=unix:///run/u.sock\njwt_mode=static\n",
    "[service]\ncluster=hpc\n[slurmrestd]\nauth=munge\n",
    "[slurmrestd]\nuri=unix:///run/u.sock\n",
]


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("text", INIS)
def test_the_standin_reads_agent_ini_as_rfl_does_with_the_packaged_agent_yml(
        release, text, tmp_path):
    """The stand-in of each release starts where the real agent of that release would (RFL over
    the package's own agent.yml), with the same uri and API version(s)."""
    try:
        theirs = _rfl(release, text, tmp_path)
    except Exception:
        theirs = None
    ini = tmp_path / "standin.ini"
    ini.write_text(text)
    try:
        mine = standin.load_settings(str(ini), release)
    except standin.StartupError:
        mine = None
    assert (mine is None) == (theirs is None), text
    if theirs is None or mine is None:
        return
    rest = theirs.slurmrestd
    # The agent's own step after RFL: a socket left set (uri not set) makes the uri.
    uri = f"unix://{rest.socket}" if rest.socket else rest.uri.geturl()
    assert mine["slurmrestd"]["uri"].replace("unix:///", "unix:/") == uri.replace(
        "unix:///", "unix:/")
    assert mine["slurmrestd"]["version"] == rest.version
    if release == "6.0":
        assert mine["slurmrestd"]["versions"] == rest.versions


def test_5_2_refuses_what_6_0_added_and_keeps_its_one_version(tmp_path):
    for text, key in [(INIS[1], "versions"), (INIS[5], "associations"),
                      (INIS[6], "associations")]:
        with pytest.raises(Exception, match=f"Parameter {key} loaded"):
            _rfl("5.2", text, tmp_path)
        _rfl("6.0", text, tmp_path)
    assert _rfl("5.2", INIS[0], tmp_path).slurmrestd.version == "0.0.41"
    assert _rfl("5.2", INIS[2], tmp_path).slurmrestd.version == "0.0.42"


# ---------------------------------------------------------------------------------- the package


def _members(deb: bytes) -> dict[str, bytes]:
    assert deb.startswith(b"!<arch>\n")
    pos, found = 8, {}
    while pos < len(deb):
        header = deb[pos:pos + 60]
        name, size = header[:16].decode().strip(), int(header[48:58])
        found[name] = deb[pos + 60:pos + 60 + size]
        pos += 60 + size + size % 2
    return found


def _tar(data: bytes) -> dict[str, tuple[bytes | None, int]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else None, m.mode)  # type: ignore[union-attr]
                for m in tar.getmembers()}


@pytest.mark.parametrize("release", RELEASES)
def test_the_deb_holds_the_releases_files_and_control(release):
    deb = slurmweb_pkg.build_deb(release, SOURCE)
    members = _members(deb)
    assert list(members) == ["debian-binary", "control.tar.gz", "data.tar.gz"]
    assert members["debian-binary"] == b"2.0\n"
    control = _tar(members["control.tar.gz"])["./control"][0].decode()  # type: ignore[union-attr]
    assert f"Package: slurm-web-agent\nVersion: {slurmweb_pkg.VERSIONS[release]}-1standin\n" in (
        control)
    assert "STAND-IN" in control
    data = _tar(members["data.tar.gz"])
    assert data["./usr/share/slurm-web/conf/agent.yml"][0] == slurmweb_pkg.agent_yml(
        release).encode()
    assert data[f".{hostconfig.STANDIN_PATH}"] == (SOURCE.encode(), 0o755)
    for unit in ("slurm-web-agent.service", "slurm-web-agent-uwsgi.service"):
        text = data[f"./usr/lib/systemd/system/{unit}"][0].decode()  # type: ignore[union-attr]
        assert text == hostconfig.standin_unit(unit, release)
        assert f"Environment=STANDIN_RELEASE={release}" in text.splitlines()
    five = {"./usr/libexec/slurm-web/slurm-web-agent",
            "./usr/libexec/slurm-web/slurm-web-connect-check"}
    six = {"./usr/bin/slurm-web"}
    ours, other = (five, six) if release == "5.2" else (six, five)
    assert ours <= set(data) and not other & set(data)
    for path in ours:
        script, mode = data[path]
        assert mode == 0o755
        assert f"export STANDIN_RELEASE={release}\n" in script.decode()  # type: ignore[union-attr]
    assert data["./usr/share/slurm-web/standin-digest"][0] == (
        slurmweb_pkg.package_digest(release, SOURCE) + "\n").encode()


def test_the_deb_is_the_same_bytes_for_the_same_inputs_and_the_digest_follows_them():
    assert slurmweb_pkg.build_deb("5.2", SOURCE) == slurmweb_pkg.build_deb("5.2", SOURCE)
    digests = {slurmweb_pkg.package_digest(r, s) for r in RELEASES for s in (SOURCE, SOURCE + "#")}
    assert len(digests) == 4


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs dpkg (Debian)")
def test_dpkg_installs_it_answers_its_version_and_switches_release(tmp_path):
    root = tmp_path / "root"
    for d in ("info", "updates", "triggers"):
        (root / "var/lib/dpkg" / d).mkdir(parents=True)
    (root / "var/lib/dpkg/status").touch()
    force = ["--force-depends", "--force-not-root", "--force-script-chrootless"]

    def install(release: str) -> str:
        deb = tmp_path / f"{release}.deb"
        deb.write_bytes(slurmweb_pkg.build_deb(release, SOURCE))
        subprocess.run(["dpkg", f"--root={root}", *force, "-i", str(deb)], check=True,
                       capture_output=True)
        subprocess.run(["dpkg", f"--root={root}", "--verify", "slurm-web-agent"], check=True)
        return subprocess.run(["dpkg-query", f"--root={root}", "-W", "-f=${Version}",
                               "slurm-web-agent"], check=True, capture_output=True,
                              text=True).stdout

    assert install("5.2") == "5.2.0-1standin"
    assert (root / "usr/libexec/slurm-web/slurm-web-connect-check").is_file()
    assert install("6.0") == "6.0.0-1standin"
    # The other release's commands go with its package, as an upgrade does.
    assert not (root / "usr/libexec/slurm-web").exists()
    assert (root / "usr/bin/slurm-web").is_file()
    assert "versions:" in (root / "usr/share/slurm-web/conf/agent.yml").read_text()


def test_the_install_script_skips_the_same_package_and_restarts_only_an_active_agent():
    script = slurmweb_pkg.install_script("5.2", SOURCE)
    subprocess.run(["sh", "-n", "-c", script], check=True)
    assert f"want={slurmweb_pkg.package_digest('5.2', SOURCE)}\n" in script
    assert 'if systemctl -q is-active "$unit"; then systemctl restart "$unit"; fi' in script
    assert "for unit in slurm-web-agent.service slurm-web-agent-uwsgi.service;" in script
    assert script.index("dpkg -i") < script.index("daemon-reload") < script.index("restart")
