"""run_check against the fake slurmrestd on a unix socket: every failure reason, for real I/O."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

# Imported before forking: `nobody` cannot import from root's Python installation.
import jwt
import pytest
import requests_unixsocket

from tests.fakes.fake_slurmrestd import FakeSlurmrestd, make_stale_socket
from tests.fakes.privdrop import NOBODY_GID, NOBODY_UID, can_drop_privileges, run_as_nobody
from watchdog_daemon.check.classify import HttpAnswer
from watchdog_daemon.check.run import run_check
from watchdog_daemon.config.agentconf import AgentSettings
from watchdog_daemon.exitcodes import ExitCode

KEY = b"SENTINEL-check-key-" + b"k" * 20
OTHER = b"other-key-" + b"o" * 30


@pytest.fixture
def env(tmp_path):
    """Agent key copy, agent settings and a slurm.conf; the socket path is short (108 max)."""
    key = tmp_path / "slurmrestd.key"
    key.write_bytes(KEY)
    os.chmod(key, 0o400)
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=hpc\nAccountingStorageType=accounting_storage/slurmdbd\n")
    sock = tmp_path / "s.sock"
    settings = AgentSettings(cluster="hpc", uri=f"unix://{sock}", jwt_key=key)
    return settings, sock, conf


def check(settings, conf, **kw):
    kw.setdefault("timeout", 3.0)
    return run_check(settings, slurm_conf=conf, **kw)


def test_success(env):
    settings, sock, conf = env
    with FakeSlurmrestd(sock, slurmctld_key=KEY) as fake:
        r = check(settings, conf)
    assert r.ok and r.exit_code == ExitCode.OK and r.reason == "ok"
    assert (r.slurm_release, r.cluster, r.api_version, r.accounting) == \
        ("24.11.5", "hpc", "0.0.42", True)
    assert r.success_line() == "✅ connection successful (slurm: 24.11.5, cluster: hpc)"
    paths = [rec.path for rec in fake.config.recorded]
    # the agent's discovery (its versions, newest first, by /ping), slurmctld's proof, the
    # decoy, then slurmdbd
    assert paths == ["/slurm/v0.0.44/ping", "/slurm/v0.0.43/ping", "/slurm/v0.0.42/ping",
                     "/slurm/v0.0.42/diag", "/slurm/v0.0.42/diag", "/slurmdb/v0.0.42/diag"]
    assert all(rec.user == "slurm" and rec.had_token for rec in fake.config.recorded)


def test_token_claims_as_the_agent(env):
    settings, sock, conf = env
    settings = replace(settings, jwt_user="admin", jwt_lifespan=120)
    seen = {}

    def getter(url, headers, timeout):
        seen.setdefault("headers", headers)
        from watchdog_daemon.check.classify import HttpAnswer
        return HttpAnswer(200, "application/json", "", {"meta": {}, "errors": []})

    with FakeSlurmrestd(sock, slurmctld_key=KEY):
        run_check(settings, slurm_conf=conf, getter=getter, decoy=False)
    token = seen["headers"]["X-SLURM-USER-TOKEN"]
    claims = jwt.decode(token, KEY, algorithms=["HS256"])
    assert claims["sun"] == "admin" and claims["exp"] - claims["iat"] == 120
    assert seen["headers"]["X-SLURM-USER-NAME"] == "admin"


def test_wrong_key_is_30_although_ping_says_200(env):
    settings, sock, conf = env
    with FakeSlurmrestd(sock, slurmctld_key=OTHER):
        # The trap: ping answers 200 with any token.
        from urllib.parse import quote
        url = "http+unix://" + quote(str(sock), safe="") + "/slurm/v0.0.42/ping"
        with requests_unixsocket.Session() as s:
            ping = s.get(url, headers={"X-SLURM-USER-NAME": "slurm",
                                       "X-SLURM-USER-TOKEN": "x"}, timeout=3)
        assert ping.status_code == 200
        r = check(settings, conf)
    assert not r.ok and r.exit_code == ExitCode.REJECTED_BY_SLURMCTLD == 30
    assert r.reason == "rejected_by_slurmctld" and r.slurm_release == "24.11.5"
    assert "scontrol reconfigure" in r.hint


def test_only_slurmdbd_on_old_key_is_31(env):
    settings, sock, conf = env
    with FakeSlurmrestd(sock, slurmctld_key=KEY, slurmdbd_key=OTHER):
        r = check(settings, conf)
    assert r.exit_code == ExitCode.REJECTED_BY_SLURMDBD == 31 and r.accounting is True
    assert "restart slurmdbd" in r.hint


def test_slurmdbd_ignored_when_accounting_no(env):
    settings, sock, conf = env
    with FakeSlurmrestd(sock, slurmctld_key=KEY, slurmdbd_key=OTHER) as fake:
        r = check(settings, conf, accounting="no")
    assert r.ok and r.accounting is False
    assert not any(rec.path.startswith("/slurmdb") for rec in fake.config.recorded)


def test_slurm_conf_without_slurmdbd_skips_it(env):
    settings, sock, conf = env
    conf.write_text("AccountingStorageType=accounting_storage/none\n")
    with FakeSlurmrestd(sock, slurmctld_key=KEY, slurmdbd_key=OTHER):
        r = check(settings, conf)
    assert r.ok and r.accounting is False


def test_unreadable_slurm_conf_probes(env, tmp_path):
    settings, sock, _ = env
    with FakeSlurmrestd(sock, slurmctld_key=KEY, slurmdbd_key=OTHER):
        r = check(settings, tmp_path / "absent.conf")
    assert r.exit_code == 31


def test_unreadable_slurm_conf_probe_without_accounting(env, tmp_path):
    settings, sock, _ = env
    with FakeSlurmrestd(sock, slurmctld_key=KEY, accounting=False):
        r = check(settings, tmp_path / "absent.conf")
    assert r.ok and r.accounting is False


def test_accounting_yes_but_not_served(env):
    settings, sock, conf = env
    with FakeSlurmrestd(sock, slurmctld_key=KEY, accounting=False):
        r = check(settings, conf, accounting="yes")
    assert r.reason == "slurmdbd_not_served" and r.exit_code == ExitCode.SLURMRESTD_ERROR


def test_socket_missing_is_20(env):
    settings, _sock, conf = env
    r = check(settings, conf)
    assert r.exit_code == ExitCode.SOCKET_MISSING == 20 and r.reason == "socket_missing"


def test_stale_socket_is_22(env):
    settings, sock, conf = env
    make_stale_socket(sock)
    r = check(settings, conf)
    assert r.exit_code == ExitCode.CONNECTION_REFUSED == 22


def test_refusing_fake_is_22(env):
    settings, sock, conf = env
    fake = FakeSlurmrestd(sock, slurmctld_key=KEY).start()
    fake.refuse()
    try:
        assert check(settings, conf).exit_code == 22
    finally:
        fake.stop()


def test_no_api_version_is_23_and_names_what_slurmrestd_serves(env):
    settings, sock, conf = env
    with FakeSlurmrestd(sock, slurmctld_key=KEY, versions=("0.0.36", "0.0.37")):
        r = check(settings, conf)
    assert r.exit_code == ExitCode.NO_API_VERSION == 23
    assert "v0.0.41: not served (404)" in r.message
    assert r.message.endswith("it serves 0.0.37, 0.0.36")
    assert "0.0.41 or later" in r.hint


def test_a_slurm_that_serves_only_0_0_40_fails_as_it_fails_the_agent(env):
    # Slurm 23.11 serves 0.0.38-0.0.40: the agent (0.0.41 and later) cannot use it, even though
    # slurmctld would accept the token.
    settings, sock, conf = env
    with FakeSlurmrestd(sock, slurmctld_key=KEY, versions=("0.0.38", "0.0.39", "0.0.40")):
        r = check(settings, conf)
    assert r.exit_code == ExitCode.NO_API_VERSION and "it serves 0.0.40, 0.0.39, 0.0.38" in \
        r.message


def test_any_api_version_for_a_slurm_the_agent_cannot_use(env):
    settings, sock, conf = env
    with FakeSlurmrestd(sock, slurmctld_key=KEY, versions=("0.0.38", "0.0.39", "0.0.40")):
        r = check(settings, conf, agent_discovery=False)
    assert r.ok and r.api_version == "0.0.40"


def test_discovery_stops_at_a_401_as_the_agent(env):
    settings, sock, conf = env
    settings = replace(settings, jwt_user="")  # no user name: slurmrestd answers 401
    with FakeSlurmrestd(sock, slurmctld_key=KEY, versions=("0.0.44", "0.0.43")) as fake:
        r = check(settings, conf)
    assert r.reason == "authentication_failure" and r.exit_code == ExitCode.SLURMRESTD_ERROR
    assert [rec.path for rec in fake.config.recorded] == ["/slurm/v0.0.44/ping"]


def test_versions_one_per_line_from_agent_ini(env, tmp_path):
    from watchdog_daemon.config.agentconf import parse_agent_ini

    settings, sock, conf = env
    text = (f"[service]\ncluster=hpc\n[slurmrestd]\nuri=unix://{sock}\n"
            f"jwt_key={settings.jwt_key}\nversions=\n  0.0.45\n  0.0.41\n")
    with FakeSlurmrestd(sock, slurmctld_key=KEY) as fake:
        r = check(parse_agent_ini(text), conf)
    assert r.ok and r.api_version == "0.0.41"
    assert [rec.path for rec in fake.config.recorded][:2] == ["/slurm/v0.0.45/ping",
                                                             "/slurm/v0.0.41/ping"]


def test_agent_versions_setting_is_honoured(env):
    settings, sock, conf = env
    settings = replace(settings, versions=("0.0.41", "0.0.40"))
    with FakeSlurmrestd(sock, slurmctld_key=KEY) as fake:
        r = check(settings, conf)
    assert r.ok and r.api_version == "0.0.41"
    assert fake.config.recorded[0].path == "/slurm/v0.0.41/ping"


def test_garbage_answer_to_ping_is_no_api_version_as_for_the_agent(env):
    settings, sock, conf = env
    with FakeSlurmrestd(sock, slurmctld_key=KEY, mode="garbage"):
        r = check(settings, conf)
    assert r.exit_code == ExitCode.NO_API_VERSION and "Content-Type text/html" in r.message


def test_garbage_answer_to_diag_is_24(env):
    settings, sock, conf = env
    with FakeSlurmrestd(sock, slurmctld_key=KEY, mode="garbage_diag"):
        r = check(settings, conf)
    assert r.exit_code == ExitCode.SLURMRESTD_ERROR == 24


def test_slurmrestd_accepting_any_token_is_caught(env):
    settings, sock, conf = env
    with FakeSlurmrestd(sock, slurmctld_key=OTHER, mode="accept_any_token"):
        r = check(settings, conf)
        assert r.reason == "token_not_verified" and r.exit_code == 24
        # without the decoy, such a slurmrestd would fool the check: that is why it exists
        assert check(settings, conf, decoy=False).ok


def test_controller_unreachable_slow_502_is_32(env):
    settings, sock, conf = env
    with FakeSlurmrestd(sock, slurmctld_key=KEY, mode="controller_unreachable",
                        unreachable_delay=0.1):
        r = check(settings, conf)
    assert r.exit_code == ExitCode.CONTROLLER_UNREACHABLE == 32
    assert "Unable to contact slurm controller" in r.message


def test_controller_hang_hits_timeout_is_32(env):
    settings, sock, conf = env
    with FakeSlurmrestd(sock, slurmctld_key=KEY, mode="controller_unreachable",
                        unreachable_delay=3):
        started = time.monotonic()
        r = check(settings, conf, timeout=0.5)
        elapsed = time.monotonic() - started
    assert r.exit_code == 32 and "0.5 s" in r.message
    assert elapsed < 2.5


def test_total_deadline_bounds_everything(env):
    settings, sock, conf = env
    # Every answer takes 0.4 s; per-call timeout 1 s; total 1 s: the fourth call cannot start.
    with FakeSlurmrestd(sock, slurmctld_key=KEY, mode="hang", unreachable_delay=0.4):
        started = time.monotonic()
        r = check(settings, conf, timeout=1.0, total_timeout=1.0)
        elapsed = time.monotonic() - started
    assert not r.ok and r.exit_code == 32 and elapsed < 2.0


def test_slurmdbd_unreachable_is_33(env):
    settings, sock, conf = env
    with FakeSlurmrestd(sock, slurmctld_key=KEY, mode="slurmdbd_unreachable",
                        unreachable_delay=0.05):
        r = check(settings, conf)
    assert r.exit_code == ExitCode.SLURMDBD_UNREACHABLE == 33


def test_2205_meta_and_fallback_cluster(env):
    settings, sock, conf = env
    with FakeSlurmrestd(sock, slurmctld_key=KEY, versions=("0.0.36", "0.0.37", "0.0.38"),
                        release="22.05.8", meta_style="22.05", accounting=False):
        assert check(settings, conf, accounting="no").exit_code == ExitCode.NO_API_VERSION
        r = check(settings, conf, accounting="no", agent_discovery=False)
    assert r.ok and r.api_version == "0.0.38" and r.slurm_release == "22.05.8"
    assert r.cluster == "hpc"  # from agent.ini: 22.05 reports none


def test_2205_wrong_copy_as_measured_is_24_with_the_hint_that_says_why(env):
    # 22.05.8 answers a refused token with HTTP 500 "Unspecified error" [-1], as it answers a
    # stopped slurmctld (measured): nothing tells a refusal, so 24, not 30.
    settings, sock, conf = env
    with FakeSlurmrestd(sock, slurmctld_key=OTHER, versions=("0.0.38",), release="22.05.8",
                        meta_style="22.05", bad_token_2205="unspecified"):
        r = check(settings, conf, accounting="no", agent_discovery=False)
    assert r.exit_code == 24 and r.reason == "slurmrestd_error"
    assert "Unspecified error: request failed [-1]" in r.message
    assert "answer alike" in r.hint


def test_2205_bad_token_in_errors_with_200_is_30(env):
    # (A 22.05 that gave the reason, 1007; the 22.05.8 measured does not: the test above.)
    settings, sock, conf = env
    with FakeSlurmrestd(sock, slurmctld_key=OTHER, versions=("0.0.38",), release="22.05.8",
                        meta_style="22.05", bad_token_status_2205=200):
        r = check(settings, conf, accounting="no", agent_discovery=False)
    assert r.exit_code == 30 and r.slurm_release == "22.05.8"


@pytest.mark.parametrize(
    ("content", "mode", "code"),
    [
        (None, 0o400, ExitCode.KEY_MISSING),
        (b"", 0o400, ExitCode.KEY_EMPTY),
        (b"x" * 31, 0o400, ExitCode.KEY_TOO_SHORT),
        (KEY, 0o440, ExitCode.KEY_INSECURE),
        (KEY, 0o404, ExitCode.KEY_INSECURE),
    ],
)
def test_key_problems(env, content, mode, code):
    settings, sock, conf = env
    settings.jwt_key.unlink()
    if content is not None:
        settings.jwt_key.write_bytes(content)
        os.chmod(settings.jwt_key, mode)
    with FakeSlurmrestd(sock, slurmctld_key=KEY) as fake:
        r = check(settings, conf)
    assert r.exit_code == code and not r.ok
    assert fake.config.recorded == []  # nothing sent with a bad key


def test_key_symlink_is_insecure(env, tmp_path):
    settings, _sock, conf = env
    real = tmp_path / "real.key"
    settings.jwt_key.rename(real)
    settings.jwt_key.symlink_to(real)
    r = check(settings, conf)
    assert r.exit_code == ExitCode.KEY_INSECURE


def test_static_mode_is_config_invalid(env):
    settings, _sock, conf = env
    r = check(replace(settings, jwt_mode="static"), conf)
    assert r.exit_code == ExitCode.CONFIG_INVALID


def test_http_uri_is_config_invalid(env):
    settings, _sock, conf = env
    r = check(replace(settings, uri="http://localhost:6820"), conf)
    assert r.exit_code == ExitCode.CONFIG_INVALID


# ---- permission denied, for real: run the check as nobody -------------------------------------

def _check_as_child(uri: str, key: str, conf: str) -> list:
    settings = AgentSettings(cluster="hpc", uri=uri, jwt_key=Path(key))
    r = run_check(settings, slurm_conf=conf, timeout=3.0)
    return [r.reason, int(r.exit_code)]


@pytest.mark.skipif(not can_drop_privileges(), reason="needs root to run a child as nobody")
def test_socket_dir_not_accessible_is_21():
    base = Path(tempfile.mkdtemp(prefix="sra-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        key = base / "agent.key"
        key.write_bytes(KEY)
        os.chown(key, NOBODY_UID, NOBODY_GID)
        os.chmod(key, 0o400)
        rundir = base / "run"
        rundir.mkdir(mode=0o700)  # what a wrong RuntimeDirectoryMode gives
        sock = rundir / "s.sock"
        with FakeSlurmrestd(sock, slurmctld_key=KEY):
            reason, code = run_as_nobody(_check_as_child, f"unix://{sock}", str(key),
                                         str(base / "absent.conf"))
            assert (reason, code) == ("permission_denied", ExitCode.PERMISSION_DENIED)
            assert code == 21
            # same socket, directory opened up: nobody gets through
            os.chmod(rundir, 0o755)
            reason, code = run_as_nobody(_check_as_child, f"unix://{sock}", str(key),
                                         str(base / "absent.conf"))
            assert (reason, code) == ("ok", 0)
    finally:
        shutil.rmtree(base)


@pytest.mark.skipif(not can_drop_privileges(), reason="needs root to run a child as nobody")
def test_key_unreadable_by_agent_user_is_12():
    base = Path(tempfile.mkdtemp(prefix="sra-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        key = base / "agent.key"
        key.write_bytes(KEY)
        os.chmod(key, 0o400)  # root's, not nobody's
        reason, code = run_as_nobody(_check_as_child, f"unix://{base}/s.sock", str(key),
                                     str(base / "absent.conf"))
        assert (reason, code) == ("key_unreadable", ExitCode.KEY_UNREADABLE)
    finally:
        shutil.rmtree(base)


# ---- the key given in memory (the watchdog's verification of a new key) -----------------------

def test_run_check_with_key(env):
    from watchdog_daemon.check.run import run_check_with_key
    from watchdog_daemon.keys.secret import SecretBytes

    settings, sock, conf = env
    with FakeSlurmrestd(sock, slurmctld_key=OTHER):
        assert run_check_with_key(settings, SecretBytes(OTHER), slurm_conf=conf,
                                  timeout=3).ok
        assert run_check_with_key(settings, SecretBytes(KEY), slurm_conf=conf,
                                  timeout=3).exit_code == 30
        short = run_check_with_key(settings, SecretBytes(b"x" * 8), slurm_conf=conf)
        assert short.exit_code == ExitCode.KEY_TOO_SHORT
        assert run_check_with_key(settings, SecretBytes(b""), slurm_conf=conf).exit_code == \
            ExitCode.KEY_EMPTY


def test_bug_in_getter_is_internal_error_without_secret(env):
    settings, sock, conf = env

    def getter(url, headers, timeout):
        raise RuntimeError("boom " + headers["X-SLURM-USER-TOKEN"])

    with FakeSlurmrestd(sock, slurmctld_key=KEY):
        r = check(settings, conf, getter=getter)
    # the getter's exception is classified at the call (not a bug of the check itself)
    assert not r.ok and "eyJ" not in r.message


# ---- the first raw connect -------------------------------------------------------------------

def test_probe_connect(tmp_path, monkeypatch):
    import socket

    from watchdog_daemon.check.run import probe_connect

    assert probe_connect(tmp_path / "none.sock", 1).reason == "socket_missing"
    stale = make_stale_socket(tmp_path / "stale.sock")
    assert probe_connect(stale, 1).reason == "connection_refused"
    with FakeSlurmrestd(tmp_path / "live.sock", slurmctld_key=KEY):
        assert probe_connect(tmp_path / "live.sock", 1) is None

        def slow(self, address):
            raise TimeoutError("timed out")

        monkeypatch.setattr(socket.socket, "connect", slow)
        r = probe_connect(tmp_path / "live.sock", 0.5)
    assert r.reason == "slurmrestd_error" and "0.5 s" in r.message


def test_2205_refuses_the_decoy_with_an_unspecified_error_and_the_check_passes(env):
    # Measured on Slurm 22.05.8 (bookworm, allow_unsupported_slurm): a token signed with another
    # key gets HTTP 500 "Unspecified error: request failed" [-1], not 511/1007.
    settings, sock, conf = env
    with FakeSlurmrestd(sock, slurmctld_key=KEY, versions=("0.0.38",), release="22.05.8",
                        meta_style="22.05", accounting=False, bad_token_2205="unspecified"):
        r = check(settings, conf, accounting="no", agent_discovery=False)
    assert r.ok, r.message
    with FakeSlurmrestd(sock, slurmctld_key=OTHER, versions=("0.0.38",), release="22.05.8",
                        meta_style="22.05", accounting=False, bad_token_2205="unspecified"):
        r = check(settings, conf, accounting="no", agent_discovery=False)
    assert not r.ok and "Unspecified error" in r.message  # the agent's key is not accepted


def test_a_token_or_key_echoed_by_slurmrestd_is_redacted_from_the_result(env):
    """slurmrestd (or a proxy in front of it) that echoes the request into its error: what
    reaches the message and the hint is scrubbed (check/result.py `scrub`). Without the scrub
    the token would be printed, logged by the watchdog and shown by the fleet report."""
    settings, sock, conf = env
    seen: list[str] = []

    def getter(url, headers, timeout):
        token = headers.get("X-SLURM-USER-TOKEN", "")
        seen.append(token)
        if url.endswith("/ping"):
            return HttpAnswer(200, "application/json", "{}", {
                "meta": {"slurm": {"release": "24.11.5", "cluster": "hpc"}}, "errors": []})
        body = {"meta": {"slurm": {"release": "24.11.5", "cluster": "hpc"}},
                "errors": [{"error_number": 1007,
                            "error": f"Protocol authentication error for token {token} "
                                     f"(key {KEY.decode()}, hex {KEY.hex()})"}]}
        return HttpAnswer(500, "application/json", json.dumps(body), body)

    with FakeSlurmrestd(sock, slurmctld_key=KEY):  # the socket exists; the getter answers
        r = check(settings, conf, getter=getter)
    assert not r.ok and seen and all(seen)
    shown = r.message + r.hint
    assert "<redacted>" in shown
    for secret in (*seen, KEY.decode(), KEY.hex()):
        assert secret not in shown


def test_accounting_in_an_included_file_makes_slurmdbd_count(env):
    """slurm.conf sends accounting to slurmdbd from an `Include`d file, and slurmdbd is on
    another key: 31, not ok (issue 20: the check read only the top of slurm.conf)."""
    settings, sock, conf = env
    conf.write_text("ClusterName=hpc\nInclude acct.conf\n")
    (conf.parent / "acct.conf").write_text("AccountingStorageType=accounting_storage/slurmdbd\n")
    with FakeSlurmrestd(sock, slurmctld_key=KEY, slurmdbd_key=OTHER):
        r = check(settings, conf)
    assert r.exit_code == ExitCode.REJECTED_BY_SLURMDBD == 31 and r.accounting is True


def test_an_include_that_turns_accounting_off_after_the_top_file_wins(env):
    settings, sock, conf = env
    conf.write_text("AccountingStorageType=accounting_storage/slurmdbd\nInclude acct.conf\n")
    (conf.parent / "acct.conf").write_text("AccountingStorageType=accounting_storage/none\n")
    with FakeSlurmrestd(sock, slurmctld_key=KEY, slurmdbd_key=OTHER):
        r = check(settings, conf)
    assert r.ok and r.accounting is False
