"""agentini: merging the [slurmrestd] settings into Slurm-web's agent.ini."""

from __future__ import annotations

import configparser
import os
import stat

import pytest

from tests import slurmweb_loader
from tests.testbed.standin import slurm_web_agent_standin as standin
from watchdog_daemon.config.agentini import (
    MISSING_CLUSTER_HINT,
    AgentIniMissingError,
    ConfigError,
    IniParseError,
    apply_agent_ini,
    merge_agent_ini,
    merge_agent_ini_unchecked,
)
from watchdog_daemon.config.atomicwrite import WriteError
from watchdog_daemon.exitcodes import ExitCode

URI = "unix:///run/slurmrestd/slurmrestd.socket"
KEY = "/var/lib/slurm-web/slurmrestd.key"
SECTION = f"[slurmrestd]\nuri = {URI}\nauth = jwt\njwt_mode = auto\njwt_key = {KEY}\n"


def merge(text: str, **kw):
    kw.setdefault("uri", URI)
    kw.setdefault("jwt_key", KEY)
    return merge_agent_ini(text, **kw)


def read_like_agent(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=configparser.ExtendedInterpolation())
    parser.read_string(text)
    return parser


def agent_starts_with(text: str, tmp_path) -> bool:
    """Slurm-web's own loader with its own definitions (tests/slurmweb_loader.py): the oracle.
    The stand-in's loader must agree with it on every text asked about here."""
    verdict = slurmweb_loader.agent_starts_with(text, tmp_path)
    ini = tmp_path / "standin.ini"
    ini.write_text(text)
    try:
        standin.load_settings(str(ini))
        standin_starts = True
    except standin.StartupError:
        standin_starts = False
    assert standin_starts == verdict, f"the stand-in and Slurm-web's loader differ on {text!r}"
    return verdict


FIXTURES: dict[str, str] = {
    "minimal": "[service]\ncluster = hpc\n",
    "no_newline": "[service]\ncluster = hpc",
    "crlf": "[service]\r\ncluster = hpc\r\n",
    "section_empty": "[service]\ncluster = hpc\n\n[slurmrestd]\n",
    "compact_style": "[service]\ncluster=hpc\n[slurmrestd]\nuri=unix:///old.socket\n",
    "socket_old": "[service]\ncluster = hpc\n[slurmrestd]\nsocket = /run/slurmrestd/old.socket\n",
    "socket_and_uri": (
        "[service]\ncluster = hpc\n[slurmrestd]\nsocket = /x.socket\nuri = unix:///y.socket\n"
    ),
    "static_mode": (
        "[service]\ncluster = hpc\n\n# restd\n[slurmrestd]\n; static token\nauth = jwt\n"
        "jwt_mode = static\njwt_token = abc.def.ghi\n\n[racksdb]\nenabled = no\n"
    ),
    "already": f"[service]\ncluster = hpc\n\n{SECTION}",
    "upper_keys": "[service]\ncluster = hpc\n[slurmrestd]\nURI = unix:///old\nAuth: jwt\n",
    "multiline": "[service]\ncluster = hpc\n[slurmrestd]\njwt_key = /a\n  /b\nauth = jwt\n",
}


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_idempotent_on_every_fixture(name):
    once = merge(FIXTURES[name])
    twice = merge(once.text)
    assert twice.changed is False
    assert twice.text == once.text


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_result_reads_as_the_agent_expects(name):
    parser = read_like_agent(merge(FIXTURES[name], jwt_user="slurm", jwt_lifespan=600).text)
    got = dict(parser["slurmrestd"])
    for key, value in {
        "uri": URI,
        "auth": "jwt",
        "jwt_mode": "auto",
        "jwt_key": KEY,
        "jwt_user": "slurm",
        "jwt_lifespan": "600",
    }.items():
        assert got[key] == value
    assert "socket" not in parser["slurmrestd"]


