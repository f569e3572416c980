"""The connect check's pure part: Slurm/slurmrestd answers and exceptions in, a CheckResult out.

A 200 on /ping proves nothing (../shared/FACTS.md): slurmrestd answers it with `pinged: DOWN` for a
token signed with another key. So the check makes authenticated calls whose success needs the
daemons to accept the token: `GET /slurm/vX/diag` (slurmctld) and `GET /slurmdb/vX/diag`
(slurmdbd), and one decoy token signed with a random key, which must be refused.

This module has no I/O: `classify_*`, `failure`, `result_for_verdict`, `classify_exception`,
`accounting_from_slurm_conf`, `parse_meta` turn observed answers into a `CheckResult`;
`watchdog_daemon.check.run` makes the calls.
"""

from __future__ import annotations

import errno
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Literal

from watchdog_daemon.exitcodes import ExitCode

# Every REST API version a Slurm release has served (20.11's 0.0.35 to 26.05's 0.0.45), newest
# first: asked only to say what a slurmrestd serves when none of the agent's versions answers.
KNOWN_VERSIONS: tuple[str, ...] = tuple(f"0.0.{n}" for n in range(45, 34, -1))
DEFAULT_SLURM_CONF = "/etc/slurm/slurm.conf"
MAX_BODY_TEXT = 500  # how much of an unexpected body goes into a message

Accounting = Literal["auto", "yes", "no"]
Stage = Literal["discover", "slurm", "decoy", "slurmdb"]

# Slurm error numbers (SchedMD/slurm slurm/slurm_errno.h).
# Token refused by the daemon: SLURM_PROTOCOL_AUTHENTICATION_ERROR, ESLURM_AUTH_CRED_INVALID,
# ESLURM_AUTH_EXPIRED.
AUTH_ERROR_NUMBERS = frozenset({1007, 6000, 6001})
# slurmrestd's own authentication of the HTTP request failed (ESLURM_REST_AUTH_FAIL).
REST_AUTH_ERROR_NUMBERS = frozenset({9008})
# Could not talk to the daemon: SLURM_COMMUNICATIONS_* (1001-1004), MISSING_SOCKET (1013),
# REJECTED..READ_TIMEOUT (1019-1023), SLURMCTLD_COMMUNICATIONS_* (1800-1805), socket errors
# (5003-5005).
COMMUNICATION_ERROR_NUMBERS = frozenset(
    {1001, 1002, 1003, 1004, 1013, 1019, 1020, 1021, 1022, 1023,
     1800, 1801, 1802, 1803, 1804, 1805, 5003, 5004, 5005}
)
# slurmdbd connection: ESLURM_DB_CONNECTION, ESLURM_DB_CONNECTION_INVALID.
DB_CONNECTION_ERROR_NUMBERS = frozenset({7000, 7008})

_AUTH_TEXT = re.compile(r"authenticat|invalid (authentication )?credential|auth_jwt|expired",
                        re.IGNORECASE)
_UNREACHABLE_TEXT = re.compile(
    r"unable to contact|connect(ion)? failure|connection refused|timed? ?out|"
    r"communication|unable to connect|failed to open slurmdbd connection|"
    r"no route to host|host name lookup|not responding|unreachable",
    re.IGNORECASE,
)
_NOT_CONFIGURED_TEXT = re.compile(
    r"not configured|accounting_storage/none|accounting storage.*(disabled|none)|"
    r"slurmdbd.*not (configured|enabled)|no accounting",
    re.IGNORECASE,
)


class Outcome(Enum):
    ACCEPTED = "accepted"
    NOT_SERVED = "not_served"  # this API version (or plugin) is not served: 404
    NOT_CONFIGURED = "not_configured"  # accounting is not configured in Slurm
    REJECTED = "rejected"  # the daemon refused the token
    UNREACHABLE = "unreachable"  # slurmrestd could not reach the daemon
    AUTH_REFUSED = "auth_refused"  # slurmrestd itself refused the request's headers (401)
    ERROR = "error"  # anything else


