import pytest

from deploys.lib.settings import Settings, SettingsError, settings_from_host_data


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
        "h", {"cluster": "c1", "agent_key_mode": "0440", "jwt_lifespan": "600",
              "agent_unit": "slurm-web-agent-uwsgi.service", "unrelated": 1}
    )
    assert s.agent_key_mode == 0o440
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