def test_section_created_when_missing():
    res = merge("[service]\ncluster = hpc\n")
    assert res.changed
    assert res.text == "[service]\ncluster = hpc\n\n" + SECTION
    assert res.before == []
    assert res.after == [f"uri = {URI}", "auth = jwt", "jwt_mode = auto", f"jwt_key = {KEY}"]


def test_no_trailing_newline():
    assert merge("[service]\ncluster = hpc").text == "[service]\ncluster = hpc\n\n" + SECTION


def test_crlf_kept():
    res = merge(FIXTURES["crlf"])
    assert res.text == "[service]\r\ncluster = hpc\r\n\r\n" + SECTION.replace("\n", "\r\n")


def test_already_merged_unchanged():
    res = merge(FIXTURES["already"])
    assert res.changed is False
    assert res.before == res.after


def test_optional_keys_only_when_given():
    text = merge(FIXTURES["minimal"]).text
    assert "jwt_user" not in text and "jwt_lifespan" not in text
    text = merge(FIXTURES["minimal"], jwt_user="slurm", jwt_lifespan=3600).text
    assert text.endswith("jwt_user = slurm\njwt_lifespan = 3600\n")


def test_existing_optional_keys_kept_when_not_given():
    text = FIXTURES["already"] + "jwt_user = admin\n"
    assert merge(text).changed is False


def test_compact_style_kept_for_replaced_and_added_keys():
    res = merge(FIXTURES["compact_style"])
    assert res.text == (
        f"[service]\ncluster=hpc\n[slurmrestd]\nuri={URI}\nauth=jwt\njwt_mode=auto\njwt_key={KEY}\n"
    )


def test_socket_turned_into_uri_in_place():
    res = merge(FIXTURES["socket_old"])
    assert res.text.startswith(f"[service]\ncluster = hpc\n[slurmrestd]\nuri = {URI}\n")
    assert any("socket" in w for w in res.warnings)
    assert res.before == ["socket = /run/slurmrestd/old.socket"]


def test_socket_removed_when_uri_present():
    res = merge(FIXTURES["socket_and_uri"])
    assert "socket =" not in res.text
    assert f"uri = {URI}\n" in res.text
    assert any("removed the deprecated" in w for w in res.warnings)


def test_static_mode_switched_other_lines_kept():
    res = merge(FIXTURES["static_mode"])
    assert res.text == (
        "[service]\ncluster = hpc\n\n# restd\n[slurmrestd]\n; static token\nauth = jwt\n"
        f"jwt_mode = auto\njwt_token = abc.def.ghi\nuri = {URI}\njwt_key = {KEY}\n\n"
        "[racksdb]\nenabled = no\n"
    )
    assert any("jwt_token" in w for w in res.warnings)
    # the token (a secret) is never shown in before/after
    assert all("abc.def" not in line for line in res.before + res.after)


def test_keys_matched_without_case_spelling_kept():
    res = merge(FIXTURES["upper_keys"])
    assert f"URI = {URI}\n" in res.text
    assert "Auth: jwt\n" in res.text


def test_multiline_value_replaced_whole():
    res = merge(FIXTURES["multiline"])
    assert f"jwt_key = {KEY}\nauth = jwt\n" in res.text
    assert "/b" not in res.text


def test_inline_hash_is_part_of_the_value():
    # configparser has no inline comments: `jwt # x` is not `jwt`, so it is rewritten.
    res = merge(FIXTURES["already"].replace("auth = jwt", "auth = jwt # x"))
    assert res.changed
    assert "auth = jwt\n" in res.text


def test_comments_and_other_sections_untouched():
    text = "# top\n[service]\ncluster = hpc\n; note\n[racksdb]\nenabled = no\n"
    res = merge(text)
    assert res.text.startswith(text)


def test_trailing_whitespace_after_value_kept():
    text = FIXTURES["already"].replace("auth = jwt", "auth = static   ")
    assert "auth = jwt   \n" in merge(text).text


