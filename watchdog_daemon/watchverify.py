"""The two checks the watchdog runs, on top of check.py.

* `verify_new_key`: before anything is installed, sign a token with the NEW key (held in memory
  only) and make the same authenticated calls as `slurmrestd-access check`. check.run_check reads
  the key from agent.ini's jwt_key path, i.e. the copy we have not installed yet; writing the new
  key to some other file just to check it would put the secret where it does not belong. So this
  uses check.run_check_with_key: the same calls (slurmctld diag, the decoy, slurmdbd diag),
  with the key given in memory.
* `check_agent`: the normal check, exactly as the agent would (agent.ini + the copy).

agent.ini is read again for each check: the agent itself reads it at every restart, and an
administrator may have changed the socket or the token user since the daemon started.
"""

from __future__ import annotations

from typing import Any

from watchdog_daemon.exitcodes import ExitCode
from watchdog_daemon.pipeline import Verdict
from watchdog_daemon.secret import SecretBytes
from watchdog_daemon.watchconfig import WatchConfig

# Check reasons meaning "slurmctld/slurmdbd answered and refused this key": Slurm has not
# loaded it yet. Anything else (unreachable, socket missing...) is a plain failure to verify.
REJECTED_REASONS = frozenset({"rejected_by_slurmctld", "rejected_by_slurmdbd"})


def _verdict(result: Any) -> Verdict:
    details = {"slurm": result.slurm_release, "cluster": result.cluster,
               "api": result.api_version, "accounting": result.accounting}
    return Verdict(
        accepted=bool(result.ok), reason=result.reason, exit_code=int(result.exit_code),
        message=result.message, rejected=result.reason in REJECTED_REASONS,
        details={k: v for k, v in details.items() if v is not None},
    )


def load_settings(config: WatchConfig) -> Any:
    from watchdog_daemon.agentconf import load_agent_settings

    return load_agent_settings(config.agent_ini)


class CheckVerifier:
    """Verifier and AgentCheck for the pipeline, bound to the daemon's config."""

    def __init__(self, config: WatchConfig, *, getter: Any = None) -> None:
        self.config = config
        self._getter = getter

    def _settings(self) -> Any:
        from watchdog_daemon.agentconf import ConfigError

        try:
            return load_settings(self.config)
        except ConfigError as exc:
            raise _ConfigProblem(str(exc)) from None

    def verify_new_key(self, key: SecretBytes) -> Verdict:
        try:
            settings = self._settings()
        except _ConfigProblem as exc:
            return Verdict(False, "config_invalid", ExitCode.CONFIG_INVALID, str(exc))
        from watchdog_daemon import check

        return _verdict(check.run_check_with_key(
            settings, key, timeout=self.config.check_timeout,
            accounting=self.config.accounting,  # type: ignore[arg-type]
            getter=self._getter))

    def check_agent(self) -> Verdict:
        from watchdog_daemon import check

        try:
            settings = self._settings()
        except _ConfigProblem as exc:
            return Verdict(False, "config_invalid", ExitCode.CONFIG_INVALID, str(exc))
        return _verdict(check.run_check(settings, timeout=self.config.check_timeout,
                                        accounting=self.config.accounting,  # type: ignore[arg-type]
                                        getter=self._getter))


class _ConfigProblem(Exception):
    pass
