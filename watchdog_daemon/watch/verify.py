"""The two checks the watchdog runs, on top of check/run.py.

* `verify_new_key`: before anything is installed, sign a token with the NEW key (held in memory
  only) and make the same authenticated calls as `slurmrestd-access check`. check.run_check reads
  the key from agent.ini's jwt_key path, i.e. the copy we have not installed yet; writing the new
  key to some other file just to check it would put the secret where it does not belong. So this
  uses check.run_check_with_key: the same calls (slurmctld diag, the decoy, slurmdbd diag),
  with the key given in memory.
* `check_agent`: the normal check, exactly as the agent would (agent.ini + the copy), without
  the decoy: the verify of this very key sent one seconds before, and every decoy is an
  authentication error line in slurmctld's log.
* `probe_copy`: while Slurm has not reloaded a new key, is the agent's copy (the key the agent
  runs with) still accepted? One authenticated call per daemon still on the old key
  (`/slurm/vX/diag`, `/slurmdb/vX/diag`) with a token signed with the copy, no discovery (the
  version of the last verify), no decoy. Accepted calls leave nothing in Slurm's logs; the
  first refusal says the daemon reloaded. Plain http.client over the unix socket: it runs every
  probe_interval while waiting, so it stays cheap.

agent.ini is read again for each check: the agent itself reads it at every restart, and an
administrator may have changed the socket or the token user since the daemon started.
"""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from watchdog_daemon.exitcodes import ExitCode
from watchdog_daemon.keys.secret import SecretBytes
from watchdog_daemon.watch.config import WatchConfig
from watchdog_daemon.watch.verdict import ProbeResult, Verdict

# Check reasons meaning "slurmctld/slurmdbd answered and refused this key": Slurm has not
# loaded it yet. Anything else (unreachable, socket missing...) is a plain failure to verify.
REJECTED_REASONS = frozenset({"rejected_by_slurmctld", "rejected_by_slurmdbd"})
DAEMONS = ("slurmctld", "slurmdbd")


def _verdict(result: Any) -> Verdict:
    details = {"slurm": result.slurm_release, "cluster": result.cluster,
               "api": result.api_version, "accounting": result.accounting}
    return Verdict(
        accepted=bool(result.ok), reason=result.reason, exit_code=int(result.exit_code),
        message=result.message, rejected=result.reason in REJECTED_REASONS,
        details={k: v for k, v in details.items() if v is not None},
    )


def load_settings(config: WatchConfig) -> Any:
    from watchdog_daemon.config.agentconf import load_installed_agent_settings

    # Per load: an agent upgraded under the daemon is spoken for as it now is.
    return load_installed_agent_settings(config.agent_ini, config.slurmweb_release)


