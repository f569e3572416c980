"""slurmconf: merging AuthAltTypes / AuthAltParameters into slurm.conf and slurmdbd.conf."""

from __future__ import annotations

import os
import stat

import pytest

from watchdog_daemon.config import authalt
from watchdog_daemon.config.atomicwrite import FileMissingError, WriteError
from watchdog_daemon.config.authalt import (
    ADDED_COMMENT,
    ConflictError,
    InvalidArgumentError,
    merge_authalt,
)
from watchdog_daemon.config.slurmconf import apply_merge
from watchdog_daemon.config.slurmparse import ConfigParseError
from watchdog_daemon.exitcodes import ExitCode

KEY = "/var/spool/slurm/jwt_hs256.key"
BLOCK = f"{ADDED_COMMENT}\nAuthAltTypes=auth/jwt\nAuthAltParameters=jwt_key={KEY}\n"


def merge(text: str, **kw):
    return merge_authalt(text, KEY, **kw)


# ----------------------------------------------------------------------------- fixtures

FIXTURES: dict[str, str] = {
    "empty": "",
    "only_comment": "# slurm.conf\n",
    "plain": "ClusterName=hpc\nSlurmctldHost=ctl\n",
    "no_trailing_newline": "ClusterName=hpc\nSlurmctldHost=ctl",
    "crlf": "ClusterName=hpc\r\nSlurmctldHost=ctl\r\n",
    "already": f"ClusterName=hpc\nAuthAltTypes=auth/jwt\nAuthAltParameters=jwt_key={KEY}\n",
    "other_type": "AuthAltTypes=auth/foo\nAuthAltParameters=jwt_key=/old.key\n",
    "params_kept": (
        "AuthAltTypes=auth/jwt\n"
        "AuthAltParameters=disable_token_creation,max_token_lifespan=3600,jwt_key=/old.key\n"
    ),
    "lowercase": "authalttypes=auth/foo\nauthaltparameters=jwks=/etc/jwks.json\n",
    "inline_comment": "AuthAltTypes=auth/foo # keep me\nClusterName=hpc\n",
    "commented_out": "#AuthAltTypes=auth/jwt\n# AuthAltParameters=jwt_key=/x\nClusterName=hpc\n",
    "spacing": "  AuthAltTypes =\tauth/foo  \n\tAuthAltParameters = jwt_key=/old  # c\n",
    "quoted": 'AuthAltParameters="disable_token_creation"\n',
    "only_types": "ClusterName=hpc\nAuthAltTypes=auth/jwt\nNodeName=n1 CPUs=2\n",
    "only_params": "AuthAltParameters=max_token_lifespan=60\nPartitionName=all Nodes=ALL\n",
    "dup_same": "AuthAltTypes=auth/jwt\nClusterName=hpc\nAuthAltTypes=auth/jwt\n",
    "nodes": "NodeName=n[1-4] CPUs=4 State=UNKNOWN\nPartitionName=p Nodes=ALL Default=YES\n",
    "slurmdbd": "DbdHost=db\nStoragePass=s3cr3t\nStorageUser=slurm\n",
    "trailing_blank": "ClusterName=hpc\n\n",
    "crlf_no_final": "ClusterName=hpc\r\nAuthAltTypes=auth/foo",
}


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_idempotent_on_every_fixture(name):
    once = merge(FIXTURES[name])
    twice = merge(once.text)
    assert twice.text == once.text
    assert twice.changed is False
    # and the merged text always holds exactly one of each line
    lowered = [ln.strip().lower() for ln in once.text.splitlines()]
    assert sum(ln.startswith("authalttypes") for ln in lowered) == 1
    assert sum(ln.startswith("authaltparameters") for ln in lowered) == 1


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_other_lines_untouched(name):
    """Every line that is not an AuthAlt* line survives byte for byte and in order."""
    text = FIXTURES[name]
    out = merge(text).text
    kept = [ln for ln in text.splitlines() if "authalt" not in ln.lower()]
    got = [ln for ln in out.splitlines() if "authalt" not in ln.lower() and ln != ADDED_COMMENT]
    assert [ln for ln in got if ln] == [ln for ln in kept if ln]