@dataclass(frozen=True)
class HttpAnswer:
    """What slurmrestd answered, reduced to what classification needs."""

    status: int
    content_type: str = ""
    text: str = ""
    body: dict[str, Any] | None = None  # parsed JSON object, when it was one


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    detail: str = ""
    release: str | None = None
    cluster: str | None = None


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    reason: str
    exit_code: ExitCode
    message: str
    hint: str = ""
    slurm_release: str | None = None
    cluster: str | None = None
    api_version: str | None = None
    accounting: bool | None = None

    @property
    def public_reason(self) -> str:
        """The README's name for the exit code (`slurmrestd_error`...); `reason` may be finer
        (`token_not_verified`...) and goes out as `detail`."""
        return self.exit_code.name.lower()

    def to_dict(self) -> dict[str, Any]:
        # "slurm" like the Slurm-web success line (and what the deploy's facts read).
        return {
            "ok": self.ok,
            "reason": self.public_reason,
            "detail": self.reason,
            "exit_code": int(self.exit_code),
            "message": self.message,
            "hint": self.hint,
            "slurm": self.slurm_release,
            "cluster": self.cluster,
            "api_version": self.api_version,
            "accounting": self.accounting,
        }

    def success_line(self) -> str:
        return (f"✅ connection successful (slurm: {self.slurm_release or 'unknown'}, "
                f"cluster: {self.cluster or 'unknown'})")

    def error_line(self) -> str:
        return f"ERROR: {self.public_reason}: {self.message} — {self.hint}"


# ---------------------------------------------------------------------------------------------
# Pure helpers


