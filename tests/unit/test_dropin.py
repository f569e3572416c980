"""dropin: the slurmrestd drop-in is, by default, exactly the Slurm-web documentation's."""

from __future__ import annotations

import pathlib

import pytest

from watchdog_daemon.config.dropin import render_dropin, runtime_directory

# Copied literally from the documentation page ("Setup slurmrestd"; tests/fixtures/).
SEED_DROPIN = """[Service]
# Unset vendor unit ExecStart and Environment to avoid cumulative definition
ExecStart=
Environment=
Environment="SLURM_JWT=daemon"
ExecStart=/usr/sbin/slurmrestd $SLURMRESTD_OPTIONS -a rest_auth/jwt unix:/run/slurmrestd/slurmrestd.socket
RuntimeDirectory=slurmrestd
RuntimeDirectoryMode=0755
User=slurmrestd
Group=slurmrestd
DynamicUser=yes
"""  # noqa: E501 (the seed's ExecStart line is long)

# The documentation's section itself, carried in the repository (never skipped in a clone).
SEED_FILE = pathlib.Path(__file__).parents[1] / "fixtures" / "seed-setup-slurmrestd.txt"


def test_defaults_are_the_seed_text_exactly():
    assert render_dropin() == SEED_DROPIN


def test_defaults_match_the_seed_file():
    lines = SEED_FILE.read_text().splitlines()
    start = lines.index("[Service]")
    end = lines.index("DynamicUser=yes", start)
    assert render_dropin() == "\n".join(lines[start : end + 1]) + "\n"


def test_custom_values():
    text = render_dropin(
        socket_path="/run/restd/api.socket",
        slurmrestd_bin="/opt/slurm/sbin/slurmrestd",
        user="restd",
        group="restd",
    )
    assert "ExecStart=/opt/slurm/sbin/slurmrestd $SLURMRESTD_OPTIONS -a rest_auth/jwt" in text
    assert "unix:/run/restd/api.socket\n" in text
    assert "RuntimeDirectory=restd\n" in text
    assert "User=restd\nGroup=restd\n" in text
    assert text.endswith("DynamicUser=yes\n")


def test_nested_runtime_directory():
    assert runtime_directory("/run/a/b/s.socket") == "a/b"


@pytest.mark.parametrize(
    "kw",
    [
        {"socket_path": "/tmp/slurmrestd.socket"},
        {"socket_path": "/run/s.socket"},
        {"socket_path": "/run/a/../b/s.socket"},
        {"socket_path": "/run/a b/s.socket"},
        {"socket_path": "/run/%n/s.socket"},
        {"slurmrestd_bin": "slurmrestd"},
        {"slurmrestd_bin": "/usr/sbin/slurmrestd -v"},
        {"user": "root\nExecStartPre=/bin/sh"},
        {"group": ""},
    ],
)
def test_unsafe_values_rejected(kw):
    with pytest.raises(ValueError):
        render_dropin(**kw)


def test_a_slurm_conf_elsewhere_is_given_to_slurmrestd():
    """The drop-in's `Environment=` clears a site's own SLURM_CONF for slurmrestd (measured on
    the testbed: it then looked for /etc/slurm/slurm.conf and exited), so the drop-in says it."""
    text = render_dropin(slurm_conf="/etc/slurm-llnl/slurm.conf")
    lines = text.splitlines()
    assert lines.index("Environment=SLURM_CONF=/etc/slurm-llnl/slurm.conf") > \
        lines.index("Environment=")
    assert render_dropin(slurm_conf="/etc/slurm/slurm.conf") == SEED_DROPIN
    with pytest.raises(ValueError):
        render_dropin(slurm_conf="/etc/slurm llnl/slurm.conf")
