"""agent.ini parsing as the Slurm-web agent reads it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import slurmweb_loader
from watchdog_daemon.config.agentconf import (
    AgentSettings,
    ConfigError,
    agent_ini_problems,
    load_agent_settings,
    parse_agent_ini,
)
from watchdog_daemon.exitcodes import ExitCode


def test_defaults():
    s = parse_agent_ini("[service]\ncluster = hpc\n")
    assert s == AgentSettings(cluster="hpc")
    assert s.uri == "unix:///run/slurmrestd/slurmrestd.socket"
    assert s.socket_path == Path("/run/slurmrestd/slurmrestd.socket")
    assert (s.auth, s.jwt_mode, s.jwt_user, s.jwt_lifespan) == ("jwt", "auto", "slurm", 3600)
    assert s.jwt_key == Path("/var/lib/slurm-web/slurmrestd.key")
    assert s.versions is None


def test_all_settings():
    s = parse_agent_ini(
        "[service]\ncluster=c1\n[slurmrestd]\nuri = unix:///tmp/x%20y.sock\nauth=jwt\n"
        "jwt_mode = auto\njwt_user = admin\njwt_lifespan = 60\njwt_key = /k\n"
        "versions =\n  0.0.42\n  0.0.41\n[racksdb]\nenabled = no\n"
    )
    assert s.socket_path == Path("/tmp/x y.sock")
    assert s.jwt_user == "admin" and s.jwt_lifespan == 60 and s.jwt_key == Path("/k")
    assert s.versions == ("0.0.42", "0.0.41") and s.api_versions == s.versions


def test_versions_default_to_the_agents_list_and_are_one_per_line():
    assert parse_agent_ini("[service]\ncluster=c\n").api_versions == (
        "0.0.44", "0.0.43", "0.0.42", "0.0.41")
    # The agent does not split on commas: this is one version string, which it will not find.
    s = parse_agent_ini("[service]\ncluster=c\n[slurmrestd]\nversions = 0.0.42, 0.0.41\n")
    assert s.api_versions == ("0.0.42, 0.0.41",)


def test_interpolation_as_the_agent_reads_it():
    s = parse_agent_ini("[service]\ncluster=c\n[slurmrestd]\njwt_user = a%b$$\n"
                        "jwt_key = ${service:cluster}.key\n")
    assert s.jwt_user == "a%b$" and s.jwt_key == Path("c.key")


def test_every_problem_is_listed_with_its_line():
    problems = agent_ini_problems("[DEFAULT]\nx = 1\n[service]\ncluster = a\nport = p\n"
                                  "[Racksdb]\n")
    assert [p.line for p in problems] == [2, 5, 6]
    assert [p.message for p in problems] == [
        "agent.ini: line 2: [DEFAULT] key `x` applies to every section, and [service] has no "
        "setting `x`",
        "agent.ini: line 5: [service] port is not a valid int",
        "agent.ini: line 6: section [Racksdb] is not one the agent knows (service, slurmrestd, "
        "filters, policy, jwt, racksdb, cache, metrics; names are case-sensitive)",
    ]
    assert agent_ini_problems("[service]\ncluster = a\n") == []


def test_deprecated_socket_key():
    s = parse_agent_ini("[service]\ncluster=c\n[slurmrestd]\nsocket = /run/s.sock\n")
    assert s.uri == "unix:///run/s.sock" and s.socket_path == Path("/run/s.sock")


@pytest.mark.parametrize("rest", ["socket=/a\nuri=unix:///b\n", "socket=/a\n", "uri=unix:///b\n"])
def test_the_socket_is_the_one_slurmwebs_agent_uses(rest, tmp_path):
    """Slurm-web's agent (slurmweb/apps/agent.py, 4.2 to 6.0) uses the deprecated `socket` when
    its settings loader kept it, else `uri`; and the loader (RFL.settings, 1.4 to 1.9) drops
    `socket` when `uri` is also set. So uri wins over socket, as Slurm-web's own loader says."""
    text = f"[service]\ncluster=c\n[slurmrestd]\n{rest}"
    loaded = slurmweb_loader.load(text, tmp_path)
    used = (Path(loaded.slurmrestd.socket) if loaded.slurmrestd.socket
            else Path(loaded.slurmrestd.uri.path))
    assert parse_agent_ini(text).socket_path == used


def test_http_uri_has_no_socket_path():
    s = parse_agent_ini("[service]\ncluster=c\n[slurmrestd]\nuri=http://localhost:6820\n")
    assert s.socket_path is None


def test_comments_and_case_of_keys():
    s = parse_agent_ini("# comment\n[service]\n; other\nCLUSTER = hpc\n")
    assert s.cluster == "hpc"


def test_static_token_kept_secret():
    s = parse_agent_ini("[service]\ncluster=c\n[slurmrestd]\njwt_mode=static\n"
                        "jwt_token=SENTINEL-token\n")
    assert s.jwt_token is not None and s.jwt_token.reveal() == b"SENTINEL-token"
    assert "SENTINEL" not in repr(s)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "cluster is not set"),
        ("[service]\n", "cluster is not set"),
        ("[DEFAULT]\ncluster = a\n", "cluster is not set"),
        ("[DEFAULT]\ncluster = a\n[service]\n[slurmrestd]\n", "line 2: [DEFAULT] key"),
        ("[service]\ncluster=a\nSENTINEL = 1\n", "line 3: [service] has no setting"),
        ("[service]\ncluster=a\n[slurmrestd]\njwt_token = SENTINEL$x\n", "line 4: "),
        ("[service]\ncluster=a\n[slurmrestd]\nauth = munge\n", "not one of local, jwt"),
        ("[service]\ncluster=a\n[ui]\n", "line 3: section [ui]"),
        ("cluster = x\n", "before the first [section]"),
        ("[service]\ncluster=a\n[service]\n", "appears twice"),
        ("[service]\ncluster=a\ncluster=b\n", "appears twice"),
        ("[service]\ncluster=a\nSENTINEL-garbage-line\n", "cannot parse line(s) 3"),
        ("[service]\ncluster=a\n[slurmrestd]\njwt_lifespan=abc\n", "not a valid int"),
        ("[service]\ncluster=a\n[slurmrestd]\njwt_lifespan=0\n", "not a positive integer"),
        ("[service]\ncluster=a\n[slurmrestd]\njwt_lifespan=-5\n", "not a positive integer"),
        ("[service]\ncluster=a\n[slurmrestd]\njwt_mode=magic\n", "not one of auto, static"),
        ("[service]\ncluster=a\n[jwt]\nalgorithm=none\n", "not one of HS256"),
        ("[service]\ncluster=a\n[slurmrestd]\nuri=/no/scheme\n", "has no scheme"),
    ],
)
def test_errors(text, fragment):
    with pytest.raises(ConfigError) as info:
        parse_agent_ini(text, path="/etc/slurm-web/agent.ini")
    err = info.value
    assert fragment in err.message and err.hint
    assert err.exit_code == ExitCode.CONFIG_INVALID
    assert "SENTINEL" not in str(err)


def test_load(tmp_path):
    p = tmp_path / "agent.ini"
    p.write_text("[service]\ncluster = hpc\n")
    assert load_agent_settings(p).cluster == "hpc"


def test_load_missing(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_agent_settings(tmp_path / "agent.ini")
    assert "does not exist" in info.value.message and "--agent-ini" in info.value.hint


def test_load_not_utf8(tmp_path):
    p = tmp_path / "agent.ini"
    p.write_bytes(b"[service]\ncluster=\xff\n")
    with pytest.raises(ConfigError):
        load_agent_settings(p)
