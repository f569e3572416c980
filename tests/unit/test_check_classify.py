"""The pure part of the connect check: answers and exceptions -> reasons and exit codes."""

from __future__ import annotations

import errno

import pytest
import requests
import urllib3

from watchdog_daemon.check.classify import (
    HttpAnswer,
    Outcome,
    PingUse,
    Verdict,
    accounting_from_slurm_conf,
    classify_ping,
    classify_slurm_diag,
    classify_slurmdb_diag,
    parse_meta,
)
from watchdog_daemon.check.result import (
    REASON_EXIT_CODES,
    CheckResult,
    DeadlineExceeded,
    classify_exception,
    failure,
    result_for_verdict,
    scrub,
)
from watchdog_daemon.check.run import probe_socket_path
from watchdog_daemon.exitcodes import ExitCode

META = {"slurm": {"release": "24.11.5", "cluster": "hpc",
                  "version": {"major": "24", "minor": "11", "micro": "5"}}}


def err(number, text, description=""):
    return {"error_number": number, "error": text, "description": description}


def answer(status, body=None, text="", ctype="application/json"):
    return HttpAnswer(status=status, content_type=ctype, text=text, body=body)


# ---- meta ---------------------------------------------------------------------------------

def test_meta_modern():
    assert parse_meta({"meta": META}) == ("24.11.5", "hpc")


def test_meta_2205_release_string():
    body = {"meta": {"Slurm": {"version": {"major": 22, "minor": 5, "micro": 8},
                               "release": "22.05.8"}}}
    assert parse_meta(body) == ("22.05.8", None)


def test_meta_2205_version_ints_only():
    body = {"meta": {"Slurm": {"version": {"major": 22, "minor": 5, "micro": 8}}}}
    assert parse_meta(body) == ("22.05.8", None)


@pytest.mark.parametrize("body", [None, {}, {"meta": 3}, {"meta": {"slurm": "x"}},
                                  {"meta": {"slurm": {"version": {"major": "a"}}}}])
def test_meta_missing_or_odd(body):
    assert parse_meta(body) == (None, None)


# ---- slurmctld diag -------------------------------------------------------------------------

def test_diag_ok():
    v = classify_slurm_diag(answer(200, {"meta": META, "errors": [], "statistics": {}}))
    assert v.outcome is Outcome.ACCEPTED and (v.release, v.cluster) == ("24.11.5", "hpc")


def test_diag_ok_with_warnings():
    v = classify_slurm_diag(answer(200, {"meta": META, "errors": [], "warnings": [{"x": 1}]}))
    assert v.outcome is Outcome.ACCEPTED


def test_diag_bad_token_511_1007():
    body = {"meta": META, "errors": [err(1007, "Protocol authentication error")]}
    v = classify_slurm_diag(answer(511, body))
    assert v.outcome is Outcome.REJECTED and "1007" in v.detail and v.release == "24.11.5"


def test_diag_511_without_errors_is_rejection():
    assert classify_slurm_diag(answer(511, {})).outcome is Outcome.REJECTED


def test_diag_2205_bad_token_in_errors_with_200():
    body = {"meta": {"Slurm": {"release": "22.05.8"}},
            "errors": [{"errno": 1007, "error": "Protocol authentication error"}]}
    assert classify_slurm_diag(answer(200, body)).outcome is Outcome.REJECTED


@pytest.mark.parametrize("number", [6000, 6001])
def test_diag_auth_cred_errors(number):
    body = {"errors": [err(number, "whatever")]}
    assert classify_slurm_diag(answer(500, body)).outcome is Outcome.REJECTED


def test_diag_auth_by_text_only():
    body = {"errors": [{"error": "Invalid authentication credential"}]}
    assert classify_slurm_diag(answer(500, body)).outcome is Outcome.REJECTED


def test_diag_401():
    v = classify_slurm_diag(answer(401, None, "Authentication failure", "text/plain"))
    assert v.outcome is Outcome.AUTH_REFUSED


def test_diag_rest_auth_fail_number():
    assert classify_slurm_diag(answer(500, {"errors": [err(9008, "x")]})).outcome \
        is Outcome.AUTH_REFUSED


@pytest.mark.parametrize("number", [1001, 1800, 1804, 5004, 1021])
def test_diag_communication_errors(number):
    body = {"meta": META, "errors": [err(number, "some text")]}
    assert classify_slurm_diag(answer(500, body)).outcome is Outcome.UNREACHABLE


