"""The connect check's answers read (pure): what slurmrestd answered, as an Outcome or a PingUse.

A 200 on /ping proves nothing (measured on Slurm 24.11.5; docs/check.md): slurmrestd answers it
with `pinged: DOWN` for a token signed with another key. So the check makes authenticated calls
whose success needs the daemons to accept the token: `GET /slurm/vX/diag` (slurmctld) and `GET
/slurmdb/vX/diag` (slurmdbd), and one decoy token signed with a random key, which must be refused.

This module has no I/O: `classify_ping`, `classify_slurm_diag`, `classify_slurmdb_diag`,
`parse_meta` and `accounting_from_slurm_conf` read observed answers (and slurm.conf's text);
`watchdog_daemon.check.result` turns them into a `CheckResult`; `watchdog_daemon.check.run`
makes the calls.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from watchdog_daemon.config.slurmparse import last_value

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
    # Every entry of errors[] is SLURM_ERROR (-1), "Unspecified error": the answer does not say
    # why the call failed (Slurm 22.05: see check/result.py).
    unspecified: bool = False


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
        return Verdict(outcome, detail, release, cluster,
                       unspecified=bool(errors) and all(num == -1 for num, _ in errors))

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


ACCOUNTING_KEY = "AccountingStorageType"


def accounting_from_setting(value: str | None) -> bool:
    """Whether an AccountingStorageType value sends accounting to slurmdbd."""
    return value is not None and "slurmdbd" in value.lower()


def accounting_from_slurm_conf(text: str) -> bool:
    """Whether a slurm.conf without Include lines sends accounting to slurmdbd (read as Slurm
    reads it: the last AccountingStorageType wins). Raises ConfigParseError where Slurm would."""
    return accounting_from_setting(last_value({"slurm.conf": text}, "slurm.conf",
                                              ACCOUNTING_KEY))


__all__ = [
    "ACCOUNTING_KEY",
    "KNOWN_VERSIONS",
    "HttpAnswer",
    "Outcome",
    "PingUse",
    "Verdict",
    "accounting_from_setting",
    "accounting_from_slurm_conf",
    "classify_ping",
    "classify_slurm_diag",
    "classify_slurmdb_diag",
    "parse_meta",
]