class CheckVerifier:
    """Verifier and AgentCheck for the pipeline, bound to the daemon's config."""

    def __init__(self, config: WatchConfig, *, getter: Any = None) -> None:
        self.config = config
        self._getter = getter
        self.api_version: str | None = None  # of the last verify/check: the probe's version

    def _settings(self) -> Any:
        from watchdog_daemon.config.agentconf import ConfigError

        try:
            return load_settings(self.config)
        except ConfigError as exc:
            raise _ConfigProblem(str(exc)) from None

    def verify_new_key(self, key: SecretBytes) -> Verdict:
        try:
            settings = self._settings()
        except _ConfigProblem as exc:
            return Verdict(False, "config_invalid", ExitCode.CONFIG_INVALID, str(exc))
        from watchdog_daemon.check.run import run_check_with_key

        result = run_check_with_key(
            settings, key, timeout=self.config.check_timeout,
            accounting=self.config.accounting,  # type: ignore[arg-type]
            slurm_conf=self.config.slurm_conf, getter=self._getter)
        self.api_version = result.api_version or self.api_version
        return _verdict(result)

    def check_agent(self) -> Verdict:
        from watchdog_daemon.check.run import run_check

        try:
            settings = self._settings()
        except _ConfigProblem as exc:
            return Verdict(False, "config_invalid", ExitCode.CONFIG_INVALID, str(exc))
        result = run_check(settings, timeout=self.config.check_timeout,
                           accounting=self.config.accounting,  # type: ignore[arg-type]
                           slurm_conf=self.config.slurm_conf, decoy=False,
                           getter=self._getter)
        self.api_version = result.api_version or self.api_version
        return _verdict(result)

    def probe_copy(self, skip: frozenset) -> ProbeResult:
        """Ask the daemons not in `skip` about a token signed with the agent's copy."""
        from watchdog_daemon.check.classify import (
            Outcome,
            classify_slurm_diag,
            classify_slurmdb_diag,
        )
        from watchdog_daemon.check.result import classify_exception, result_for_verdict
        from watchdog_daemon.check.run import probe_socket_path, sign_token, socket_base_url
        from watchdog_daemon.keys.keyfile import KeyFileError, read_key

        try:
            settings = self._settings()
        except _ConfigProblem:
            return ProbeResult(usable=False)
        socket_path = settings.socket_path
        if settings.auth != "jwt" or settings.jwt_mode != "auto" or socket_path is None:
            return ProbeResult(usable=False)
        ask = [d for d in DAEMONS if d not in skip]
        accounting = self._accounting()
        if accounting is False and "slurmdbd" in ask:
            ask.remove("slurmdbd")
        if not ask or self.api_version is None:
            return ProbeResult(usable=False)  # nothing to ask, or no version known: verify
        try:
            key = read_key(settings.jwt_key, allow_group=False)
        except KeyFileError:
            return ProbeResult(usable=False)
        problem = probe_socket_path(socket_path)
        if problem is not None:
            return ProbeResult(error=_verdict(problem))
        headers = {"X-SLURM-USER-NAME": settings.jwt_user,
                   "X-SLURM-USER-TOKEN": sign_token(key, settings.jwt_user,
                                                    settings.jwt_lifespan)}
        base = socket_base_url(socket_path)
        getter = self._getter or _unix_getter(socket_path)
        version = self.api_version
        accepted: set[str] = set()
        refused: set[str] = set()
        error: Verdict | None = None
        for daemon in ask:
            stage = "slurm" if daemon == "slurmctld" else "slurmdb"
            try:
                answer = getter(f"{base}/{stage}/v{version}/diag", headers,
                                self.config.check_timeout)
            except Exception as exc:
                error = error or _verdict(classify_exception(
                    exc, stage=stage, socket_path=str(socket_path),  # type: ignore[arg-type]
                    timeout=self.config.check_timeout, api_version=version))
                continue
            classify = (classify_slurm_diag if daemon == "slurmctld"
                        else classify_slurmdb_diag)
            verdict = classify(answer)
            if verdict.outcome is Outcome.ACCEPTED:
                accepted.add(daemon)
            elif verdict.outcome is Outcome.REJECTED:
                refused.add(daemon)
            elif daemon == "slurmdbd" and accounting is None and verdict.outcome in (
                    Outcome.NOT_SERVED, Outcome.NOT_CONFIGURED):
                continue  # slurm.conf unreadable and slurmrestd says: no accounting
            else:
                if verdict.outcome is Outcome.NOT_SERVED:
                    self.api_version = None  # slurmrestd changed: the next verify finds it
                bad = result_for_verdict(stage, verdict,  # type: ignore[arg-type]
                                         api_version=version)
                if bad is not None:
                    error = error or _verdict(bad)
        return ProbeResult(accepted=frozenset(accepted), refused=frozenset(refused),
                           error=error)

    def _accounting(self) -> bool | None:
        """Whether slurmdbd must accept tokens: True/False, None when slurm.conf cannot tell."""
        from watchdog_daemon.check.run import accounting_expected

        return accounting_expected(self.config.accounting,  # type: ignore[arg-type]
                                   self.config.slurm_conf)


class _ConfigProblem(Exception):
    pass


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _unix_getter(socket_path: Path) -> Any:
    """check.Getter over http.client: a probe every half second must cost little CPU."""
    from watchdog_daemon.check.classify import MAX_BODY_TEXT, HttpAnswer

    def get(url: str, headers: dict[str, str], timeout: float) -> HttpAnswer:
        # url is check.socket_base_url(socket) + path: keep the path only.
        rest = unquote(url.split("://", 1)[1])
        path = rest[len(str(socket_path)):] if rest.startswith(str(socket_path)) else rest
        conn = _UnixHTTPConnection(str(socket_path), timeout)
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            data = response.read()
            content_type = response.getheader("Content-Type", "") or ""
            status = response.status
        finally:
            conn.close()
        text = data.decode("utf-8", errors="replace")
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = None
        return HttpAnswer(status=status, content_type=content_type,
                          text=text[: MAX_BODY_TEXT * 4],
                          body=body if isinstance(body, dict) else None)

    return get