def parse_meta(body: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """(release, cluster) from `meta.slurm` (or `meta.Slurm` on 22.05, without cluster)."""
    if not isinstance(body, dict):
        return None, None
    meta = body.get("meta")
    if not isinstance(meta, dict):
        return None, None
    slurm = meta.get("slurm") or meta.get("Slurm")
    if not isinstance(slurm, dict):
        return None, None
    release = slurm.get("release") if isinstance(slurm.get("release"), str) else None
    if not release:
        version = slurm.get("version")
        if isinstance(version, dict):
            try:
                major, minor, micro = (int(version[k]) for k in ("major", "minor", "micro"))
            except (KeyError, TypeError, ValueError):
                pass
            else:
                release = f"{major}.{minor:02d}.{micro}"
    cluster = slurm.get("cluster") if isinstance(slurm.get("cluster"), str) else None
    return release or None, cluster or None


def slurm_errors(body: dict[str, Any] | None) -> list[tuple[int | None, str]]:
    """(number, text) of each entry of `errors[]` (error_number on 0.0.39+, errno on 0.0.38)."""
    if not isinstance(body, dict):
        return []
    errors = body.get("errors")
    if not isinstance(errors, list):
        return []
    found: list[tuple[int | None, str]] = []
    for entry in errors:
        if not isinstance(entry, dict):
            found.append((None, str(entry)))
            continue
        number = entry.get("error_number", entry.get("errno", entry.get("error_code")))
        number = number if isinstance(number, int) and not isinstance(number, bool) else None
        texts = [str(entry[k]) for k in ("error", "description") if entry.get(k)]
        found.append((number, ": ".join(dict.fromkeys(texts))))
    return found


def _errors_text(errors: list[tuple[int | None, str]]) -> str:
    return "; ".join(f"{text or 'error'}" + (f" [{num}]" if num is not None else "")
                     for num, text in errors)


def _body_excerpt(answer: HttpAnswer) -> str:
    text = " ".join(answer.text.split())
    return text[:MAX_BODY_TEXT]


def _classify(answer: HttpAnswer, *, dbd: bool) -> Verdict:
    release, cluster = parse_meta(answer.body)
    errors = slurm_errors(answer.body)
    numbers = {num for num, _ in errors if num is not None}
    text = _errors_text(errors)

    def verdict(outcome: Outcome, detail: str) -> Verdict:
        return Verdict(outcome, detail, release, cluster)

    if answer.status == 404:
        # Unknown URL: "Unable find requested URL" in text/plain; a version (or the slurmdbd
        # plugin) that this slurmrestd does not serve.
        return verdict(Outcome.NOT_SERVED, text or _body_excerpt(answer))
    if numbers & AUTH_ERROR_NUMBERS or answer.status == 511 or (
        errors and _AUTH_TEXT.search(text)
    ):
        return verdict(Outcome.REJECTED, text or f"HTTP {answer.status}")
    if answer.status == 401 or numbers & REST_AUTH_ERROR_NUMBERS:
        return verdict(Outcome.AUTH_REFUSED, text or _body_excerpt(answer) or "HTTP 401")
    if dbd and errors and _NOT_CONFIGURED_TEXT.search(text):
        return verdict(Outcome.NOT_CONFIGURED, text)
    unreachable_numbers = COMMUNICATION_ERROR_NUMBERS | (
        DB_CONNECTION_ERROR_NUMBERS if dbd else frozenset()
    )
    if numbers & unreachable_numbers or (errors and _UNREACHABLE_TEXT.search(text)):
        return verdict(Outcome.UNREACHABLE, text)
    if answer.status in (502, 503, 504):
        # Measured: slurmrestd answers 502 when it cannot reach the daemon.
        return verdict(Outcome.UNREACHABLE, text or f"HTTP {answer.status}")
    if answer.status == 200 and not errors:
        if answer.body is None:
            return verdict(Outcome.ERROR, "HTTP 200 without a JSON body: "
                           + (_body_excerpt(answer) or "(empty)"))
        return verdict(Outcome.ACCEPTED, "")
    return verdict(Outcome.ERROR, f"HTTP {answer.status}: "
                   + (text or _body_excerpt(answer) or "(empty body)"))


class PingUse(Enum):
    USE = "use"  # the agent takes this version
    NEXT = "next"  # the agent goes on to its next version
    REFUSED = "refused"  # the agent stops: slurmrestd refused the request's authentication


def classify_ping(answer: HttpAnswer, *, as_agent: bool = True) -> tuple[PingUse, str]:
    """What the Slurm-web agent makes of `GET /slurm/vX/ping` during its API discovery.

    A 401 (or 500 "Authentication does not apply to request") stops it; an answer that is not
    exactly `application/json`, not a JSON object, has `errors`, or lacks `meta.slurm.release`
    and `meta.slurm.cluster` sends it to the next version (Slurm-web 6.0 slurmrestd/__init__.py).
    The second item says why, for the message. `as_agent=False` takes any JSON answer that
    names the release (22.05's `meta.Slurm` included): for a Slurm the agent cannot use.
    """
    if not as_agent and answer.status != 404 and answer.status != 401 and answer.body is not None:
        release, _cluster = parse_meta(answer.body)
        return (PingUse.USE, "") if release else (PingUse.NEXT, "no release in meta")
    if answer.status == 401 or (answer.status == 500 and answer.text.strip()
                                == "Authentication does not apply to request"):
        return PingUse.REFUSED, f"HTTP {answer.status}: {_body_excerpt(answer) or 'refused'}"
    if answer.status == 404:
        return PingUse.NEXT, "not served (404)"
    if answer.content_type != "application/json":
        return PingUse.NEXT, f"Content-Type {answer.content_type or 'none'}"
    body = answer.body
    if body is None:
        return PingUse.NEXT, "not a JSON object"
    if body.get("errors"):
        return PingUse.NEXT, "errors: " + _errors_text(slurm_errors(body))
    meta = body.get("meta")
    slurm = meta.get("slurm") if isinstance(meta, dict) else None
    if not isinstance(slurm, dict) or "release" not in slurm or "cluster" not in slurm:
        return PingUse.NEXT, "no meta.slurm.release and meta.slurm.cluster"
    return PingUse.USE, ""


def classify_slurm_diag(answer: HttpAnswer) -> Verdict:
    """`GET /slurm/vX/diag`: needs slurmctld to accept the token."""
    return _classify(answer, dbd=False)


def classify_slurmdb_diag(answer: HttpAnswer) -> Verdict:
    """`GET /slurmdb/vX/diag`: needs slurmdbd to accept the token."""
    return _classify(answer, dbd=True)


def accounting_from_slurm_conf(text: str) -> bool:
    """Whether slurm.conf sends accounting to slurmdbd (AccountingStorageType, last one wins)."""
    value = ""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0]
        for match in re.finditer(r"(?:^|\s)AccountingStorageType\s*=\s*(\S*)", line,
                                 re.IGNORECASE):
            value = match.group(1)
    return "slurmdbd" in value.lower()