# ------------------------------------------------------------------------------ basics


def test_absent_appends_block_after_blank_line():
    res = merge("ClusterName=hpc\n")
    assert res.changed
    assert res.text == "ClusterName=hpc\n\n" + BLOCK
    assert res.before == []
    assert res.after == ["AuthAltTypes=auth/jwt", f"AuthAltParameters=jwt_key={KEY}"]


def test_empty_file_gets_block_without_leading_blank():
    assert merge("").text == BLOCK


def test_trailing_blank_line_not_doubled():
    assert merge("ClusterName=hpc\n\n").text == "ClusterName=hpc\n\n" + BLOCK


def test_no_trailing_newline_gets_one_before_block():
    assert merge("ClusterName=hpc").text == "ClusterName=hpc\n\n" + BLOCK


def test_already_merged_is_unchanged():
    text = FIXTURES["already"]
    res = merge(text)
    assert res.changed is False
    assert res.text == text
    assert res.before == res.after == ["AuthAltTypes=auth/jwt", f"AuthAltParameters=jwt_key={KEY}"]


def test_other_auth_type_kept():
    res = merge(FIXTURES["other_type"])
    assert res.text == f"AuthAltTypes=auth/foo,auth/jwt\nAuthAltParameters=jwt_key={KEY}\n"


def test_existing_parameters_kept_and_old_key_replaced_in_place():
    res = merge(FIXTURES["params_kept"])
    assert res.text == (
        "AuthAltTypes=auth/jwt\n"
        f"AuthAltParameters=disable_token_creation,max_token_lifespan=3600,jwt_key={KEY}\n"
    )
    assert res.before[1].endswith("jwt_key=/old.key")


def test_jwt_key_added_after_other_parameters():
    res = merge("AuthAltTypes=auth/jwt\nAuthAltParameters=disable_token_creation\n")
    assert f"AuthAltParameters=disable_token_creation,jwt_key={KEY}\n" in res.text


def test_duplicate_jwt_key_items_collapse_to_one():
    res = merge("AuthAltTypes=auth/jwt\nAuthAltParameters=jwt_key=/a,jwks=/j,JWT_KEY=/b\n")
    assert f"AuthAltParameters=jwt_key={KEY},jwks=/j\n" in res.text


def test_case_insensitive_keys_keep_spelling():
    res = merge(FIXTURES["lowercase"])
    assert res.text == (
        f"authalttypes=auth/foo,auth/jwt\nauthaltparameters=jwks=/etc/jwks.json,jwt_key={KEY}\n"
    )


def test_type_matched_without_case():
    text = f"AuthAltTypes=Auth/JWT\nAuthAltParameters=jwt_key={KEY}\n"
    assert merge(text).changed is False


def test_inline_comment_kept():
    res = merge(FIXTURES["inline_comment"])
    # missing parameters go right after the existing sibling line
    assert res.text == (
        f"AuthAltTypes=auth/foo,auth/jwt # keep me\nAuthAltParameters=jwt_key={KEY}\n"
        "ClusterName=hpc\n"
    )


def test_commented_out_settings_are_not_settings():
    res = merge(FIXTURES["commented_out"])
    assert res.text == FIXTURES["commented_out"] + "\n" + BLOCK


def test_odd_spacing_and_tabs_kept():
    res = merge(FIXTURES["spacing"])
    assert res.text == (
        f"  AuthAltTypes =\tauth/foo,auth/jwt  \n\tAuthAltParameters = jwt_key={KEY}  # c\n"
    )


def test_quoted_value_stays_quoted():
    res = merge(FIXTURES["quoted"])
    assert res.text.startswith(f'AuthAltParameters="disable_token_creation,jwt_key={KEY}"\n')
    assert res.text.endswith("AuthAltTypes=auth/jwt\n")