def test_diag_unreachable_by_text():
    body = {"errors": [{"error": "Unable to contact slurm controller (connect failure)"}]}
    assert classify_slurm_diag(answer(500, body)).outcome is Outcome.UNREACHABLE


def test_diag_502_without_errors_is_unreachable():
    assert classify_slurm_diag(answer(502, {"meta": META})).outcome is Outcome.UNREACHABLE


def test_diag_404_is_not_served():
    v = classify_slurm_diag(answer(404, None, "Unable find requested URL", "text/plain"))
    assert v.outcome is Outcome.NOT_SERVED


def test_diag_200_not_json_is_error():
    v = classify_slurm_diag(answer(200, None, "<html>", "text/html"))
    assert v.outcome is Outcome.ERROR and "<html>" in v.detail


def test_diag_500_other_error():
    v = classify_slurm_diag(answer(500, {"errors": [err(2090, "Internal error")]}))
    assert v.outcome is Outcome.ERROR and "Internal error" in v.detail


def test_diag_200_with_unknown_error_is_error():
    assert classify_slurm_diag(answer(200, {"errors": [err(2090, "odd")]})).outcome \
        is Outcome.ERROR


# ---- slurmdbd diag ------------------------------------------------------------------------

def test_dbd_ok():
    assert classify_slurmdb_diag(answer(200, {"meta": META, "errors": []})).outcome \
        is Outcome.ACCEPTED


def test_dbd_auth_502():
    body = {"meta": META, "errors": [{"error": "Failed to open slurmdbd connection, "
                                               "authentication error"}]}
    assert classify_slurmdb_diag(answer(502, body)).outcome is Outcome.REJECTED


def test_dbd_unreachable_502():
    body = {"errors": [err(7000, "Unable to connect to database",
                           "Failed to open slurmdbd connection")]}
    assert classify_slurmdb_diag(answer(502, body)).outcome is Outcome.UNREACHABLE


def test_dbd_plain_502():
    assert classify_slurmdb_diag(answer(502, {})).outcome is Outcome.UNREACHABLE


def test_dbd_404_not_served():
    assert classify_slurmdb_diag(answer(404, None, "Unable find", "text/plain")).outcome \
        is Outcome.NOT_SERVED


def test_dbd_not_configured():
    body = {"errors": [{"error": "Slurm accounting storage not configured"}]}
    assert classify_slurmdb_diag(answer(500, body)).outcome is Outcome.NOT_CONFIGURED


# ---- verdict -> result -------------------------------------------------------------------

@pytest.mark.parametrize(
    ("stage", "outcome", "reason"),
    [
        ("slurm", Outcome.REJECTED, "rejected_by_slurmctld"),
        ("slurm", Outcome.UNREACHABLE, "controller_unreachable"),
        ("slurm", Outcome.AUTH_REFUSED, "authentication_failure"),
        ("slurm", Outcome.ERROR, "slurmrestd_error"),
        ("slurmdb", Outcome.REJECTED, "rejected_by_slurmdbd"),
        ("slurmdb", Outcome.UNREACHABLE, "slurmdbd_unreachable"),
        ("slurmdb", Outcome.NOT_SERVED, "slurmdbd_not_served"),
        ("slurmdb", Outcome.NOT_CONFIGURED, "slurmdbd_not_served"),
        ("slurmdb", Outcome.ERROR, "slurmrestd_error"),
        ("decoy", Outcome.ACCEPTED, "token_not_verified"),
        ("decoy", Outcome.UNREACHABLE, "controller_unreachable"),
    ],
)
def test_result_for_verdict(stage, outcome, reason):
    r = result_for_verdict(stage, Verdict(outcome, "detail", "24.11.5", "hpc"),
                           api_version="0.0.42", fingerprint="abcdef123456")
    assert r is not None and not r.ok and r.reason == reason
    assert r.exit_code == REASON_EXIT_CODES[reason] and r.hint
    assert (r.slurm_release, r.cluster, r.api_version) == ("24.11.5", "hpc", "0.0.42")


def test_accepted_and_decoy_rejected_are_not_failures():
    assert result_for_verdict("slurm", Verdict(Outcome.ACCEPTED)) is None
    assert result_for_verdict("slurmdb", Verdict(Outcome.ACCEPTED)) is None
    assert result_for_verdict("decoy", Verdict(Outcome.REJECTED)) is None
    # An error answer to the random-key token (22.05: HTTP 500 [-1]) is a refusal too: the
    # same call with the agent's token was just accepted.
    assert result_for_verdict("decoy", Verdict(Outcome.ERROR, "HTTP 500")) is None


