"""A setting's value as Slurm's daemons take it (config/slurmparse.py `last_value`, read by
config/slurmconf.py `configured_value`): Include lines read inline, the last value wins."""

from __future__ import annotations

import pytest

from watchdog_daemon.config.atomicwrite import FileMissingError
from watchdog_daemon.config.slurmconf import configured_value
from watchdog_daemon.config.slurmparse import ConfigParseError, last_value

TOP = "/etc/slurm/slurm.conf"
KEY = "AccountingStorageType"
DBD, NONE = "accounting_storage/slurmdbd", "accounting_storage/none"


def value(top: str, **others: str) -> str | None:
    files = {TOP: top, **{f"/etc/slurm/{n.replace('_', '.')}": t for n, t in others.items()}}
    return last_value(files, TOP, KEY)


@pytest.mark.parametrize(("top", "expected"), [
    (f"{KEY}={DBD}\n", DBD),
    (f"accountingstoragetype = {DBD}\n", DBD),  # any case, spaces around =
    (f"ClusterName=hpc {KEY}={DBD}\n", DBD),  # several pairs on a line
    (f"#{KEY}={DBD}\n", None),
    (f"{KEY}={DBD}\n{KEY}={NONE}\n", NONE),  # the last one wins
    (f'{KEY}="{DBD}"\n', DBD),
    (f"{KEY}=acc\\\nounting_storage/slurmdbd\n", DBD),  # a continued line
    ("", None),
])
def test_one_file(top, expected):
    assert value(top) == expected


def test_an_included_file_is_read_where_its_include_line_stands():
    assert value("ClusterName=hpc\nInclude acct.conf\n", acct_conf=f"{KEY}={DBD}\n") == DBD
    assert value(f"Include acct.conf\n{KEY}={NONE}\n", acct_conf=f"{KEY}={DBD}\n") == NONE
    assert value(f"{KEY}={NONE}\nInclude acct.conf\n", acct_conf=f"{KEY}={DBD}\n") == DBD


def test_nested_includes_and_percent_c():
    top = "ClusterName=HPC\nInclude %c.conf\n"
    assert value(top, hpc_conf="Include deeper.conf\n", deeper_conf=f"{KEY}={DBD}\n") == DBD


def test_a_missing_globbed_or_unresolved_include_is_skipped():
    assert value(f"{KEY}={DBD}\nInclude absent.conf\n") == DBD
    assert value(f"{KEY}={DBD}\nInclude /etc/slurm/*.conf\n", x_conf=f"{KEY}={NONE}\n") == DBD
    assert value(f"{KEY}={DBD}\nInclude %c.conf\n", hpc_conf=f"{KEY}={NONE}\n") == DBD


def test_an_include_loop_ends():
    assert value("Include a.conf\n", a_conf=f"Include b.conf\n{KEY}={DBD}\n",
                 b_conf="Include a.conf\n") == DBD


def test_a_line_slurm_cannot_parse_is_an_error():
    with pytest.raises(ConfigParseError):
        value(f"{KEY}\n")


def test_configured_value_reads_the_files(tmp_path):
    (tmp_path / "slurm.conf").write_text("ClusterName=hpc\nInclude acct.conf\n")
    (tmp_path / "acct.conf").write_text(f"{KEY}={DBD}\n")
    assert configured_value(str(tmp_path / "slurm.conf"), KEY) == DBD
    assert configured_value(str(tmp_path / "slurm.conf"), "AccountingStorageHost") is None
    with pytest.raises(FileMissingError):
        configured_value(str(tmp_path / "absent.conf"), KEY)
