"""Which Slurm-web release an agent host runs, and what it asks of slurmrestd (issue 19).

The vendor definitions used here are RENDERED from tests/fixtures/slurmweb-agent-definitions.json
(Slurm-web's own table per tag) in RFL's YAML layout, not copied from Slurm-web; the reader was
also run by hand on the three real files (v4.2.0, v5.2.0, v6.0.0) and gave that table exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from watchdog_daemon.config import agentconf, slurmweb
from watchdog_daemon.config.agentini import IniParseError, merge_agent_ini
from watchdog_daemon.config.preflight import ERROR, slurmweb_finding

TABLE = json.loads((Path(__file__).resolve().parents[1] / "fixtures" /
                    "slurmweb-agent-definitions.json").read_text())
RELEASES = TABLE["releases"]


def render(sections: dict) -> str:
    """A vendor agent.yml in RFL's layout (with doc blocks, as the real one has)."""
    out = ["---", "# rendered for the tests"]
    for section, keys in sections.items():
        out.append(f"{section}:")
        for key, props in keys.items():
            out.append(f"  {key}:")
            for prop, value in props.items():
                if isinstance(value, list):
                    out.append(f"    {prop}:")
                    out.extend(f"    - {item}" for item in value)
                elif isinstance(value, dict):
                    out.append(f"    {prop}:")
                    out.extend(f"      {k}: {v}" for k, v in value.items())
                elif isinstance(value, bool):
                    out.append(f"    {prop}: {'true' if value else 'false'}")
                elif isinstance(value, str) and value.count(".") == 2:
                    out.append(f"    {prop}: '{value}'")
                else:
                    out.append(f"    {prop}: {value}")
            out.append("    doc: |")
            out.append("      Some text: with a colon, and")
            out.append("      - a dash line inside the block.")
        out.append("")
    return "\n".join(out) + "\n"


def test_documentation_in_any_yaml_form_is_skipped():
    text = ("slurmrestd:\n  version:\n    type: str\n    default: '0.0.41'\n"
            "    doc: Slurm REST API version, a plain scalar\n      that goes on: here\n"
            "      - and here\n    ex: 0.0.41\n  uri:\n    type: uri\n    doc: >\n"
            "      folded: text\n")
    assert slurmweb.parse_definitions(text) == {
        "slurmrestd": {"version": {"type": "str", "default": "0.0.41"}, "uri": {"type": "uri"}}}


def release_of(tag: str, package: tuple[str, str] | None = None) -> slurmweb.AgentRelease:
    return slurmweb.decide(package, render(RELEASES[tag]["sections"]))


@pytest.mark.parametrize("tag", sorted(RELEASES))
def test_the_reader_gives_slurmwebs_table_back(tag):
    assert slurmweb.parse_definitions(render(RELEASES[tag]["sections"])) == \
        RELEASES[tag]["sections"]


@pytest.mark.parametrize(("tag", "series", "defaults"), [
    ("4.2.0", 4, ("0.0.40",)),
    ("5.2.0", 5, ("0.0.41",)),
    ("6.0.0", 6, ("0.0.44", "0.0.43", "0.0.42", "0.0.41")),
])
def test_the_definitions_alone_name_the_series_and_its_api_choice(tag, series, defaults):
    release = release_of(tag)
    assert (release.series, release.source, release.version) == (series, "vendor definitions", "")
    assert release.default_api_versions() == defaults
    assert release.name == f"Slurm-web {series}.x"


def test_the_package_names_the_release_and_the_definitions_say_what_it_does():
    release = release_of("5.2.0", ("dpkg", "5.2.0-1"))
    assert (release.name, release.source, release.discovers) == ("Slurm-web 5.2.0", "dpkg", False)
    # agent.ini's own `version` wins over the default; 5.x has no `versions`.
    assert release.api_versions("0.0.42", None) == ("0.0.42",)
    assert release.api_versions(None, None) == ("0.0.41",)
    six = release_of("6.0.0", ("rpm", "6.0.0-1.el9"))
    # 6.x ignores the deprecated `version`, and discovers among `versions`.
    assert six.api_versions("0.0.41", None) == ("0.0.44", "0.0.43", "0.0.42", "0.0.41")
    assert six.api_versions(None, ("0.0.42",)) == ("0.0.42",)