def test_empty_quoted_types():
    res = merge(f'AuthAltTypes=""\nAuthAltParameters=jwt_key={KEY}\n')
    assert res.text.startswith('AuthAltTypes="auth/jwt"\n')


def test_crlf_kept_everywhere():
    res = merge(FIXTURES["crlf"])
    assert res.text == (
        "ClusterName=hpc\r\nSlurmctldHost=ctl\r\n\r\n" + BLOCK.replace("\n", "\r\n")
    )


def test_missing_sibling_inserted_after_last_line_without_newline():
    res = merge("ClusterName=hpc\r\nAuthAltTypes=auth/foo")
    assert res.text == (
        f"ClusterName=hpc\r\nAuthAltTypes=auth/foo,auth/jwt\r\nAuthAltParameters=jwt_key={KEY}"
    )


def test_only_types_present_params_inserted_next_to_it():
    res = merge(FIXTURES["only_types"])
    assert res.text == (
        "ClusterName=hpc\nAuthAltTypes=auth/jwt\n"
        f"AuthAltParameters=jwt_key={KEY}\nNodeName=n1 CPUs=2\n"
    )


def test_only_params_present_types_inserted_next_to_it():
    res = merge(FIXTURES["only_params"])
    assert res.text == (
        f"AuthAltParameters=max_token_lifespan=60,jwt_key={KEY}\n"
        "AuthAltTypes=auth/jwt\nPartitionName=all Nodes=ALL\n"
    )


def test_before_after_never_contain_other_lines():
    res = merge(FIXTURES["slurmdbd"])
    assert all("StoragePass" not in line for line in res.before + res.after)
    assert "s3cr3t" not in repr(res.to_dict())


def test_escaped_hash_is_not_a_comment():
    # `\#` is a literal '#'; the value continues and the line stays untouched.
    text = "Foo=a\\#b\n"
    assert merge(text).text.startswith(text)


def test_continuation_lines_of_other_settings_untouched():
    text = "NodeName=n1 \\\n  CPUs=4\n"
    assert merge(text).text.startswith(text)


# -------------------------------------------------------------------------- duplicates


def test_identical_duplicate_removed_keeping_last():
    res = merge(FIXTURES["dup_same"])
    assert res.text.startswith("ClusterName=hpc\nAuthAltTypes=auth/jwt\n")
    assert any("duplicate" in w for w in res.warnings)


def test_identical_duplicate_with_comment_refused():
    with pytest.raises(ConflictError):
        merge("AuthAltTypes=auth/jwt # first\nAuthAltTypes=auth/jwt\n")


def test_conflicting_duplicates_refused():
    with pytest.raises(ConflictError) as err:
        merge("AuthAltTypes=auth/foo\nClusterName=x\nAuthAltTypes=auth/bar\n")
    assert "lines 1 and 3" in err.value.message
    assert err.value.exit_code == ExitCode.CHANGE_REFUSED
    assert err.value.hint


def test_duplicate_differing_only_in_case_of_key_is_duplicate():
    res = merge(f"AUTHALTTYPES=auth/jwt\nAuthAltTypes=auth/jwt\nAuthAltParameters=jwt_key={KEY}\n")
    assert res.text == f"AuthAltTypes=auth/jwt\nAuthAltParameters=jwt_key={KEY}\n"


# ---------------------------------------------------------------------- parse failures