def test_exit_codes_table():
    assert REASON_EXIT_CODES["rejected_by_slurmctld"] == ExitCode.REJECTED_BY_SLURMCTLD == 30
    assert REASON_EXIT_CODES["rejected_by_slurmdbd"] == 31
    assert REASON_EXIT_CODES["controller_unreachable"] == 32
    assert REASON_EXIT_CODES["slurmdbd_unreachable"] == 33
    assert REASON_EXIT_CODES["socket_missing"] == 20
    assert REASON_EXIT_CODES["permission_denied"] == 21
    assert REASON_EXIT_CODES["connection_refused"] == 22
    assert REASON_EXIT_CODES["no_api_version"] == 23
    assert REASON_EXIT_CODES["slurmrestd_error"] == 24
    assert REASON_EXIT_CODES["key_missing"] == 11


# ---- exceptions ----------------------------------------------------------------------------

def wrapped(oserror):
    """What requests-unixsocket raises: ConnectionError(ProtocolError(..., OSError))."""
    return requests.exceptions.ConnectionError(
        urllib3.exceptions.ProtocolError("Connection aborted.", oserror))


@pytest.mark.parametrize(
    ("oserror", "reason"),
    [
        (FileNotFoundError(errno.ENOENT, "No such file"), "socket_missing"),
        (PermissionError(errno.EACCES, "Permission denied"), "permission_denied"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "connection_refused"),
        (ConnectionResetError(errno.ECONNRESET, "reset"), "slurmrestd_error"),
        (OSError(errno.EIO, "io"), "slurmrestd_error"),
    ],
)
def test_exception_errno(oserror, reason):
    r = classify_exception(wrapped(oserror), stage="discover", socket_path="/run/s.sock")
    assert r.reason == reason and r.exit_code == REASON_EXIT_CODES[reason]
    assert "/run/s.sock" in r.message


@pytest.mark.parametrize("stage", ["discover", "slurm", "decoy"])
def test_read_timeout_is_controller_unreachable(stage):
    r = classify_exception(requests.exceptions.ReadTimeout("x"), stage=stage, timeout=10)
    assert r.reason == "controller_unreachable" and "10 s" in r.message


def test_read_timeout_on_slurmdb():
    r = classify_exception(requests.exceptions.ReadTimeout("x"), stage="slurmdb")
    assert r.reason == "slurmdbd_unreachable" and r.exit_code == 33


def test_connect_timeout():
    r = classify_exception(requests.exceptions.ConnectTimeout("x"), stage="discover")
    assert r.reason == "slurmrestd_error"


@pytest.mark.parametrize("exc", [TimeoutError("t"), DeadlineExceeded()])
def test_other_timeouts(exc):
    assert classify_exception(exc, stage="slurm").reason == "controller_unreachable"


def test_unknown_exception():
    r = classify_exception(ValueError("weird"), stage="slurm")
    assert r.reason == "slurmrestd_error" and "ValueError" in r.message


# ---- socket probe ------------------------------------------------------------------------------

def test_probe_missing(tmp_path):
    r = probe_socket_path(tmp_path / "s.sock")
    assert r is not None and r.reason == "socket_missing" and r.exit_code == 20


def test_probe_missing_dir(tmp_path):
    r = probe_socket_path(tmp_path / "run" / "s.sock")
    assert r is not None and "nor does its directory" in r.message


def test_probe_not_a_socket(tmp_path):
    (tmp_path / "s.sock").write_text("")
    r = probe_socket_path(tmp_path / "s.sock")
    assert r is not None and r.reason == "socket_missing" and "not a socket" in r.message


# ---- slurm.conf ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("AccountingStorageType=accounting_storage/slurmdbd\n", True),
        ("accountingstoragetype = Accounting_Storage/SlurmDBD\n", True),
        ("ClusterName=hpc AccountingStorageType=accounting_storage/slurmdbd\n", True),
        ("#AccountingStorageType=accounting_storage/slurmdbd\n", False),
        ("AccountingStorageType=accounting_storage/none\n", False),
        ("AccountingStorageType=accounting_storage/slurmdbd\n"
         "AccountingStorageType=accounting_storage/none\n", False),
        ("AccountingStorageHost=db\n", False),
        ("", False),
    ],
)
def test_accounting_from_slurm_conf(text, expected):
    assert accounting_from_slurm_conf(text) is expected


# ---- results ---------------------------------------------------------------------------------

