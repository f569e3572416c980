"""The connect check: prove that slurmctld (and slurmdbd) accept a token signed with the agent key.

A 200 on /ping proves nothing (measured on Slurm 24.11.5; docs/check.md): slurmrestd answers it
with `pinged: DOWN` for a token signed with another key. So the check makes authenticated calls
whose success needs the daemons to accept the token: `GET /slurm/vX/diag` (slurmctld) and `GET
/slurmdb/vX/diag` (slurmdbd). To catch a slurmrestd that does not make the daemons check tokens at
all, it also sends one token signed with a random key, which must be refused (the "decoy").

This module does the I/O (socket, HTTP, key file, signing): `run_check`, `run_check_with_key`.
The pure part, answers in and a `CheckResult` out, is `watchdog_daemon.check.classify` and
`watchdog_daemon.check.result`.
"""

from __future__ import annotations

import os
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from watchdog_daemon.check.classify import (
    ACCOUNTING_KEY,
    DEFAULT_SLURM_CONF,
    KNOWN_VERSIONS,
    MAX_BODY_TEXT,
    Accounting,
    HttpAnswer,
    Outcome,
    PingUse,
    Stage,
    accounting_from_setting,
    classify_ping,
    classify_slurm_diag,
    classify_slurmdb_diag,
)
from watchdog_daemon.check.result import (
    _HINTS,
    CheckResult,
    DeadlineExceeded,
    classify_exception,
    failure,
    result_for_verdict,
    scrub,
)
from watchdog_daemon.config.atomicwrite import ChangeError
from watchdog_daemon.config.configless import slurm_conf_to_read
from watchdog_daemon.config.slurmconf import configured_value
from watchdog_daemon.exitcodes import ExitCode
from watchdog_daemon.keys.keyfile import KeyFileError, read_key
from watchdog_daemon.keys.secret import SecretBytes


def probe_socket_path(path: Path) -> CheckResult | None:
    """Socket-level failures that can be told before connecting; None when it looks fine."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        parent = path.parent
        extra = "" if parent.is_dir() else f" (nor does its directory {parent})"
        return failure("socket_missing", f"slurmrestd socket {path} does not exist{extra}")
    except PermissionError:
        return failure("permission_denied",
                       f"permission denied on slurmrestd socket {path} (a parent directory "
                       "is not searchable by this user)")
    except OSError as exc:
        return failure("slurmrestd_error",
                       f"cannot look at slurmrestd socket {path}: {os.strerror(exc.errno or 0)}")
    if not stat.S_ISSOCK(st.st_mode):
        return failure("socket_missing", f"{path} exists but is not a socket",
                       f"remove it and restart slurmrestd; {_HINTS['socket_missing']}")
    return None


def probe_connect(path: Path, timeout: float) -> CheckResult | None:
    """Open and close one connection to the socket; a failure classified, else None."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(str(path))
    except TimeoutError:
        # Not Slurm's fault: slurmrestd itself does not accept connections (backlog full, stuck).
        return failure("slurmrestd_error",
                       f"slurmrestd did not accept a connection on {path} within {timeout:g} s",
                       "slurmrestd is overloaded or stuck: restart it and read its journal")
    except OSError as exc:
        return classify_exception(exc, stage="discover", socket_path=str(path), timeout=timeout)
    finally:
        sock.close()
    return None


# ---------------------------------------------------------------------------------------------
# I/O


def import_dependencies() -> None:
    """Import what a check needs now (see privdrop: before dropping root)."""
    import jwt  # noqa: F401
    import requests  # noqa: F401
    import requests_unixsocket  # noqa: F401


def sign_token(key: SecretBytes, user: str, lifespan: int, *, now: float | None = None) -> str:
    """An HS256 token exactly as the Slurm-web agent makes one (whole key file, raw bytes)."""
    import jwt

    iat = int(time.time() if now is None else now)
    return jwt.encode({"iat": iat, "exp": iat + lifespan, "sun": user}, key.reveal(),
                      algorithm="HS256")


def socket_base_url(path: Path) -> str:
    return "http+unix://" + quote(str(path), safe="")


Getter = Callable[[str, dict[str, str], float], HttpAnswer]