def test_section_last_without_newline():
    res = merge("[service]\ncluster = hpc\n[slurmrestd]\nauth = jwt")
    assert res.text == (
        f"[service]\ncluster = hpc\n[slurmrestd]\nauth = jwt\nuri = {URI}\njwt_mode = auto\n"
        f"jwt_key = {KEY}"
    )


@pytest.mark.parametrize(
    ("text", "lineno", "fragment"),
    [
        # A [DEFAULT] key spills into every section, and the agent defines it in none but one.
        ("[DEFAULT]\ncluster = hpc\n[service]\ninterface = 0.0.0.0\n", 2, "[DEFAULT] key"),
        ("[DEFAULT]\na = 1\n[service]\ncluster = hpc\n", 2, "[DEFAULT] key `a`"),
        ("[service]\ncluster = hpc\nclustr = x\n", 3, "[service] has no setting `clustr`"),
        ("[service]\ncluster = hpc\n[ui]\nhost = x\n", 3, "section [ui]"),
        ("[service]\ncluster = a$b\n", 2, "interpolation"),
        ("[service]\ncluster = hpc\nport = 80a\n", 3, "not a valid int"),
        ("[service]\ncluster = hpc\ndebug = maybe\n", 3, "not a valid bool"),
        ("[service]\ncluster = hpc\n[slurmrestd]\nversions = 0.0.41\nfoo = 1\n", 5,
         "[slurmrestd] has no setting `foo`"),
    ],
)
def test_an_agent_ini_the_agent_refuses_is_refused_with_its_line(text, lineno, fragment,
                                                                   tmp_path):
    assert not agent_starts_with(merge_agent_ini_unchecked(text, uri=URI, jwt_key=KEY).text,
                                 tmp_path)
    with pytest.raises(IniParseError) as err:
        merge(text)
    assert f"line {lineno}: " in err.value.message and fragment in err.value.message
    assert err.value.exit_code == ExitCode.CHANGE_REFUSED


def test_percent_is_plain_text_for_the_agent_and_dollars_are_escaped(tmp_path):
    text = "[service]\ncluster = 100%hpc$$\n"
    res = merge(text, jwt_key="/var/lib/slurm-web/100%.key")
    assert agent_starts_with(res.text, tmp_path)
    assert read_like_agent(res.text)["slurmrestd"]["jwt_key"] == "/var/lib/slurm-web/100%.key"
    assert read_like_agent(res.text)["service"]["cluster"] == "100%hpc$"


def test_missing_key_added_after_rewritten_multiline_option():
    text = "[service]\ncluster = hpc\n[slurmrestd]\nauth = static\n  more\n"
    res = merge(text)
    assert res.text == (
        f"[service]\ncluster = hpc\n[slurmrestd]\nauth = jwt\nuri = {URI}\njwt_mode = auto\n"
        f"jwt_key = {KEY}\n"
    )
    assert merge(res.text).changed is False


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[ui]\nhost = x\n",
        "[service]\ncluster =\n",
        "[service]\ncluster =   \n",
        "[service]\n",
        "[DEFAULT]\ncluster = hpc\n",
    ],
)
def test_missing_cluster_is_config_invalid(text):
    with pytest.raises(ConfigError) as err:
        merge(text)
    assert err.value.exit_code == ExitCode.CONFIG_INVALID
    assert err.value.hint == MISSING_CLUSTER_HINT
    assert "cluster" in err.value.message


@pytest.mark.parametrize(
    ("text", "lineno"),
    [
        ("cluster = hpc\n", 1),
        ("[service]\ncluster = hpc\njunk line\n", 3),
        ("[service]\ncluster = hpc\n[service]\n", 3),
        ("[service]\ncluster = hpc\nCluster = b\n", 3),
        ("[service]\ncluster = hpc\n= x\n", 3),
    ],
)
def test_unparseable_ini_refused_with_line(text, lineno):
    with pytest.raises(IniParseError) as err:
        merge(text)
    assert isinstance(err.value, ConfigError)
    assert err.value.message.startswith(f"line {lineno}:")
    assert err.value.exit_code == ExitCode.CHANGE_REFUSED