def test_result_lines_and_dict():
    ok = CheckResult(ok=True, reason="ok", exit_code=ExitCode.OK, message="m",
                     slurm_release="24.11.5", cluster="hpc", api_version="0.0.42",
                     accounting=True)
    assert ok.success_line() == "✅ connection successful (slurm: 24.11.5, cluster: hpc)"
    d = ok.to_dict()
    assert d["slurm"] == "24.11.5" and d["exit_code"] == 0 and d["api_version"] == "0.0.42"
    bad = failure("socket_missing", "no socket")
    assert bad.error_line() == f"ERROR: socket_missing: no socket — {bad.hint}"


def test_scrub():
    r = failure("slurmrestd_error", "echoed eyJtoken.abc.def back", hint="eyJtoken.abc.def")
    s = scrub(r, ["eyJtoken.abc.def"])
    assert "eyJ" not in s.message + s.hint and "<redacted>" in s.message
    assert scrub(r, ["short"]) is r


# ----------------------------------------------------------------- the agent's /ping discovery

_META = {"meta": {"slurm": {"release": "24.11.5", "cluster": "hpc"}}, "errors": []}


@pytest.mark.parametrize(
    ("answer", "use"),
    [
        (HttpAnswer(200, "application/json", "", _META), PingUse.USE),
        # 200 with pinged DOWN (a wrong key) still gives the agent its version: the key is
        # proven by the authenticated calls after discovery, not here.
        (HttpAnswer(200, "application/json", "", {**_META, "pings": [{"pinged": "DOWN"}]}),
         PingUse.USE),
        (HttpAnswer(401, "text/plain", "Authentication failure"), PingUse.REFUSED),
        (HttpAnswer(500, "text/plain", "Authentication does not apply to request"),
         PingUse.REFUSED),
        (HttpAnswer(404, "text/plain", "Unable find requested URL"), PingUse.NEXT),
        (HttpAnswer(200, "application/json; charset=utf-8", "", _META), PingUse.NEXT),
        (HttpAnswer(200, "application/json", "[]", None), PingUse.NEXT),
        (HttpAnswer(200, "application/json", "", {**_META, "errors": [{"error": "x"}]}),
         PingUse.NEXT),
        # Slurm 22.05: meta.Slurm, no cluster: the agent cannot use it.
        (HttpAnswer(200, "application/json", "",
                    {"meta": {"Slurm": {"release": "22.05.8"}}, "errors": []}), PingUse.NEXT),
    ],
)
def test_classify_ping_as_the_agent(answer, use):
    assert classify_ping(answer)[0] is use


def test_classify_ping_for_any_client_takes_2205():
    answer = HttpAnswer(200, "application/json", "",
                        {"meta": {"Slurm": {"release": "22.05.8"}}, "errors": []})
    assert classify_ping(answer, as_agent=False)[0] is PingUse.USE


# Measured on Slurm 22.05.8 (bookworm1): a token signed with another key, and the right token
# with slurmctld stopped, both get exactly this from /slurm/v0.0.38/diag.
ANSWER_2205_UNSPECIFIED = {
    "meta": {"Slurm": {"version": {"major": 22, "minor": 5, "micro": 8}, "release": "22.05.8"}},
    "errors": [{"description": "request failed", "error_number": -1,
                "error": "Unspecified error", "source": "slurm_get_statistics"}]}


def test_2205s_unspecified_error_stays_slurmrestd_error_with_a_hint_that_says_why():
    verdict = classify_slurm_diag(answer(500, ANSWER_2205_UNSPECIFIED))
    assert verdict.outcome is Outcome.ERROR and verdict.unspecified
    r = result_for_verdict("slurm", verdict, api_version="0.0.38")
    assert r is not None and r.reason == "slurmrestd_error" and r.exit_code == 24
    assert r.message == ("/slurm/v0.0.38/diag: HTTP 500: Unspecified error: request failed "
                         "[-1]")
    assert "a key copy that differs from the key slurmctld loaded, and an unreachable " \
           "slurmctld, answer alike" in r.hint
    assert "`scontrol ping`" in r.hint
    db = result_for_verdict("slurmdb", classify_slurmdb_diag(answer(500, {"errors": [
        {"error_number": -1, "error": "Unspecified error", "source": "slurmdb_get_stats"}]})),
        api_version="0.0.38")
    assert db is not None and db.exit_code == 24 and "key slurmdbd loaded" in db.hint


def test_an_error_with_its_reason_gets_the_plain_hint():
    verdict = classify_slurm_diag(answer(500, {"errors": [err(-1, "x"), err(9999, "y")]}))
    assert not verdict.unspecified
    r = result_for_verdict("slurm", verdict, api_version="0.0.42")
    assert r is not None and "answer alike" not in r.hint