def _requests_getter(session: Any) -> Getter:
    def get(url: str, headers: dict[str, str], timeout: float) -> HttpAnswer:
        response = session.get(url, headers=headers, timeout=(timeout, timeout),
                               allow_redirects=False)
        try:
            body = response.json()
        except ValueError:
            body = None
        return HttpAnswer(
            status=response.status_code,
            content_type=response.headers.get("Content-Type", ""),
            text=response.text[: MAX_BODY_TEXT * 4],
            body=body if isinstance(body, dict) else None,
        )
    return get


def _key_failure(settings: Any) -> CheckResult | None:
    if settings.auth != "jwt" or settings.jwt_mode != "auto":
        return failure(
            "config_invalid",
            f"agent.ini sets auth={settings.auth}, jwt_mode={settings.jwt_mode}: this check "
            "covers auth=jwt with jwt_mode=auto (the agent signs its own tokens)",
            "set auth = jwt and jwt_mode = auto in [slurmrestd]",
        )
    if settings.socket_path is None:
        return failure("config_invalid",
                       f"[slurmrestd] uri {settings.uri} is not a unix:// socket URI",
                       "set uri = unix:///run/slurmrestd/slurmrestd.socket")
    return None


def accounting_expected(accounting: Accounting, slurm_conf: str | os.PathLike[str]
                        ) -> bool | None:
    """True/False when known, None when slurm.conf cannot tell (then probe).

    slurm.conf is read as slurmctld reads it, Include lines followed: accounting configured in
    an included file is accounting all the same.
    """
    if accounting == "yes":
        return True
    if accounting == "no":
        return False
    try:
        # On a configless host, the copy of the controller's file that Slurm itself reads.
        value = configured_value(slurm_conf_to_read(os.fspath(slurm_conf)), ACCOUNTING_KEY)
    except (ChangeError, OSError):
        return None
    return accounting_from_setting(value)


def run_check(settings: Any, *, timeout: float = 10.0, accounting: Accounting = "auto",
              slurm_conf: str | os.PathLike[str] = DEFAULT_SLURM_CONF,
              total_timeout: float | None = None, decoy: bool = True,
              getter: Getter | None = None, agent_discovery: bool = True) -> CheckResult:
    """Run the connect check with the agent's settings (an `agentconf.AgentSettings`).

    Reads the agent's key copy under the agent-copy rule (owner only), then as
    `run_check_with_key`. `timeout` bounds each call; `total_timeout` (default 3 x timeout)
    bounds the whole check. `decoy` also sends a token signed with a random key, which must be
    refused. `getter` replaces the HTTP client (tests).
    """
    problem = _key_failure(settings)
    if problem is not None:
        return problem
    try:
        key = read_key(settings.jwt_key, allow_group=False)
    except KeyFileError as exc:
        return failure(exc.reason, exc.message, exc.hint)
    return run_check_with_key(settings, key, timeout=timeout, accounting=accounting,
                              slurm_conf=slurm_conf, total_timeout=total_timeout, decoy=decoy,
                              getter=getter, agent_discovery=agent_discovery)


def run_check_with_key(settings: Any, key: SecretBytes, *, timeout: float = 10.0,
                       accounting: Accounting = "auto",
                       slurm_conf: str | os.PathLike[str] = DEFAULT_SLURM_CONF,
                       total_timeout: float | None = None, decoy: bool = True,
                       getter: Getter | None = None, agent_discovery: bool = True
                       ) -> CheckResult:
    """The check with a key given in memory (the watchdog verifies a new key before copying it).

    The key's length is checked here too (HS256 needs >= 32 bytes; PyJWT only warns).
    """
    from watchdog_daemon.keys.keyfile import MIN_KEY_BYTES

    started = time.monotonic()
    deadline = started + (total_timeout if total_timeout is not None else 3 * timeout)
    problem = _key_failure(settings)
    if problem is not None:
        return problem
    if len(key) == 0:
        return failure("key_empty", f"the key {key} is empty",
                       "use a key of at least 32 random bytes")
    if len(key) < MIN_KEY_BYTES:
        return failure("key_too_short", f"the key {key} has {len(key)} bytes, fewer than "
                       f"{MIN_KEY_BYTES}", "use a key of at least 32 random bytes")

    socket_path: Path = settings.socket_path
    token = sign_token(key, settings.jwt_user, settings.jwt_lifespan)
    secret_texts = [token, key.reveal().decode("latin-1"), key.reveal().hex()]
    try:
        result = _run_with_token(
            settings, key, token, socket_path, timeout=timeout, deadline=deadline,
            accounting=accounting, slurm_conf=slurm_conf, decoy=decoy, getter=getter,
            agent_discovery=agent_discovery,
        )
    except Exception as exc:  # a bug must still give a clean, secret-free result
        result = failure("internal_error", f"unexpected {type(exc).__name__} during the check")
    if not result.cluster and result.ok:
        # 22.05 reports no cluster: fall back to the agent's own name, as its line would show.
        result = replace(result, cluster=settings.cluster)
    release = getattr(settings, "release", None)
    if release is not None:
        result = replace(result, agent_series=release.series, agent_release=release.name)
    return scrub(result, secret_texts)