def test_continuation_after_comment_line_like_configparser():
    text = "[service]\ncluster = hpc\n# note\n  more\n"
    assert read_like_agent(text)["service"]["cluster"] == "hpc\nmore"
    res = merge(text)
    assert res.text.startswith(text)
    assert read_like_agent(res.text)["service"]["cluster"] == "hpc\nmore"


def test_our_parse_agrees_with_configparser_on_continuations():
    text = "[service]\ncluster = hpc\n\n  more\n[slurmrestd]\nauth = jwt\n"
    merged = merge(text).text
    assert read_like_agent(merged)["service"]["cluster"] == "hpc\n\nmore"


@pytest.mark.parametrize(
    "kw",
    [
        {"uri": "/run/x.socket"},
        {"uri": "unix:///a\nb"},
        {"jwt_key": "relative"},
        {"jwt_key": "/a$b"},
        {"jwt_user": "sl${x}urm"},
        {"jwt_user": "two words"},
        {"jwt_lifespan": 0},
    ],
)
def test_bad_arguments(kw):
    with pytest.raises(ConfigError) as err:
        merge(FIXTURES["minimal"], **kw)
    assert err.value.exit_code == ExitCode.CONFIG_INVALID


# ---------------------------------------------------------------------------------- I/O


def test_apply_keeps_mode_and_owner(tmp_path):
    ini = tmp_path / "agent.ini"
    ini.write_text(FIXTURES["minimal"])
    os.chmod(ini, 0o640)
    st = ini.stat()
    res = apply_agent_ini(str(ini), uri=URI, jwt_key=KEY, dry_run=False)
    assert res.changed and res.file == str(ini)
    st2 = ini.stat()
    assert stat.S_IMODE(st2.st_mode) == 0o640
    assert (st2.st_uid, st2.st_gid) == (st.st_uid, st.st_gid)
    assert ini.read_text() == FIXTURES["minimal"] + "\n" + SECTION


def test_apply_dry_run(tmp_path):
    ini = tmp_path / "agent.ini"
    ini.write_text(FIXTURES["minimal"])
    assert apply_agent_ini(str(ini), uri=URI, jwt_key=KEY, dry_run=True).changed
    assert ini.read_text() == FIXTURES["minimal"]


def test_apply_missing_file_creates_nothing(tmp_path):
    with pytest.raises(AgentIniMissingError) as err:
        apply_agent_ini(str(tmp_path / "agent.ini"), uri=URI, jwt_key=KEY, dry_run=False)
    assert err.value.exit_code == ExitCode.CONFIG_INVALID
    assert "package" in err.value.hint and "cluster" in err.value.hint
    assert list(tmp_path.iterdir()) == []


def test_apply_failure_leaves_file(tmp_path, monkeypatch):
    ini = tmp_path / "agent.ini"
    ini.write_text(FIXTURES["minimal"])
    monkeypatch.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(OSError(5, "EIO")))
    with pytest.raises(WriteError):
        apply_agent_ini(str(ini), uri=URI, jwt_key=KEY, dry_run=False)
    assert ini.read_text() == FIXTURES["minimal"]
    assert [p.name for p in tmp_path.iterdir()] == ["agent.ini"]


def test_apply_missing_cluster_leaves_file(tmp_path):
    ini = tmp_path / "agent.ini"
    ini.write_text("[ui]\n")
    with pytest.raises(ConfigError):
        apply_agent_ini(str(ini), uri=URI, jwt_key=KEY, dry_run=False)
    assert ini.read_text() == "[ui]\n"


# ------------------------------------------------------------------- property: random texts