# Messages and hints per reason. Hints say what to do, in the administrator's terms.
_HINTS: dict[str, str] = {
    "socket_missing": "start slurmrestd (systemctl enable --now slurmrestd.service) and check "
                      "that its socket path matches [slurmrestd] uri in agent.ini",
    "permission_denied": "the socket's directory must be searchable by the agent's user "
                         "(RuntimeDirectoryMode=0755 in the slurmrestd drop-in); run the check "
                         "as the agent's user (slurm-web)",
    "connection_refused": "nothing listens on the socket (stale file): restart slurmrestd and "
                          "read `journalctl -u slurmrestd`",
    "no_api_version": "this slurmrestd serves none of these REST API versions: check the Slurm "
                      "version, the openapi plugins slurmrestd loads, and [slurmrestd] versions",
    "slurmrestd_error": "read `journalctl -u slurmrestd` and the slurmctld/slurmdbd logs",
    "authentication_failure": "slurmrestd refused the request's X-SLURM-USER-* headers: run it "
                              "with `-a rest_auth/jwt` (the drop-in's ExecStart) and check "
                              "[slurmrestd] jwt_user",
    "token_not_verified": "a token signed with a random key was accepted too, so this check "
                          "proves nothing: slurmrestd must run with `-a rest_auth/jwt` and "
                          "SLURM_JWT=daemon (the drop-in), not with local authentication",
    "rejected_by_slurmctld": "the agent's key copy differs from the key slurmctld loaded: sync "
                             "the copy (slurmrestd-access key sync), check AuthAltTypes=auth/jwt "
                             "and AuthAltParameters=jwt_key= in slurm.conf; after a rotation run "
                             "`scontrol reconfigure` (Slurm 22.05: restart slurmctld)",
    "rejected_by_slurmdbd": "slurmdbd does not accept the key: check AuthAltTypes=auth/jwt and "
                            "AuthAltParameters=jwt_key= in slurmdbd.conf, and restart slurmdbd "
                            "after a key change (systemctl restart slurmdbd)",
    "controller_unreachable": "slurmrestd cannot reach slurmctld: check `scontrol ping`, that "
                              "slurmctld runs and that SlurmctldHost resolves on this host",
    "slurmdbd_unreachable": "slurmrestd cannot reach slurmdbd: check `systemctl status "
                            "slurmdbd`, that AccountingStorageHost resolves and slurmdbd's log",
    "slurmdbd_not_served": "slurmrestd serves no /slurmdb endpoints although accounting is "
                           "expected: check the openapi plugins it loads and "
                           "AccountingStorageType in slurm.conf, or pass --accounting no",
    "config_invalid": "fix the configuration file named in the message",
    "user_missing": "create the user (install Slurm-web's agent package) or name the right one",
    "internal_error": "this is a bug in slurmrestd-access: please report it",
}