def _run_with_token(settings: Any, key: SecretBytes, token: str, socket_path: Path, *,
                    timeout: float, deadline: float, accounting: Accounting,
                    slurm_conf: str | os.PathLike[str], decoy: bool,
                    getter: Getter | None, agent_discovery: bool) -> CheckResult:
    probe = probe_socket_path(socket_path)
    if probe is not None:
        return probe

    session = None
    if getter is None:
        # Connect once ourselves first: the errno tells socket problems apart precisely, and
        # requests-unixsocket leaves the socket of a failed connect open until GC.
        refused = probe_connect(socket_path, min(timeout, max(deadline - time.monotonic(), 0.01)))
        if refused is not None:
            return refused
        import requests_unixsocket

        session = requests_unixsocket.Session()
        getter = _requests_getter(session)
    base = socket_base_url(socket_path)
    headers = {"X-SLURM-USER-NAME": settings.jwt_user, "X-SLURM-USER-TOKEN": token}
    # As the agent: its versions, strictly. Otherwise (a Slurm older than the agent supports,
    # kept on purpose for other REST clients): any version the release serves, newest first.
    versions = tuple(settings.api_versions) if agent_discovery else KNOWN_VERSIONS
    sock_text = str(socket_path)

    def call(stage: Stage, path: str, hdrs: dict[str, str], version: str | None
             ) -> HttpAnswer | CheckResult:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return classify_exception(DeadlineExceeded(), stage=stage, socket_path=sock_text,
                                      api_version=version)
        this_timeout = min(timeout, remaining)
        try:
            return getter(base + path, hdrs, this_timeout)
        except Exception as exc:
            return classify_exception(exc, stage=stage, socket_path=sock_text,
                                      timeout=this_timeout, api_version=version)

    try:
        # 1. The API version, discovered as the agent discovers it: its list, /ping, in order.
        api_version = None
        skipped: list[str] = []
        for version in versions:
            answer = call("discover", f"/slurm/v{version}/ping", headers, version)
            if isinstance(answer, CheckResult):
                return answer
            use, why = classify_ping(answer, as_agent=agent_discovery)
            if use is PingUse.REFUSED:
                return failure("authentication_failure",
                               f"slurmrestd refused the agent's request on /slurm/v{version}/ping "
                               f"({why}); the agent stops its API discovery there",
                               api_version=version)
            if use is PingUse.USE:
                api_version = version
                break
            skipped.append(f"v{version}: {why}")
        if api_version is None:
            return _no_api_version(versions, skipped, sock_text, call, headers, agent_discovery,
                                   settings)

        # 2. slurmctld must accept the token: an authenticated call with that version.
        answer = call("slurm", f"/slurm/v{api_version}/diag", headers, api_version)
        if isinstance(answer, CheckResult):
            return answer
        verdict = classify_slurm_diag(answer)
        bad = result_for_verdict("slurm", verdict, api_version=api_version,
                                 fingerprint=key.fingerprint)
        if bad is not None:
            return bad
        release, cluster = verdict.release, verdict.cluster

        def with_meta(result: CheckResult, accounting_used: bool | None = None) -> CheckResult:
            return replace(result, slurm_release=result.slurm_release or release,
                           cluster=result.cluster or cluster, api_version=api_version,
                           accounting=accounting_used)

        # 3. The decoy: a token signed with a random key must be refused.
        if decoy:
            decoy_token = sign_token(SecretBytes(os.urandom(32)), settings.jwt_user,
                                     settings.jwt_lifespan)
            decoy_headers = {"X-SLURM-USER-NAME": settings.jwt_user,
                             "X-SLURM-USER-TOKEN": decoy_token}
            answer = call("decoy", f"/slurm/v{api_version}/diag", decoy_headers, api_version)
            if isinstance(answer, CheckResult):
                return with_meta(answer)
            bad = result_for_verdict("decoy", classify_slurm_diag(answer),
                                     api_version=api_version)
            if bad is not None:
                return with_meta(bad)

        # 4. slurmdbd, when accounting is used (or cannot be ruled out).
        expected = accounting_expected(accounting, slurm_conf)
        used: bool | None = False
        if expected is not False:
            answer = call("slurmdb", f"/slurmdb/v{api_version}/diag", headers, api_version)
            if isinstance(answer, CheckResult):
                return with_meta(answer, True)
            dbd = classify_slurmdb_diag(answer)
            if expected is None and dbd.outcome in (Outcome.NOT_SERVED, Outcome.NOT_CONFIGURED):
                used = False  # slurm.conf unreadable and slurmrestd says: no accounting
            else:
                used = True
                bad = result_for_verdict("slurmdb", dbd, api_version=api_version,
                                         fingerprint=key.fingerprint)
                if bad is not None:
                    return with_meta(bad, True)

        return CheckResult(ok=True, reason="ok", exit_code=ExitCode.OK,
                           message="connection successful", hint="", slurm_release=release,
                           cluster=cluster, api_version=api_version, accounting=used)
    finally:
        if session is not None:
            session.close()


