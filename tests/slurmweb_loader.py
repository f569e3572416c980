"""Slurm-web's own verdict on an agent.ini: its settings loader with its own definitions.

Slurm-web's agent loads agent.ini with RFL.settings (`RuntimeSettings.yaml_definition(agent.yml)`
then `override_ini(agent.ini)`, Slurm-web 6.0 `slurmweb/apps/__init__.py`); anything that
raises there stops the agent at start. RFL.settings is on PyPI (a test dependency); the
definitions are the table of Slurm-web's `conf/vendor/agent.yml` committed in
`tests/fixtures/slurmweb-agent-definitions.json`, written back as the YAML RFL reads. Neither is
code of ours: this is the oracle the merge and the stand-in are both held against.
"""

from __future__ import annotations

import functools
import json
import tempfile
import warnings
from pathlib import Path

import yaml
from rfl.settings import RuntimeSettings

TABLE = Path(__file__).resolve().parent / "fixtures" / "slurmweb-agent-definitions.json"


@functools.cache
def definitions_file(release: str = "6.0.0") -> Path:
    sections = json.loads(TABLE.read_text())["releases"][release]["sections"]
    # RFL requires a doc on every parameter; the table leaves docs out.
    data = {s: {k: {**d, "doc": f"[{s}] {k}"} for k, d in keys.items()}
            for s, keys in sections.items()}
    path = Path(tempfile.mkdtemp(prefix="slurmweb-defs-")) / f"agent-{release}.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def load(text: str, tmp_dir: Path, release: str = "6.0.0") -> RuntimeSettings:
    """The settings the agent would run with; raises whatever stops it at start."""
    ini = tmp_dir / "agent-oracle.ini"
    ini.write_text(text)
    settings = RuntimeSettings.yaml_definition(definitions_file(release))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # a deprecated key is still loaded
        settings.override_ini(ini)
    return settings


def agent_starts_with(text: str, tmp_dir: Path, release: str = "6.0.0") -> bool:
    try:
        load(text, tmp_dir, release)
    except Exception:
        return False
    return True
