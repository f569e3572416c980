"""The workstation side as a library: deploy keywords, one version, the host tool's own wheel."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from slurmrestd_access import __version__, hostwheel
from slurmrestd_access.deploys import rotate_key, slurmrestd_access
from slurmrestd_access.settings import Settings, SettingsError, settings_from_host_data
from slurmrestd_access.watchconf import render_watch_toml, watch_config
from watchdog_daemon import __version__ as host_version

ROOT = Path(__file__).resolve().parents[2]
HOST_DATA = {"cluster": "hpc", "check_timeout": 30, "agent_unit": "slurm-web-agent.service"}


def test_a_keyword_wins_over_host_data_which_wins_over_the_default():
    s = settings_from_host_data("h", HOST_DATA, {"check_timeout": 45, "jwt_lifespan": 900})
    assert s.check_timeout == 45  # keyword over host data
    assert s.agent_unit == "slurm-web-agent.service"  # host data, no keyword
    assert s.jwt_lifespan == 900  # keyword over the default
    assert s.restart_wait == 60  # the default
    # None leaves the host data in place (the signature's default for every keyword)
    assert settings_from_host_data("h", HOST_DATA, {"check_timeout": None}).check_timeout == 30


def test_keywords_are_validated_as_host_data_is():
    with pytest.raises(SettingsError, match="agent_key_mode='rw' is not a file mode"):
        settings_from_host_data("h", HOST_DATA, {"agent_key_mode": "rw"})
    assert settings_from_host_data("h", HOST_DATA, {"agent_key_mode": "0600"}).agent_key_mode \
        == 0o600
    with pytest.raises(SettingsError, match="cluster"):
        settings_from_host_data("h", {}, {"cluster": "bad name"})
    # The cluster may come from the keyword alone.
    assert settings_from_host_data("h", {}, {"cluster": "hpc"}).cluster == "hpc"


@pytest.mark.parametrize(("keyword", "meant"), [
    ("agent_units", "agent_unit"), ("jwt_key_pth", "jwt_key_path"),
    ("metrics", "watch_metrics"), ("restart_spacing", "watch_restart_spacing")])
def test_a_misspelt_keyword_names_the_setting_it_likely_meant(keyword, meant):
    with pytest.raises(SettingsError) as raised:
        settings_from_host_data("h", HOST_DATA, {keyword: "x"})
    assert f"keyword {keyword!r} is not a setting of this deploy: did you mean {meant!r}?" \
        in str(raised.value)


def test_a_keyword_with_no_near_setting_points_to_the_table():
    with pytest.raises(SettingsError, match=r"see the settings in docs/deploy\.md"):
        settings_from_host_data("h", HOST_DATA, {"zzzz": 1})


@pytest.mark.parametrize("deploy", [slurmrestd_access, rotate_key])
def test_the_signature_lists_every_setting_with_its_type(deploy):
    params = inspect.signature(deploy).parameters
    hints = {f.name: f.type for f in dataclasses.fields(Settings)}
    assert list(params) == list(hints)
    for name, param in params.items():
        assert param.kind is inspect.Parameter.KEYWORD_ONLY and param.default is None
        assert str(param.annotation).replace("typing.", "").startswith(
            str(hints[name]).split(" | None")[0].replace("typing.", "")), name


def test_watchdog_settings_reach_its_config_and_are_checked():
    s = settings_from_host_data("h", HOST_DATA, {"watch_metrics": "127.0.0.1:9900",
                                                 "watch_restart_spacing": 1.5})
    cfg = watch_config(s)
    assert cfg.metrics == ("127.0.0.1", 9900) and cfg.restart_spacing == 1.5
    plain = render_watch_toml(settings_from_host_data("h", HOST_DATA))
    assert "metrics" not in plain and "restart_spacing" not in plain
    with pytest.raises(SettingsError, match=r"watch_metrics=.0.0.0.0:9900.*loopback"):
        settings_from_host_data("h", HOST_DATA, {"watch_metrics": "0.0.0.0:9900"})
    with pytest.raises(SettingsError, match="watch_restart_spacing=60 must be"):
        settings_from_host_data("h", HOST_DATA, {"watch_restart_spacing": 60})


def test_one_version_everywhere():
    assert __version__ == host_version
    for command in ("slurmrestd-access", "slurmrestd-access-rollout",
                    "slurmrestd-access-report"):
        done = subprocess.run([str(Path(sys.executable).parent / command), "--version"],
                              capture_output=True, text=True, check=True)
        assert done.stdout.strip() == f"{command} {__version__}"
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{__version__}]" in changelog


def test_the_host_wheel_holds_the_host_tool_alone(tmp_path):
    wheel = hostwheel.build(tmp_path)
    assert wheel.name == f"slurmrestd_access-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        meta = archive.read(f"slurmrestd_access-{__version__}.dist-info/METADATA").decode()
    assert {n.split("/")[0] for n in names} == {
        "watchdog_daemon", f"slurmrestd_access-{__version__}.dist-info"}
    assert "watchdog_daemon/units/slurmrestd-access-watch.service" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert f"Version: {__version__}" in meta
    assert "Requires-Dist: pyjwt>=2.8" in meta and "pyinfra" not in meta
    assert hostwheel.build(tmp_path / "again").read_bytes() == wheel.read_bytes()


def test_installed_without_a_checkout_the_requirements_come_from_the_metadata(monkeypatch):
    from_checkout = hostwheel.host_requirements()
    monkeypatch.setattr(hostwheel, "CHECKOUT_ROOT", None)
    requires = ["pyjwt>=2.8", 'tomli>=1.1; python_version < "3.11"',
                'pyinfra<4,>=3.10; extra == "deploy"', "pytest>=8; extra == 'test'"]
    monkeypatch.setattr(hostwheel.importlib.metadata, "requires", lambda name: requires)
    assert hostwheel.host_requirements() == requires[:2]
    assert "pyjwt>=2.8" in from_checkout


def test_importing_an_entry_file_deploys_nothing():
    # Outside pyinfra's CLI a call would raise (no host in context): importing must not call.
    for name in ("deploys.slurmrestd_access", "deploys.rotate_key"):
        sys.modules.pop(name, None)
        importlib.import_module(name)


def test_the_wheel_never_ships_the_checkouts_entry_folder():
    import tomllib

    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert not [p for p in found["packages"]["find"]["include"] if p.startswith("deploys")]


def test_a_mode_from_the_command_line_read_as_decimal_is_refused():
    # `pyinfra INV slurmrestd_access.deploys.slurmrestd_access agent_key_mode=0400` passes 400.
    with pytest.raises(SettingsError, match="is mode 0620: a key file's mode is owner-only"):
        settings_from_host_data("h", HOST_DATA, {"agent_key_mode": 400})
    with pytest.raises(SettingsError, match="is mode 1130: a key file's mode is at most"):
        settings_from_host_data("h", HOST_DATA, {"jwt_key_mode": 600})
    s = settings_from_host_data("h", HOST_DATA, {"agent_key_mode": "0o400", "jwt_key_mode": 0o640})
    assert (s.agent_key_mode, s.jwt_key_mode) == (0o400, 0o640)