@pytest.mark.parametrize(
    ("text", "lineno", "words"),
    [
        ("ClusterName=hpc\nAuthAltTypes\n", 2, "no `=value`"),
        ("AuthAltTypes=\n", 1, "no `=value`"),
        ('AuthAltParameters="jwt_key=/x\n', 1, "unbalanced quote"),
        ("AuthAltTypes=auth/jwt extra\n", 1, "text after"),
        ("AuthAltTypes=auth/jwt Other=1\n", 1, "text after"),
        ("AuthAltTypes+=auth/jwt\n", 1, "not supported"),
        ("ClusterName=hpc\n\nthis is junk\n", 3, "cannot parse"),
        ("StoragePass=two words\n", 1, "cannot parse"),
        ("Include\n", 1, "cannot parse"),
        ("Include a b\n", 1, "after the Include"),
    ],
)
def test_unparseable_lines_refused_with_line_number(text, lineno, words):
    with pytest.raises(ConfigParseError) as err:
        merge(text)
    assert f"line {lineno}" in err.value.message
    assert words in err.value.message
    assert err.value.hint


def test_parse_error_never_echoes_values():
    with pytest.raises(ConfigParseError) as err:
        merge("StoragePass=hunter2 oops\n")
    assert "hunter2" not in err.value.message + err.value.hint


def test_continued_authalt_line_needing_change_refused():
    with pytest.raises(ConfigParseError) as err:
        merge("AuthAltTypes=\\\nauth/foo\n")
    assert "backslash" in err.value.message


def test_continued_authalt_line_already_right_accepted():
    text = f"AuthAltTypes=\\\nauth/jwt\nAuthAltParameters=jwt_key={KEY}\n"
    assert merge(text).changed is False


@pytest.mark.parametrize("bad", ["relative.key", "/with space", "/a,b", "/a#b", "", '/a"b'])
def test_bad_key_path_rejected(bad):
    with pytest.raises(InvalidArgumentError) as err:
        merge_authalt("", bad)
    assert err.value.exit_code == ExitCode.CONFIG_INVALID


# ---------------------------------------------------------------------------- includes


def test_include_not_followed_warns():
    res = merge("Include extra.conf\n")
    assert any("not followed" in w for w in res.warnings)


def test_include_with_conflicting_setting_refused():
    inc = {"/etc/slurm/jwt.conf": "AuthAltTypes=auth/foo\n"}
    with pytest.raises(ConflictError) as err:
        merge("Include jwt.conf\n", included=inc, path="/etc/slurm/slurm.conf")
    assert "/etc/slurm/jwt.conf line 1" in err.value.message
    assert "move" in err.value.hint


def test_include_with_identical_settings_needs_no_copy():
    inc = {"/etc/slurm/jwt.conf": f"AuthAltTypes=auth/jwt\nAuthAltParameters=jwt_key={KEY}\n"}
    text = "ClusterName=hpc\nInclude /etc/slurm/jwt.conf\n"
    res = merge(text, included=inc, path="/etc/slurm/slurm.conf")
    assert res.changed is False
    assert res.text == text


def test_include_setting_one_key_main_gets_the_other():
    inc = {"/etc/slurm/jwt.conf": "AuthAltTypes=auth/jwt\n"}
    res = merge("Include jwt.conf\n", included=inc, path="/etc/slurm/slurm.conf")
    assert res.text == (f"Include jwt.conf\n\n{ADDED_COMMENT}\nAuthAltParameters=jwt_key={KEY}\n")


def test_include_and_main_with_same_final_value_ok():
    inc = {"/etc/slurm/jwt.conf": "AuthAltTypes=auth/jwt\n"}
    text = f"Include jwt.conf\nAuthAltTypes=auth/jwt\nAuthAltParameters=jwt_key={KEY}\n"
    res = merge(text, included=inc, path="/etc/slurm/slurm.conf")
    assert res.changed is False
    assert any("also set" in w for w in res.warnings)


def test_include_and_main_different_values_refused():
    inc = {"/etc/slurm/jwt.conf": f"AuthAltParameters=jwt_key={KEY}\n"}
    text = "Include jwt.conf\nAuthAltParameters=disable_token_creation\n"
    with pytest.raises(ConflictError):
        merge(text, included=inc, path="/etc/slurm/slurm.conf")