_CODES: dict[str, ExitCode] = {
    "ok": ExitCode.OK,
    "config_invalid": ExitCode.CONFIG_INVALID,
    "key_missing": ExitCode.KEY_MISSING,
    "key_unreadable": ExitCode.KEY_UNREADABLE,
    "key_unstable": ExitCode.KEY_UNREADABLE,
    "key_empty": ExitCode.KEY_EMPTY,
    "key_too_short": ExitCode.KEY_TOO_SHORT,
    "key_insecure": ExitCode.KEY_INSECURE,
    "socket_missing": ExitCode.SOCKET_MISSING,
    "permission_denied": ExitCode.PERMISSION_DENIED,
    "connection_refused": ExitCode.CONNECTION_REFUSED,
    "no_api_version": ExitCode.NO_API_VERSION,
    "slurmrestd_error": ExitCode.SLURMRESTD_ERROR,
    "authentication_failure": ExitCode.SLURMRESTD_ERROR,
    "token_not_verified": ExitCode.SLURMRESTD_ERROR,
    "slurmdbd_not_served": ExitCode.SLURMRESTD_ERROR,
    "rejected_by_slurmctld": ExitCode.REJECTED_BY_SLURMCTLD,
    "rejected_by_slurmdbd": ExitCode.REJECTED_BY_SLURMDBD,
    "controller_unreachable": ExitCode.CONTROLLER_UNREACHABLE,
    "slurmdbd_unreachable": ExitCode.SLURMDBD_UNREACHABLE,
    "user_missing": ExitCode.USER_MISSING,
    "internal_error": ExitCode.INTERNAL_ERROR,
}

# Public: reason -> exit code, for documentation and the deploy.
REASON_EXIT_CODES: dict[str, ExitCode] = dict(_CODES)


def failure(reason: str, message: str, hint: str | None = None, **meta: Any) -> CheckResult:
    """A failed CheckResult for `reason` (one of REASON_EXIT_CODES)."""
    return CheckResult(ok=False, reason=reason, exit_code=_CODES[reason], message=message,
                       hint=hint if hint is not None else _HINTS.get(reason, ""), **meta)


def result_for_verdict(stage: Stage, verdict: Verdict, *, api_version: str | None = None,
                       fingerprint: str | None = None) -> CheckResult | None:
    """The failure a non-accepted verdict means at `stage`; None when it is not a failure."""
    meta: dict[str, Any] = {"slurm_release": verdict.release, "cluster": verdict.cluster,
                            "api_version": api_version}
    key = f" (key sha256:{fingerprint})" if fingerprint else ""
    where = f"/slurm/v{api_version}/diag" if stage != "slurmdb" else f"/slurmdb/v{api_version}/diag"
    outcome = verdict.outcome
    if outcome is Outcome.ACCEPTED:
        if stage == "decoy":
            return failure("token_not_verified",
                           f"{where} accepted a token signed with a random key", **meta)
        return None
    if stage == "decoy":
        # The wrong key must be refused; being refused is the expected answer. The same call
        # with the agent's token was accepted just before, so an error answer to this one is
        # the token's doing: refused too (Slurm 22.05 says `HTTP 500 "Unspecified error:
        # request failed" [-1]`, measured, where later releases say 511/1007). Only silence
        # from slurmctld tells nothing.
        if outcome is Outcome.UNREACHABLE:
            return failure("controller_unreachable",
                           f"slurmctld did not answer the wrong-key probe: {verdict.detail}",
                           **meta)
        return None
    if outcome is Outcome.REJECTED:
        if stage == "slurmdb":
            return failure("rejected_by_slurmdbd",
                           f"slurmdbd rejected the token signed with the agent's key{key}: "
                           f"{verdict.detail}", **meta)
        return failure("rejected_by_slurmctld",
                       f"slurmctld rejected the token signed with the agent's key{key}: "
                       f"{verdict.detail}", **meta)
    if outcome is Outcome.UNREACHABLE:
        if stage == "slurmdb":
            return failure("slurmdbd_unreachable",
                           f"slurmrestd could not reach slurmdbd: {verdict.detail}", **meta)
        return failure("controller_unreachable",
                       f"slurmrestd could not reach slurmctld: {verdict.detail}", **meta)
    if outcome is Outcome.AUTH_REFUSED:
        return failure("authentication_failure",
                       f"slurmrestd refused the authentication headers on {where}: "
                       f"{verdict.detail}", **meta)
    if outcome in (Outcome.NOT_SERVED, Outcome.NOT_CONFIGURED):
        if stage == "slurmdb":
            return failure("slurmdbd_not_served",
                           f"{where}: {verdict.detail or outcome.value}", **meta)
        return failure("slurmrestd_error", f"{where} is not served: {verdict.detail}", **meta)
    return failure("slurmrestd_error", f"{where}: {verdict.detail}", **meta)