# Lines each section defines (valid for Slurm-web 6.0), what may sit anywhere, and faults. Most
# texts are ones the agent starts with, so that most cases reach the merge's assertions; the
# faults (and configparser's own refusals) check that the merge refuses what the agent does.
_SECTION_LINES = {
    "slurmrestd": ["uri = unix:///old.socket", "socket = /run/old.socket", "auth=jwt",
                   "jwt_mode: static", "versions = 0.0.41", "jwt_key = /old.key",
                   "jwt_user = slurm", "jwt_lifespan = 60", "version = 0.0.41",
                   "versions = 0.0.42\n  0.0.41"],
    "racksdb": ["enabled = no", "db = /var/lib/racksdb", "tags = compute"],
    "service": ["interface = localhost", "port = 5012", "debug = yes"],
    "cache": ["enabled = no", "jobs = 30"],
}
_ANYWHERE = ["# comment", "; comment", ""]
_FAULTS = ["x = 1", "[DEFAULT]\nenabled = no", "enabled = maybe", "port = 80a",
           "jwt_key = /a\n  continued", "[ui]", "auth = munge", "jwt_lifespan = soon"]


def random_agent_ini(seed: int) -> str:
    import random

    rng = random.Random(seed)
    lines = ["[service]", "cluster = hpc"]
    # Each section and each key once, as configparser requires (a repeat is one of its own
    # refusals, which the faults already cover).
    others = sorted(set(_SECTION_LINES) - {"service"})
    for section in ["service", *rng.sample(others, rng.randint(0, 3))]:
        if section != "service":
            lines.append(f"[{section}]")
        keys: set[str] = {"cluster"}
        for _ in range(rng.randint(0, 4)):
            line = rng.choice(_SECTION_LINES[section] + _ANYWHERE)
            key = line.replace(":", "=").split("=")[0].strip()
            if key and key in keys:
                continue
            keys.add(key)
            lines.append(line)
    if rng.random() < 0.2:
        lines.insert(rng.randint(2, len(lines)), rng.choice(_FAULTS))
    return "\n".join(lines) + "\n"


SEEDS = range(400)


def _reaches_the_assertions(text: str, tmp_path) -> bool:
    try:
        read_like_agent(text)
    except configparser.Error:
        return False
    return agent_starts_with(merge_agent_ini_unchecked(text, uri=URI, jwt_key=KEY).text,
                             tmp_path)


def test_most_random_texts_reach_the_property_assertions(tmp_path):
    reached = sum(_reaches_the_assertions(random_agent_ini(seed), tmp_path) for seed in SEEDS)
    assert reached >= 0.7 * len(SEEDS), f"only {reached} of {len(SEEDS)} cases reach them"


@pytest.mark.parametrize("seed", SEEDS)
def test_property_merge_is_idempotent_and_agent_reads_it(seed, tmp_path):
    text = random_agent_ini(seed)
    try:
        read_like_agent(text)
    except configparser.Error:
        with pytest.raises(IniParseError):
            merge(text)
        return
    # The merge refuses exactly what the agent (its stand-in's independent reading) refuses.
    candidate = merge_agent_ini_unchecked(text, uri=URI, jwt_key=KEY).text
    if not agent_starts_with(candidate, tmp_path):
        with pytest.raises(IniParseError):
            merge(text)
        return
    once = merge(text)
    assert once.text == candidate
    again = merge(once.text)
    assert again.changed is False and again.text == once.text
    parsed = read_like_agent(once.text)
    assert parsed["slurmrestd"]["uri"] == URI
    assert parsed["slurmrestd"]["jwt_mode"] == "auto"
    original = read_like_agent(text)
    assert dict(parsed["service"]) == dict(original["service"])
    assert dict(parsed.defaults()) == dict(original.defaults())
    if parsed.has_section("racksdb"):
        assert dict(parsed["racksdb"]) == dict(original["racksdb"])