def test_built_in_tables_stand_in_for_missing_definitions():
    five = slurmweb.decide(None, None, declared="5.2")
    assert (five.series, five.source) == (5, "host data")
    assert five.default_api_versions() == ("0.0.41",)
    theirs = {s: {k: d["type"] for k, d in keys.items()}
              for s, keys in RELEASES["5.2.0"]["sections"].items()}
    assert five.schema() == theirs
    four = {s: {k: d["type"] for k, d in keys.items()}
            for s, keys in RELEASES["4.2.0"]["sections"].items()}
    assert slurmweb.builtin_schema(4) == four
    assert slurmweb.decide(None, None, declared="4.2").default_api_versions() == ("0.0.40",)


@pytest.mark.parametrize(("package", "text", "declared", "says"), [
    (None, None, None, "no Slurm-web agent found on this host"),
    (("dpkg", "6.0.0-1"), None, "5.2", "host data says slurmweb_release = '5.2'"),
    (("dpkg", "3.1.0-1"), None, None, "is not a Slurm-web release this tool knows"),
    (("dpkg", "6.0.0-1"), "5.2.0", None, "is Slurm-web 5.x's, but dpkg says 6.0.0-1"),
    (None, "garbage", None, "cannot be read as Slurm-web's vendor definitions"),
])
def test_what_cannot_be_known_or_contradicts_itself_is_a_clear_error(package, text, declared,
                                                                    says):
    definitions = render(RELEASES[text]["sections"]) if text in RELEASES else text
    with pytest.raises(slurmweb.ReleaseError) as err:
        slurmweb.decide(package, definitions, declared)
    assert says in err.value.message
    assert err.value.hint


def test_a_package_that_agrees_with_host_data_is_fine_and_is_the_name():
    release = slurmweb.decide(("dpkg", "5.2.0-1"), None, declared="5.2.1")
    assert release.version == "5.2.0-1" and release.source == "dpkg"


@pytest.mark.parametrize(("output", "version"), [
    ("ii |5.2.0-1", "5.2.0-1"),
    ("ii |1:6.0.0-2", "1:6.0.0-2"),
    ("rc |5.2.0-1", None),  # removed, config files left: not installed
    ("", None),
    ("ii |", None),
])
def test_the_package_managers_answer(output, version):
    assert slurmweb.installed_version(output) == version


# ---- the pairs: the table of docs/releases.md -------------------------------------------------

@pytest.mark.parametrize(("series", "slurm", "ok"), [
    (4, (23, 11, 0), True), (4, (25, 5, 0), True), (4, (25, 11, 0), False),
    (5, (23, 11, 0), False), (5, (24, 5, 0), True), (5, (25, 11, 0), True),
    (5, (26, 5, 5), False),
    (6, (24, 5, 0), True), (6, (26, 5, 5), True), (6, (23, 11, 0), False),
    (6, (22, 5, 8), False),
])
def test_which_agent_works_with_which_slurm(series, slurm, ok):
    release = slurmweb.AgentRelease(series)
    assert slurmweb.pairing(release, release.default_api_versions(), slurm).ok is ok


def test_a_five_two_agent_on_slurm_26_05_is_refused_naming_both_and_the_remedy():
    release = release_of("5.2.0", ("dpkg", "5.2.0-1"))
    verdict = slurmweb.pairing(release, release.default_api_versions(), (26, 5, 5))
    assert not verdict.ok
    assert verdict.message == ("Slurm-web 5.2.0 uses REST API 0.0.41 only; Slurm 26.05 serves "
                               "0.0.42 to 0.0.45: the agent cannot work with it")
    assert verdict.hint.startswith("install Slurm-web 6.x; run it with Slurm 24.05 to 25.11")


def test_six_zero_on_26_05_uses_the_first_version_it_serves():
    release = release_of("6.0.0")
    verdict = slurmweb.pairing(release, release.default_api_versions(), (26, 5, 5))
    assert verdict.ok and verdict.api_version == "0.0.44"