def _no_api_version(versions: tuple[str, ...], skipped: list[str], sock_text: str,
                    call: Callable[..., HttpAnswer | CheckResult],
                    headers: dict[str, str], agent_discovery: bool,
                    settings: Any = None) -> CheckResult:
    """The agent would fail here: say which versions slurmrestd does serve (asked only now).

    When the versions are the installed release's own (not agent.ini's choice), it is that
    release that cannot work with this Slurm: SLURMWEB_INCOMPATIBLE, naming both."""
    if not agent_discovery:
        return failure("no_api_version", f"slurmrestd on {sock_text} answers none of the REST "
                       f"API versions Slurm releases serve ({'; '.join(skipped)})")
    served = []
    for version in KNOWN_VERSIONS:
        if version in versions:
            continue
        answer = call("discover", f"/slurm/v{version}/ping", headers, version)
        if isinstance(answer, CheckResult):
            break  # out of time or connection: report what is known
        if answer.status != 404:
            served.append(version)
    serves = (f"it serves {', '.join(served)}" if served
              else "it serves none of the versions Slurm releases know")
    release = getattr(settings, "release", None)
    if release is not None and not settings.api_versions_from_agent_ini:
        from watchdog_daemon.config.slurmweb import incompatible_message, remedy

        served_sorted = sorted(served, key=lambda v: [int(p) for p in v.split(".")])
        return failure("slurmweb_incompatible",
                       incompatible_message(release, versions, served_sorted,
                                            f"slurmrestd on {sock_text}"),
                       remedy(release, versions, served_sorted))
    if release is not None and not release.discovers:
        # 4.x/5.x have no `versions` (they refuse it at start): their one key is `version`.
        hint = (f"set agent.ini's [slurmrestd] version to one this slurmrestd serves, or remove "
                f"it ({release.name}'s default is {release.default_api_versions()[0]})")
    else:
        hint = ("Slurm-web's agent needs REST API 0.0.41 or later (Slurm 24.05 and later); list "
                "in agent.ini's [slurmrestd] versions (one per line) only versions the agent "
                "supports")
    return failure(
        "no_api_version",
        f"slurmrestd on {sock_text} answers none of the REST API versions the agent tries "
        f"({'; '.join(skipped)}): {serves}",
        hint,
    )


__all__ = [
    "probe_connect",
    "probe_socket_path",
    "run_check",
    "run_check_with_key",
    "sign_token",
]
