"""The agent.ini definitions written here, held against Slurm-web's own.

`tests/fixtures/slurmweb-agent-definitions.json` is the settings table of Slurm-web's
`conf/vendor/agent.yml` (types, defaults, choices, required, deprecated; no docs) at the tags it
names, read from rackslab/Slurm-web. The host tool's `AGENT_SCHEMA` and the stand-in's `SCHEMA`
model the 6.0.0 agent: each must say exactly what that table says, so that neither can drift
from the real agent by agreeing with the other.
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


def test_standin_schema_has_slurmwebs_sections_keys_types_and_defaults():
    types = {s: {k: d["type"] for k, d in keys.items()} for s, keys in DEFS.items()}
    assert types == {s: {k: t for k, (t, _d) in keys.items()}
                     for s, keys in standin.SCHEMA.items()}
    # The defaults of what it acts on (where it listens, how it reaches slurmrestd, its own
    # key) are Slurm-web's; the sections it only validates keep None.
    for section in ("service", "slurmrestd", "jwt"):
        theirs = {k: d.get("default") for k, d in DEFS[section].items()}
        assert theirs == {k: d for k, (_t, d) in standin.SCHEMA[section].items()}, section


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
