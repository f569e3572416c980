"""keytransfer: a host that stops answering while the key travels is a named error in bounded
time, not a run that waits for TCP to give up (about 15 minutes)."""

from __future__ import annotations

import pytest
from pyinfra.api import OperationError

from slurmrestd_access import keytransfer
from slurmrestd_access.keytransfer import KeySource, KeySourceError


class DeadHost:
    """A pyinfra host whose commands never answer: pyinfra raises TimeoutError at `_timeout`."""

    name = "beta-db"
    connected = True

    def __init__(self) -> None:
        self.timeouts: list[object] = []

    def run_shell_command(self, command, print_output=False, **kwargs):
        self.timeouts.append(kwargs.get("_timeout"))
        raise TimeoutError()


@pytest.fixture(autouse=True)
def no_privilege(monkeypatch):
    monkeypatch.setattr(keytransfer.privilege, "arguments", lambda state, host: {})


def test_installing_on_a_host_that_went_down_fails_in_bounded_time(tmp_path):
    key = tmp_path / "key"
    key.write_bytes(b"k" * 32)
    key.chmod(0o600)
    host = DeadHost()
    with pytest.raises(OperationError) as err:
        keytransfer.install_key(None, host, KeySource("file", str(key)), "/usr/local/bin/t",
                                "/var/spool/slurm/jwt_hs256.key", "slurm", "slurm", 0o600)
    assert host.timeouts == [keytransfer.TRANSFER_TIMEOUT]
    assert "beta-db" in str(err.value) and "no answer" in str(err.value)
    assert "kkkk" not in str(err.value)


def test_reading_from_a_host_that_went_down_fails_in_bounded_time():
    host = DeadHost()

    class Inventory:
        def get_host(self, name):
            return host

    class State:
        inventory = Inventory()

    with pytest.raises(KeySourceError) as err:
        keytransfer.read_host_key(State(), KeySource("host", "beta-ctl", "/var/spool/k"))
    assert host.timeouts == [keytransfer.TRANSFER_TIMEOUT]
    assert "beta-ctl" in str(err.value)


def test_inventory_values_reach_the_shell_quoted():
    """Issue 21: paths and names from host data are quoted in the commands built from them."""
    from slurmrestd_access.operations import _verified

    check = _verified("/var/lib/x y/$(id).whl", "0" * 64)
    assert "'/var/lib/x y/$(id).whl'" in check
    assert '"/var/lib/x y' not in check  # not inside double quotes, where $(...) would run