def test_include_glob_and_relative_path():
    inc = {
        "/etc/slurm/conf.d/10-a.conf": "SchedulerType=sched/backfill\n",
        "/etc/slurm/conf.d/20-b.conf": "AuthAltParameters=jwt_key=/old\n",
        "/etc/slurm/other/30-c.conf": "AuthAltTypes=auth/foo\n",
    }
    with pytest.raises(ConflictError) as err:
        merge("include conf.d/*.conf\n", included=inc, path="/etc/slurm/slurm.conf")
    assert "20-b.conf" in err.value.message


def test_include_glob_does_not_cross_directories():
    inc = {"/etc/slurm/conf.d/sub/x.conf": "AuthAltTypes=auth/foo\n"}
    res = merge("Include conf.d/*.conf\n", included=inc, path="/etc/slurm/slurm.conf")
    assert res.changed
    assert any("matches no readable file" in w for w in res.warnings)


def test_nested_include_relative_to_the_top_file():
    """Measured on 24.11.5: `Include b.conf` inside conf.d/a.conf reads <slurm.conf dir>/b.conf."""
    inc = {
        "/etc/slurm/a/one.conf": "Include two.conf\n",
        "/etc/slurm/a/two.conf": "AuthAltTypes=auth/foo\n",  # not what Slurm reads
        "/etc/slurm/two.conf": "AuthAltTypes=auth/bar\n",
    }
    with pytest.raises(ConflictError) as err:
        merge("Include a/one.conf\n", included=inc, path="/etc/slurm/slurm.conf")
    assert "/etc/slurm/two.conf" in err.value.message


def test_indented_include_refused_like_slurm():
    with pytest.raises(ConfigParseError) as err:
        merge("  Include x.conf\n")
    assert "indented Include" in err.value.message


def test_include_glob_warns_that_slurm_rejects_it():
    inc = {"/etc/slurm/conf.d/a.conf": "SchedulerType=sched/backfill\n"}
    res = merge("Include conf.d/*.conf\n", included=inc, path="/etc/slurm/slurm.conf")
    assert any("glob" in w for w in res.warnings)


def test_include_brackets_are_literal():
    inc = {
        "/etc/slurm/[ab].conf": "AuthAltTypes=auth/foo\n",
        "/etc/slurm/a.conf": "SchedulerType=sched/backfill\n",
    }
    with pytest.raises(ConflictError) as err:
        merge("Include [ab].conf\n", included=inc, path="/etc/slurm/slurm.conf")
    assert "[ab].conf" in err.value.message


def test_include_cluster_name_modifier():
    inc = {"/etc/slurm/hpc.conf": "AuthAltTypes=auth/foo\n"}
    with pytest.raises(ConflictError):
        merge("ClusterName=HPC\nInclude %c.conf\n", included=inc, path="/etc/slurm/slurm.conf")


def test_include_cluster_name_modifier_unresolved_warns():
    res = merge("Include %c.conf\n", included={}, path="/etc/slurm/slurm.conf")
    assert any("%c" in w for w in res.warnings)


def test_include_loop_refused():
    inc = {"/etc/slurm/a.conf": "Include b.conf\n", "/etc/slurm/b.conf": "Include a.conf\n"}
    with pytest.raises(ConfigParseError):
        merge("Include a.conf\n", included=inc, path="/etc/slurm/slurm.conf")


def test_unparseable_include_refused_naming_it():
    inc = {"/etc/slurm/x.conf": "garbage here\n"}
    with pytest.raises(ConfigParseError) as err:
        merge("Include x.conf\n", included=inc, path="/etc/slurm/slurm.conf")
    assert "/etc/slurm/x.conf line 1" in err.value.message


