import pytest

from slurmrestd_access.settings import Settings, SettingsError, settings_from_host_data


def test_defaults_are_the_documentation_values():
    s = settings_from_host_data("h", {"cluster": "hpc"})
    assert s.jwt_key_path == "/var/spool/slurm/jwt_hs256.key"
    assert (s.jwt_key_owner, s.jwt_key_group, s.jwt_key_mode) == ("slurm", "slurm", 0o600)
    assert s.agent_key_path == "/var/lib/slurm-web/slurmrestd.key"
    assert (s.agent_user, s.agent_group, s.agent_key_mode) == ("slurm-web", "slurm-web", 0o400)
    assert s.slurmrestd_dropin == "/etc/systemd/system/slurmrestd.service.d/slurm-web.conf"
    assert s.socket_uri == "unix:///run/slurmrestd/slurmrestd.socket"
    assert s.agent_unit is None


def test_host_data_overrides_and_modes_as_text():
    s = settings_from_host_data(
        "h", {"cluster": "c1", "agent_key_mode": "0600", "jwt_lifespan": "600",
              "agent_unit": "slurm-web-agent-uwsgi.service", "unrelated": 1}
    )
    assert s.agent_key_mode == 0o600
    assert s.jwt_lifespan == 600
    assert s.agent_unit == "slurm-web-agent-uwsgi.service"
    assert isinstance(s, Settings)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({}, "'cluster' is missing"),
        ({"cluster": "bad name"}, "'cluster' is missing or invalid"),
        ({"cluster": "c", "agent_key_mode": "rw-"}, "not a file mode"),
        ({"cluster": "c", "agent_key_mode": 0o17777}, "not a file mode"),
        ({"cluster": "c", "agent_key_mode": "0440"}, "owner-only"),
        ({"cluster": "c", "jwt_key_mode": "0644"}, "at most owner read-write and group read"),
        ({"cluster": "c", "jwt_key_mode": "0200"}, "lets its owner read it"),
        ({"cluster": "c", "jwt_lifespan": "soon"}, "not a number"),
        ({"cluster": "c", "jwt_lifespan": 0}, "must be positive"),
        ({"cluster": "c", "agent_user": "Bad User"}, "not a user/group name"),
        ({"cluster": "c", "agent_unit": "agent"}, "not a systemd service name"),
        ({"cluster": "c", "jwt_key_path": "relative/key"}, "must be an absolute path"),
        ({"cluster": "c", "key_source_file": "/k", "key_source_command": "x"}, "not both"),
        ({"cluster": "c", "key_source_encoding": "hex"}, "'raw' or 'base64'"),
    ],
)
def test_bad_host_data_is_a_clear_error_naming_the_host(data, needle):
    with pytest.raises(SettingsError) as err:
        settings_from_host_data("node7", data)
    assert needle in str(err.value)
    assert str(err.value).startswith("node7: ")


@pytest.mark.parametrize(("key", "meant"), [
    ("jwt_key_pth", "jwt_key_path"),
    ("agent_usr", "agent_user"),
    ("slurm_cnf", "slurm_conf"),
    ("restart_wiat", "restart_wait"),
    ("slurmrestd_sock", "slurmrestd_socket"),
    ("agent_units", "agent_unit"),
])
def test_a_misspelt_setting_is_an_error_naming_the_likely_one(key, meant):
    with pytest.raises(SettingsError) as err:
        settings_from_host_data("node7", {"cluster": "c", key: "/x"})
    assert str(err.value).startswith("node7: ")
    assert f"{key!r} is not a setting" in str(err.value)
    assert f"did you mean {meant!r}?" in str(err.value)


@pytest.mark.parametrize("key", ["watch_interval", "jwt_algorithm", "key_source_url",
                                 "tool_version", "check_retries", "slurmdbd_host"])
def test_any_name_under_the_deploy_s_own_prefixes_must_be_a_setting(key):
    with pytest.raises(SettingsError, match=f"{key!r} is not a setting"):
        settings_from_host_data("h", {"cluster": "c", key: 1})


def test_pyinfra_s_own_data_and_a_site_s_other_data_stay_allowed():
    data = {"cluster": "c", "ssh_user": "root", "ssh_port": 2222, "ssh_key": "/k",
            "ssh_known_hosts_file": "/dev/null", "_sudo": True, "_sudo_password": "pw",
            "_su_user": "x", "fake_delay": 0, "docker_identifier": "x", "winrm_port": 5986,
            "rack": "r12", "site_owner": "hpc-team", "slurm_version": "24.11",
            "backup": True, "agent": "yes"}
    assert settings_from_host_data("h", data).cluster == "c"


def _inventory_hosts(path) -> list[tuple[str, dict]]:
    import runpy

    names = runpy.run_path(str(path))
    return [entry for value in names.values() if isinstance(value, list)
            for entry in value if isinstance(entry, tuple)]


def test_the_example_inventory_and_the_testbed_s_pass(tmp_path):
    from pathlib import Path

    from tests.testbed.inventory import render_inventory
    from tests.testbed.topology import load_catalog

    root = Path(__file__).resolve().parents[2]
    hosts = _inventory_hosts(root / "inventories" / "example_site.py")
    testbed = tmp_path / "testbed.py"
    testbed.write_text(render_inventory(load_catalog().topologies.values(), tmp_path / "id"))
    hosts += _inventory_hosts(testbed)
    assert len(hosts) > 8
    for name, data in hosts:
        settings_from_host_data(name, data)


def test_a_typo_stops_the_deploy_before_any_command(tmp_path):
    from tests.unit.fakedeploy import deploy, deployed_host

    run = deploy(tmp_path, {"hpc1": deployed_host(data={"jwt_key_pth": "/srv/key"})})
    assert run.returncode != 0
    assert "did you mean 'jwt_key_path'?" in run.output
    assert run.commands.get("@fake/hpc1", []) == []
    # An error in the inventory, said as one: no Python traceback, no pyinfra-debug.log.
    assert "pyinfra error" in run.output and "Traceback" not in run.output
