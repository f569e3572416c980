"""The agent.ini definitions written here, held against Slurm-web's own.

`tests/fixtures/slurmweb-agent-definitions.json` is the settings table of Slurm-web's
`conf/vendor/agent.yml` (types, defaults, choices, required, deprecated; no docs) at the tags it
names, read from rackslab/Slurm-web. The host tool's `AGENT_SCHEMA` models the 6.0.0 agent, the
stand-in's `SCHEMAS` the 5.2.0 and 6.0.0 agents: each must say exactly what that table says for
its release, so that neither can drift from the real agent by agreeing with the other.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.testbed.standin import slurm_web_agent_standin as standin
from watchdog_daemon.config import agentconf

TABLE = json.loads((Path(__file__).resolve().parents[1] / "fixtures" /
                    "slurmweb-agent-definitions.json").read_text())
MODELLED = TABLE["releases"]["6.0.0"]
DEFS: dict[str, dict[str, dict]] = MODELLED["sections"]


def test_the_table_names_its_source():
    assert MODELLED["tag"] == "v6.0.0" and len(MODELLED["commit"]) == 40
    assert "conf/vendor/agent.yml" in TABLE["source"]


def test_host_tool_schema_has_slurmwebs_sections_keys_and_types():
    theirs = {s: {k: d["type"] for k, d in keys.items()} for s, keys in DEFS.items()}
    assert theirs == agentconf.AGENT_SCHEMA


# Each release the stand-in can be, against that release's table.
STANDIN_RELEASES = {name: TABLE["releases"][r.version]["sections"]
                    for name, r in standin.RELEASES.items()}


@pytest.mark.parametrize("release", list(STANDIN_RELEASES))
def test_standin_schema_has_slurmwebs_sections_keys_types_and_defaults(release):
    defs = STANDIN_RELEASES[release]
    types = {s: {k: d["type"] for k, d in keys.items()} for s, keys in defs.items()}
    assert types == {s: {k: t for k, (t, _d) in keys.items()}
                     for s, keys in standin.SCHEMAS[release].items()}
    # The defaults of what it acts on (where it listens, how it reaches slurmrestd, its own
    # key) are Slurm-web's; the sections it only validates keep None.
    for section in ("service", "slurmrestd", "jwt"):
        theirs = {k: d.get("default") for k, d in defs[section].items()}
        assert theirs == {k: d for k, (_t, d) in standin.SCHEMAS[release][section].items()}, (
            section)


@pytest.mark.parametrize("release", list(STANDIN_RELEASES))
def test_standin_deprecated_keys_and_choices_are_slurmwebs(release):
    defs = STANDIN_RELEASES[release]
    deprecated = {(s, k): (d["deprecated"]["section"], d["deprecated"]["parameter"])
                  for s, keys in defs.items() for k, d in keys.items() if "deprecated" in d}
    assert standin.DEPRECATED[release] == deprecated
    choices = {(s, k): tuple(d["choices"]) for s, keys in defs.items()
               for k, d in keys.items() if "choices" in d}
    assert choices == standin.CHOICES


def test_the_standin_models_5_2_and_6_0():
    assert {r.version for r in standin.RELEASES.values()} == {"5.2.0", "6.0.0"}
    assert standin.SCHEMA is standin.SCHEMAS["6.0"]


@pytest.mark.parametrize("choices", [agentconf.AGENT_CHOICES, standin.CHOICES],
                         ids=["host tool", "stand-in"])
def test_choices_are_slurmwebs(choices):
    theirs = {(s, k): tuple(d["choices"]) for s, keys in DEFS.items()
              for k, d in keys.items() if "choices" in d}
    assert {key: tuple(value) for key, value in choices.items()} == theirs


def test_host_tool_defaults_are_slurmwebs():
    rest = DEFS["slurmrestd"]
    assert rest["uri"]["default"] == agentconf.DEFAULT_URI
    assert rest["auth"]["default"] == agentconf.DEFAULT_AUTH
    assert rest["jwt_mode"]["default"] == agentconf.DEFAULT_JWT_MODE
    assert rest["jwt_user"]["default"] == agentconf.DEFAULT_JWT_USER
    assert rest["jwt_lifespan"]["default"] == agentconf.DEFAULT_JWT_LIFESPAN
    assert rest["jwt_key"]["default"] == agentconf.DEFAULT_JWT_KEY
    assert list(agentconf.AGENT_DEFAULT_VERSIONS) == rest["versions"]["default"]


def test_only_the_cluster_is_required():
    required = [(s, k) for s, keys in DEFS.items() for k, d in keys.items() if d.get("required")]
    assert required == [("service", "cluster")]
