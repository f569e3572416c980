"""The connect check's result (pure): `CheckResult`, with each failure's reason, exit code and hint.

`failure` makes one for a reason (REASON_EXIT_CODES), `result_for_verdict` from what
`watchdog_daemon.check.classify` read of an answer, `classify_exception` from an exception raised
while talking to slurmrestd; `scrub` keeps token and key text out of its messages.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from watchdog_daemon.check.classify import Outcome, Stage, Verdict
from watchdog_daemon.exitcodes import ExitCode


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
    # The agent's release the check spoke for (slurmweb.AgentRelease.series; None: not known).
    agent_series: int | None = None
    agent_release: str | None = None  # its name, "Slurm-web 5.2.0"

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
            "slurmweb": self.agent_release,
            "line": self.success_line() if self.ok else None,
        }

    def success_line(self) -> str:
        """The line the agent's own connect-check prints, in its release's words (Slurm-web
        5.x's `slurm-web-connect-check`; 6.x's `slurm-web connect-check`)."""
        slurm, cluster = self.slurm_release or "unknown", self.cluster or "unknown"
        if self.agent_series is not None and self.agent_series >= 6:
            return (f"✅ connection successful! (cluster: {cluster}, slurm: {slurm}, "
                    f"api: {self.api_version or 'unknown'})")
        return f"✅ connection successful (slurm: {slurm}, cluster: {cluster})"

    def error_line(self) -> str:
        return f"ERROR: {self.public_reason}: {self.message} — {self.hint}"


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
    "slurmweb_incompatible": "install a Slurm-web release that speaks a REST API version this "
                             "Slurm serves (docs/releases.md), or a Slurm that serves the "
                             "agent's",
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
    "slurmweb_incompatible": ExitCode.SLURMWEB_INCOMPATIBLE,
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

# Slurm 22.05's handlers (openapi/v0.0.38: diag, ping, jobs, slurmdb diag...) put the return
# value of the Slurm API call in errors[], which is SLURM_ERROR (-1) whatever failed, and drop
# errno, where the reason is (measured on 22.05.8: a token slurmctld refuses and a stopped
# slurmctld both answer HTTP 500 "Unspecified error" [-1]; 24.11 answers 1007 for the first).
# Nothing in the answer tells them apart, so it stays slurmrestd_error, with this hint.
_UNSPECIFIED_HINT = (
    "this slurmrestd reports any failed call to {daemon} as \"Unspecified error\" [-1] "
    "without the reason (Slurm 22.05 does): a key copy that differs from the key {daemon} "
    "loaded, and an unreachable {daemon}, answer alike. {daemon}'s log says \"authentication "
    "error\" for the first; compare `slurmrestd-access key fingerprint --path COPY` with the "
    "key's on the {daemon} host, and check {reach}"
)

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
    if verdict.unspecified:
        daemon, reach = (("slurmdbd", "`systemctl status slurmdbd`") if stage == "slurmdb"
                         else ("slurmctld", "`scontrol ping`"))
        return failure("slurmrestd_error", f"{where}: {verdict.detail}",
                       _UNSPECIFIED_HINT.format(daemon=daemon, reach=reach), **meta)
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
    "REASON_EXIT_CODES",
    "CheckResult",
    "classify_exception",
    "failure",
    "result_for_verdict",
    "scrub",
]