def test_an_unknown_slurm_release_is_left_to_the_check():
    release = release_of("5.2.0")
    assert slurmweb.pairing(release, ("0.0.41",), (27, 5, 0)).ok
    assert slurmweb.pairing(release, ("0.0.41",), None).ok


def test_the_preflight_finding():
    five = release_of("5.2.0", ("dpkg", "5.2.0-1"))
    finding = slurmweb_finding(five, None, ("0.0.41",), "slurm 26.05.5")
    assert finding is not None and finding.level == ERROR
    assert finding.message.endswith("Nothing was changed") and "Slurm-web 5.2.0" in finding.message
    assert slurmweb_finding(five, None, ("0.0.41",), "slurm 24.11.5") is None
    assert slurmweb_finding(five, None, ("0.0.41",), "slurm 26.05.5", allow_unsupported=True) \
        is None
    missing = slurmweb.ReleaseError("no Slurm-web agent found on this host", "install it")
    finding = slurmweb_finding(None, missing, (), "slurm 24.11.5")
    assert finding is not None and finding.message == "no Slurm-web agent found on this host"


# ---- agent.ini per release ---------------------------------------------------------------------

SIX_ONLY = ("[service]\ncluster = hpc\n[slurmrestd]\nversions =\n  0.0.42\n[cache]\n"
            "associations = 60\n")


def test_keys_six_zero_added_are_refused_by_older_releases_only():
    assert agentconf.agent_ini_problems(SIX_ONLY, release=release_of("6.0.0")) == []
    for tag in ("4.2.0", "5.2.0"):
        problems = agentconf.agent_ini_problems(SIX_ONLY, release=release_of(tag))
        assert [(p.section, p.key) for p in problems] == [("slurmrestd", "versions"),
                                                          ("cache", "associations")], tag
        assert "Slurm-web" in problems[0].detail


def test_the_merge_refuses_what_the_installed_release_refuses():
    five = release_of("5.2.0", ("dpkg", "5.2.0-1"))
    with pytest.raises(IniParseError) as err:
        merge_agent_ini(SIX_ONLY, uri="unix:///run/slurmrestd/slurmrestd.socket",
                        jwt_key="/var/lib/slurm-web/slurmrestd.key", release=five)
    assert "Slurm-web 5.2.0 would refuse to start" in err.value.args[0]
    done = merge_agent_ini("[service]\ncluster = hpc\n",
                           uri="unix:///run/slurmrestd/slurmrestd.socket",
                           jwt_key="/var/lib/slurm-web/slurmrestd.key", release=five)
    assert agentconf.agent_ini_problems(done.text, release=five) == []


@pytest.mark.parametrize("tag", sorted(RELEASES))
def test_uri_wins_over_socket_when_both_are_set_in_every_release(tag):
    """Measured with RFL.settings 1.4 to 1.9 on each tag's definitions: the deprecated `socket`
    is ignored when `uri` is set, and stands for it alone."""
    release = release_of(tag)
    both = ("[service]\ncluster = hpc\n[slurmrestd]\nuri = unix:///run/from-uri.socket\n"
            "socket = /run/from-socket.socket\n")
    assert agentconf.parse_agent_ini(both, release=release).uri == "unix:///run/from-uri.socket"
    alone = "[service]\ncluster = hpc\n[slurmrestd]\nsocket = /run/from-socket.socket\n"
    assert agentconf.parse_agent_ini(alone, release=release).uri == \
        "unix:///run/from-socket.socket"


def test_settings_read_for_a_release_ask_for_its_versions():
    text = "[service]\ncluster = hpc\n[slurmrestd]\nversion = 0.0.42\n"
    assert agentconf.parse_agent_ini(text, release=release_of("5.2.0")).api_versions == \
        ("0.0.42",)
    six = agentconf.parse_agent_ini(text, release=release_of("6.0.0"))
    assert six.api_versions == ("0.0.44", "0.0.43", "0.0.42", "0.0.41")
    assert not six.api_versions_from_agent_ini