# ----------------------------------------------------------------------- value helpers


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", "auth/jwt"),
        ("auth/jwt", "auth/jwt"),
        ("auth/foo", "auth/foo,auth/jwt"),
        ("auth/foo,auth/jwt", "auth/foo,auth/jwt"),
        ("auth/foo,", "auth/foo,auth/jwt"),
    ],
)
def test_merged_types(value, expected):
    assert authalt.merged_types(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", "jwt_key=/k"),
        ("jwt_key=/k", "jwt_key=/k"),
        ("jwt_key=/old", "jwt_key=/k"),
        ("disable_token_creation", "disable_token_creation,jwt_key=/k"),
        ("jwks=/j,jwt_key=/old,userclaimfield=sub", "jwks=/j,jwt_key=/k,userclaimfield=sub"),
        ("jwt_key=/k,jwt_key=/k", "jwt_key=/k"),
    ],
)
def test_merged_params(value, expected):
    assert authalt.merged_params(value, "/k") == expected


# ---------------------------------------------------------------------------------- I/O


def _write(path, text, mode=0o640):
    path.write_bytes(text.encode())
    os.chmod(path, mode)
    return path


def test_apply_writes_and_keeps_mode(tmp_path):
    conf = _write(tmp_path / "slurmdbd.conf", "StoragePass=x\n", 0o600)
    res = apply_merge(str(conf), KEY, dry_run=False)
    assert res.changed
    assert conf.read_text() == "StoragePass=x\n\n" + BLOCK
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_apply_keeps_wider_mode_and_owner(tmp_path):
    conf = _write(tmp_path / "slurm.conf", "ClusterName=x\n", 0o644)
    st = conf.stat()
    apply_merge(str(conf), KEY, dry_run=False)
    st2 = conf.stat()
    assert stat.S_IMODE(st2.st_mode) == 0o644
    assert (st2.st_uid, st2.st_gid) == (st.st_uid, st.st_gid)
    assert st2.st_ino != st.st_ino  # replaced by rename, not rewritten in place


def test_apply_dry_run_writes_nothing(tmp_path):
    conf = _write(tmp_path / "slurm.conf", "ClusterName=x\n")
    before = conf.stat()
    res = apply_merge(str(conf), KEY, dry_run=True)
    assert res.changed
    assert conf.read_text() == "ClusterName=x\n"
    assert conf.stat().st_ino == before.st_ino


def test_apply_unchanged_does_not_touch_file(tmp_path):
    conf = _write(tmp_path / "slurm.conf", FIXTURES["already"])
    before = conf.stat()
    res = apply_merge(str(conf), KEY, dry_run=False)
    assert res.changed is False
    assert conf.stat().st_ino == before.st_ino
    assert conf.stat().st_mtime_ns == before.st_mtime_ns


def test_apply_failure_leaves_original_untouched(tmp_path, monkeypatch):
    conf = _write(tmp_path / "slurm.conf", "ClusterName=x\n")

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(WriteError) as err:
        apply_merge(str(conf), KEY, dry_run=False)
    assert "untouched" in err.value.message
    assert conf.read_text() == "ClusterName=x\n"
    assert [p.name for p in tmp_path.iterdir()] == ["slurm.conf"]


def test_apply_parse_error_leaves_file(tmp_path):
    conf = _write(tmp_path / "slurm.conf", "AuthAltTypes\n")
    with pytest.raises(ConfigParseError) as err:
        apply_merge(str(conf), KEY, dry_run=False)
    assert err.value.file == str(conf)
    assert conf.read_text() == "AuthAltTypes\n"


def test_apply_missing_file(tmp_path):
    with pytest.raises(FileMissingError) as err:
        apply_merge(str(tmp_path / "nope.conf"), KEY, dry_run=False)
    assert err.value.exit_code == ExitCode.CONFIG_INVALID


def test_apply_follows_real_includes_with_glob(tmp_path):
    (tmp_path / "conf.d").mkdir()
    _write(tmp_path / "conf.d" / "jwt.conf", "AuthAltTypes=auth/foo\n")
    conf = _write(tmp_path / "slurm.conf", "Include conf.d/*.conf\n")
    with pytest.raises(ConflictError) as err:
        apply_merge(str(conf), KEY, dry_run=False)
    assert str(tmp_path / "conf.d" / "jwt.conf") in err.value.message
    assert conf.read_text() == "Include conf.d/*.conf\n"


