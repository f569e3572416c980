"""Base cache key, half-built cache detection, mount parsing and host config rendering."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tests.testbed import basecache, hostconfig
from tests.testbed.mounts import mounts_below
from tests.testbed.topology import load_catalog


def test_cache_key_is_stable_and_ignores_package_order():
    spec = basecache.DEFAULT_SPEC
    shuffled = dataclasses.replace(spec, packages=tuple(reversed(spec.packages)))
    assert spec.key == shuffled.key
    assert len(spec.key) == 16


def test_cache_key_changes_with_the_package_list_suite_or_recipe():
    spec = basecache.DEFAULT_SPEC
    keys = {
        spec.key,
        dataclasses.replace(spec, packages=(*spec.packages, "vim")).key,
        dataclasses.replace(spec, packages=spec.packages[1:]).key,
        dataclasses.replace(spec, suite="forky").key,
        dataclasses.replace(spec, recipe=spec.recipe + 1).key,
    }
    assert len(keys) == 5


def test_base_has_what_the_hosts_need():
    assert {"slurmctld", "slurmd", "slurmdbd", "slurmrestd", "slurm-client", "munge",
            "mariadb-server", "openssh-server", "python3", "python3-venv", "iproute2",
            "slurm-wlm-jwt-plugin"} <= set(basecache.PACKAGES)
    # The unprivileged admin account deploys through sudo, which minbase lacks, on every release.
    assert all("sudo" in basecache.spec_for(r).packages for r in basecache.RELEASES)
    assert basecache.base_dir(Path("/c")).name == f"base-trixie-{basecache.DEFAULT_SPEC.key}"


def test_uwsgi_is_in_the_bases_of_the_releases_whose_hosts_run_the_uwsgi_unit():
    runs_uwsgi = {h.release for h in load_catalog().all_hosts
                  if h.agent_unit == "slurm-web-agent-uwsgi.service"}
    assert runs_uwsgi == {"trixie"}
    for release, spec in basecache.RELEASES.items():
        has = set(basecache.UWSGI_PACKAGES) <= set(spec.packages)
        # Elsewhere a package more would only rebuild that release's base.
        assert has == (release in runs_uwsgi), release
    assert basecache.UWSGI_PACKAGES == ("uwsgi-core", "uwsgi-plugin-python3")


def test_each_release_has_its_own_base():
    specs = {r: basecache.spec_for(r) for r in ("bullseye", "bookworm", "trixie", "forky")}
    assert len({s.key for s in specs.values()}) == 4
    assert {basecache.base_dir(Path("/c"), s).name.split("-")[1] for s in specs.values()} == set(
        specs)
    # Debian 12's debootstrap has no forky script; bullseye has no separate jwt plugin package.
    assert specs["forky"].script.endswith("/scripts/sid")
    assert "slurm-wlm-jwt-plugin" not in specs["bullseye"].packages
    assert "slurm-wlm-jwt-plugin" in specs["bookworm"].packages
    # trixie's base is the one it always was (no rebuild from adding releases).
    assert specs["trixie"] == basecache.DEFAULT_SPEC and "script" not in specs["trixie"].manifest()


def test_a_new_base_removes_only_outdated_bases_of_its_own_release(tmp_path, monkeypatch):
    monkeypatch.setattr(basecache, "_in_use", lambda base: False)
    made = {}
    for name, suite in (("base-trixie-new", "trixie"), ("base-trixie-old", "trixie"),
                        ("base-e4b33eba9310fccf", "trixie"), ("base-forky-x", "forky")):
        made[name] = tmp_path / name
        made[name].mkdir()
        (made[name] / basecache.MARKER).write_text(f'{{"suite": "{suite}"}}')
    basecache._remove_other_bases(tmp_path, keep=made["base-trixie-new"], suite="trixie")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base-forky-x", "base-trixie-new"]


def test_pid_files_follow_each_release_units():
    cat = load_catalog()
    old = hostconfig.slurm_conf(cat.topology("bullseye").clusters["bullseye"]).splitlines()
    new = hostconfig.slurm_conf(cat.topology("forky").clusters["forky"]).splitlines()
    assert "SlurmctldPidFile=/run/slurmctld.pid" in old
    assert "SlurmctldPidFile=/run/slurmctld/slurmctld.pid" in new
    assert "PidFile=/run/slurmdbd.pid" in hostconfig.slurmdbd_conf(
        cat.topology("bookworm").clusters["bookworm"]).splitlines()


def test_half_built_bases_are_found_and_complete_ones_are_not(tmp_path):
    complete = tmp_path / "base-aaaa"
    complete.mkdir()
    (complete / basecache.MARKER).write_text("{}")
    interrupted = tmp_path / "base-bbbb.building-123"
    interrupted.mkdir()
    unmarked = tmp_path / "base-cccc"
    unmarked.mkdir()
    (tmp_path / "hosts").mkdir()
    assert basecache.stale_builds(tmp_path) == [interrupted, unmarked]
    assert basecache.is_complete(complete)
    assert basecache.stale_builds(tmp_path / "missing") == []


def test_mounts_below_reads_mountinfo_deepest_first():
    info = (
        "22 1 0:21 / /proc rw - proc proc rw\n"
        "90 1 0:50 / /c/hosts/hpc1/root rw - overlay overlay rw,lowerdir=/c/base\n"
        "91 90 0:51 / /c/hosts/hpc1/root/proc rw - proc proc rw\n"
        "92 1 0:52 / /c/hosts/hpc10\\040x/root rw - overlay overlay rw\n"
    )
    assert mounts_below(Path("/c/hosts/hpc1"), info) == [
        Path("/c/hosts/hpc1/root/proc"),
        Path("/c/hosts/hpc1/root"),
    ]
    assert Path("/c/hosts/hpc10 x/root") in mounts_below(Path("/c/hosts"), info)


def test_slurm_conf_is_munge_only_and_points_at_the_cluster_slurmdbd():
    split = load_catalog().topology("split").clusters["split"]
    conf = hostconfig.slurm_conf(split).splitlines()
    assert "ClusterName=split" in conf
    assert "SlurmctldHost=split-ctl" in conf
    assert "AccountingStorageType=accounting_storage/slurmdbd" in conf
    assert "AccountingStorageHost=split-db" in conf
    assert any(line.startswith("NodeName=split-ctl ") for line in conf)
    for text in (hostconfig.slurm_conf(split), hostconfig.slurmdbd_conf(split)):
        body = [line for line in text.splitlines() if not line.startswith("#")]
        assert not [line for line in body if "authalt" in line.lower() or "jwt" in line.lower()]
    assert "DbdHost=split-db" in hostconfig.slurmdbd_conf(split).splitlines()


def test_host_files_per_role():
    cat = load_catalog()
    split = cat.topology("split")
    key = b"k" * 1024

    def files(name):
        host = split.host(name)
        return {f.path: f for f in hostconfig.host_files(cat, host, key, "ssh-ed25519 AAA x",
                                                          "0" * 32)}

    db, rest, ctl = files("split-db"), files("split-rest"), files("split-ctl")
    assert db["/etc/slurm/slurmdbd.conf"].mode == 0o600
    assert (db["/etc/slurm/slurmdbd.conf"].owner, db["/etc/slurm/slurmdbd.conf"].group) == (
        "slurm", "slurm")
    assert "/etc/slurm/slurmdbd.conf" not in ctl
    assert rest["/etc/slurm-web/agent.ini"].content == "[service]\ncluster=split\n"
    assert "/etc/slurm-web/agent.ini" not in ctl
    # The stand-in and its units come in the slurm-web-agent package (test_slurmweb_pkg.py).
    assert hostconfig.GATEWAY_KEY in rest and hostconfig.GATEWAY_KEY not in ctl
    assert not [p for p in rest if p.startswith(hostconfig.UNIT_DIR)]
    assert db["/etc/munge/munge.key"].content == key
    assert db["/etc/munge/munge.key"].mode == 0o400
    hosts = db["/etc/hosts"].content
    for host in cat.all_hosts:
        assert f"{host.address}\t{host.name}" in hosts


def test_enabled_units_follow_roles_and_the_cluster_agent_unit():
    cat = load_catalog()
    fleet = cat.topology("fleet")
    assert "slurm-web-agent-uwsgi.service" in hostconfig.enabled_units(fleet.host("gamma1"))
    assert "slurm-web-agent.service" not in hostconfig.enabled_units(fleet.host("gamma1"))
    assert "slurm-web-agent.service" in hostconfig.enabled_units(fleet.host("beta-rest"))
    assert hostconfig.enabled_units(fleet.host("beta-db")) == [
        hostconfig.NET_UNIT, "mariadb.service", "slurmdbd.service"]
    for host in cat.all_hosts:
        assert "slurmrestd.service" not in hostconfig.enabled_units(host)


def test_the_uwsgi_unit_and_ini_are_shaped_like_slurm_webs():
    unit = hostconfig.standin_unit("slurm-web-agent-uwsgi.service").splitlines()
    service = unit[unit.index("[Service]") + 1:unit.index("[Install]")]
    # lib/wsgi/agent/slurm-web-agent-uwsgi.service (v5.2.0, v6.0.0), plus the stand-in's own
    # environment; no Restart= (Slurm-web's has none).
    assert [line for line in service if line and not line.startswith("Environment=")] == [
        "User=slurm-web", "RuntimeDirectory=slurm-web-agent",
        "ExecStart=/usr/bin/uwsgi --ini /usr/share/slurm-web/wsgi/agent/slurm-web-agent.ini"]
    assert "Environment=STANDIN_PATH=/usr/local/libexec/slurm-web-agent-standin.py" in service
    ini = hostconfig.uwsgi_ini().splitlines()
    settings = dict(line.split(" = ", 1) for line in ini[ini.index("[uwsgi]") + 1:])
    assert settings == {
        "plugin": "python3", "wsgi-file": "/usr/share/slurm-web/wsgi/agent/slurm-web-agent.py",
        "master": "true", "processes": "5", "socket": "/run/slurm-web-agent/uwsgi.sock",
        "chmod-socket": "666", "buffer-size": "32768", "vacuum": "true", "die-on-term": "true"}
    # The native unit serves HTTP on 5012 as before: the stand-in itself, no uWSGI.
    native = hostconfig.standin_unit("slurm-web-agent.service").splitlines()
    assert "ExecStart=/usr/bin/python3 /usr/local/libexec/slurm-web-agent-standin.py" in native
    assert not [line for line in native if "uwsgi" in line.lower()]


def test_agent_hosts_get_the_wsgi_file_and_ini_where_the_package_puts_them():
    cat = load_catalog()
    for name in ("gamma1", "beta-rest"):  # whichever unit the host runs, as a package would
        files = {f.path: f for f in hostconfig.host_files(
            cat, cat.host(name), b"k", "ssh-ed25519 AAA x", "print()", "0" * 32)}
        assert files[hostconfig.WSGI_INI].content == hostconfig.uwsgi_ini()
        assert files[hostconfig.WSGI_FILE].content == hostconfig.WSGI_SOURCE.read_text()
        assert "STAND-IN" in files[hostconfig.WSGI_FILE].content
    files = {f.path for f in hostconfig.host_files(
        cat, cat.host("beta-db"), b"k", "ssh-ed25519 AAA x", "print()", "0" * 32)}
    assert hostconfig.WSGI_INI not in files and hostconfig.WSGI_FILE not in files


def test_standin_units_name_themselves_stand_ins_and_run_as_slurm_web():
    for unit in ("slurm-web-agent.service", "slurm-web-agent-uwsgi.service"):
        text = hostconfig.standin_unit(unit)
        assert "STAND-IN" in text
        assert "User=slurm-web" in text.splitlines()
        assert f"Environment=UNIT={unit}" in text.splitlines()
        assert "Environment=STANDIN_RELEASE=6.0" in text.splitlines()
        assert "Environment=STANDIN_RELEASE=5.2" in hostconfig.standin_unit(unit, "5.2")