def _find_oserror(exc: BaseException) -> OSError | None:
    """The OSError with an errno at the root of a requests/urllib3 exception chain."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return current
        todo.extend(a for a in getattr(current, "args", ()) if isinstance(a, BaseException))
        for linked in (getattr(current, "reason", None), current.__cause__, current.__context__):
            if isinstance(linked, BaseException):
                todo.append(linked)
    return None


def _is_timeout(exc: BaseException) -> tuple[bool, bool]:
    """(is a timeout, is a connect timeout)."""
    try:
        import requests
    except ImportError:  # pragma: no cover - a declared dependency
        requests = None  # type: ignore[assignment]
    if requests is not None:
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return True, True
        if isinstance(exc, requests.exceptions.Timeout):
            return True, False
    if isinstance(exc, (TimeoutError, socket.timeout, DeadlineExceeded)):
        return True, False
    found = _find_oserror(exc)
    return (found is not None and found.errno == errno.ETIMEDOUT), False


class DeadlineExceeded(Exception):
    """The check's total deadline passed before this call."""


def classify_exception(exc: BaseException, *, stage: Stage, socket_path: str | None = None,
                       timeout: float | None = None, api_version: str | None = None
                       ) -> CheckResult:
    """A failure from an exception raised while talking to slurmrestd at `stage`."""
    sock = socket_path or "the slurmrestd socket"
    meta: dict[str, Any] = {"api_version": api_version}
    is_timeout, on_connect = _is_timeout(exc)
    if is_timeout:
        after = f" after {timeout:g} s" if timeout else ""
        if on_connect:
            return failure("slurmrestd_error",
                           f"slurmrestd did not accept a connection on {sock}{after}",
                           "slurmrestd is overloaded or stuck: restart it and read its journal",
                           **meta)
        if stage == "slurmdb":
            return failure("slurmdbd_unreachable",
                           f"no answer from slurmrestd{after} on a slurmdbd call: slurmdbd "
                           "unreachable or too slow", **meta)
        return failure("controller_unreachable",
                       f"no answer from slurmrestd{after} on a slurmctld call: slurmctld "
                       "unreachable or too slow", **meta)
    found = _find_oserror(exc)
    if found is not None:
        code = found.errno
        if code in (errno.ENOENT, errno.ENOTDIR):
            return failure("socket_missing", f"{sock} does not exist", **meta)
        if code in (errno.EACCES, errno.EPERM):
            return failure("permission_denied", f"permission denied on {sock}", **meta)
        if code == errno.ECONNREFUSED:
            return failure("connection_refused", f"connection refused on {sock}", **meta)
        if code in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
            return failure("slurmrestd_error",
                           f"slurmrestd closed the connection on {sock} "
                           f"({os.strerror(code)})", **meta)
        return failure("slurmrestd_error",
                       f"cannot talk to slurmrestd on {sock}: {os.strerror(code)}", **meta)
    return failure("slurmrestd_error",
                   f"cannot talk to slurmrestd on {sock}: {type(exc).__name__}", **meta)


def scrub(result: CheckResult, secrets_text: Iterable[str]) -> CheckResult:
    """Belt and braces: no token or key text in the result's messages, whatever was echoed."""
    message, hint = result.message, result.hint
    for secret in secrets_text:
        if secret and len(secret) >= 8:
            message = message.replace(secret, "<redacted>")
            hint = hint.replace(secret, "<redacted>")
    if (message, hint) == (result.message, result.hint):
        return result
    return replace(result, message=message, hint=hint)


__all__ = [
    "KNOWN_VERSIONS",
    "REASON_EXIT_CODES",
    "CheckResult",
    "HttpAnswer",
    "Outcome",
    "PingUse",
    "Verdict",
    "accounting_from_slurm_conf",
    "classify_exception",
    "classify_ping",
    "classify_slurm_diag",
    "classify_slurmdb_diag",
    "failure",
    "parse_meta",
    "result_for_verdict",
    "scrub",
]