def test_apply_nested_include_resolved_against_top_dir(tmp_path):
    (tmp_path / "conf.d").mkdir()
    _write(tmp_path / "conf.d" / "a.conf", "Include b.conf\n")
    _write(tmp_path / "b.conf", "AuthAltParameters=jwt_key=/old\n")
    conf = _write(tmp_path / "slurm.conf", "Include conf.d/a.conf\n")
    with pytest.raises(ConflictError) as err:
        apply_merge(str(conf), KEY, dry_run=False)
    assert str(tmp_path / "b.conf") in err.value.message


def test_apply_include_already_right(tmp_path):
    _write(tmp_path / "jwt.conf", f"AuthAltTypes=auth/jwt\nAuthAltParameters=jwt_key={KEY}\n")
    conf = _write(tmp_path / "slurm.conf", f"Include {tmp_path}/jwt.conf\n")
    assert apply_merge(str(conf), KEY, dry_run=False).changed is False


def test_apply_through_symlink_keeps_symlink(tmp_path):
    real = _write(tmp_path / "real.conf", "ClusterName=x\n")
    link = tmp_path / "slurm.conf"
    link.symlink_to(real)
    apply_merge(str(link), KEY, dry_run=False)
    assert link.is_symlink()
    assert real.read_text().endswith(BLOCK)


def test_apply_keeps_non_utf8_bytes(tmp_path):
    conf = tmp_path / "slurm.conf"
    conf.write_bytes(b"# caf\xe9\nClusterName=x\n")
    apply_merge(str(conf), KEY, dry_run=False)
    assert conf.read_bytes().startswith(b"# caf\xe9\nClusterName=x\n")


# ------------------------------------------------------------------- property: random texts

_POOL = [
    "ClusterName=hpc",
    "# a comment",
    "#AuthAltTypes=auth/jwt",
    "",
    "   ",
    "NodeName=n[1-2] CPUs=2 # nodes",
    "AuthAltTypes=auth/foo",
    "authalttypes = auth/jwt",
    "AuthAltTypes=auth/munge,auth/jwt",
    "AuthAltParameters=disable_token_creation",
    "AuthAltParameters=jwt_key=/old.key,max_token_lifespan=60",
    f"AUTHALTPARAMETERS=jwt_key={KEY}",
    'AuthAltParameters="jwks=/etc/jwks.json"',
    "\tAuthAltTypes\t=\tauth/jwt\t# tabbed",
    "StoragePass=s3cret",
]


@pytest.mark.parametrize("seed", range(300))
def test_property_merge_is_idempotent_and_keeps_other_lines(seed):
    import random

    from watchdog_daemon.config.atomicwrite import ChangeError

    rng = random.Random(seed)
    eol = rng.choice(["\n", "\r\n"])
    lines = [rng.choice(_POOL) for _ in range(rng.randint(0, 8))]
    text = eol.join(lines) + (eol if rng.random() < 0.7 else "")
    try:
        once = merge(text)
    except ChangeError as exc:
        # Refusals happen only for duplicates that differ or carry comments.
        assert exc.reason == "conflict"
        return
    again = merge(once.text)
    assert again.changed is False and again.text == once.text
    if eol in once.text:  # an empty text gives no line ending to copy: "\n" is used
        assert once.text.count(eol) == once.text.count("\n")
    others = [ln.rstrip("\r") for ln in text.split("\n")]
    others = [ln for ln in others if "authalt" not in ln.lower() or ln.startswith("#")]
    got = [ln.rstrip("\r") for ln in once.text.split("\n")]
    got = [ln for ln in got if ln != ADDED_COMMENT]
    got = [ln for ln in got if "authalt" not in ln.lower() or ln.startswith("#")]
    assert [ln for ln in got if ln.strip()] == [ln for ln in others if ln.strip()]
    assert sum(ln.lstrip().lower().startswith("authalttypes") for ln in got + once.after) >= 1
