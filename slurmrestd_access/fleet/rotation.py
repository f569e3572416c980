"""Run the coordinated rotation of one cluster (see rotation_plan for the steps and why).

It runs as one pyinfra FunctionCommand on the cluster's controller and drives the cluster's
other hosts over their own connections: a rollback must act on every host of the cluster after
a failure on any of them, which pyinfra's operation-by-operation model cannot do (a failed host
runs nothing more). Clusters rotate in parallel, each in its controller's greenlet.

Keys never pass through an argument or the output: new keys are generated on the controller by
the host tool; copies travel as stdin of `key install` (keytransfer); only SHA-256 are compared.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any

from slurmrestd_access import privilege
from slurmrestd_access.facts import EXIT_MARK, ToolReport
from slurmrestd_access.fleet import rotation_plan as rp
from slurmrestd_access.hostfail import record_failure
from slurmrestd_access.keytransfer import KeySource, install_key
from slurmrestd_access.settings import Settings
from slurmrestd_access.toolplan import check_args, controller_up

q = shlex.quote


class StepFailed(Exception):
    """A step of the rotation failed; the message says which and why."""


class Rotation:
    def __init__(self, state: Any, hosts: rp.RotationHosts,
                 settings_of: Callable[[str], Settings]) -> None:
        self.state, self.hosts, self.settings_of = state, hosts, settings_of
        self.log: Callable[[str], None] = lambda text: None
        # Hosts whose previous key / copy was kept by THIS run: only those are restored (an
        # older KEY.previous must never come back).
        self.kept_keys: list[str] = []
        self.kept_copies: list[str] = []
        self.rotated = False
        self.generation_unknown = False  # generation gave no answer: done or not, unknown
        self.previous_sha: str | None = None  # the cluster's key before / after generation
        self.new_sha: str | None = None

    # ---- remote primitives -------------------------------------------------------------------

    def _host(self, name: str) -> Any:
        host = self.state.inventory.get_host(name)
        if not host.connected:
            host.connect(raise_exceptions=True)
        return host

    def _run(self, name: str, command: Any, what: str, timeout: int, **kwargs: Any) -> Any:
        """run_shell_command on a host of the cluster; a lost connection (SSHException...)
        becomes a StepFailed that names the step and the host."""
        try:
            host = self._host(name)
            return host.run_shell_command(command, print_output=False, _timeout=timeout,
                                          **privilege.arguments(self.state, host), **kwargs)
        except Exception as exc:
            raise StepFailed(f"{what} on {name}: {describe(exc)}") from None

    def tool(self, name: str, args: tuple[str, ...], as_user: str | None = None,
             timeout: int = 120, what: str = "running slurmrestd-access") -> dict:
        """The host tool's JSON report (with exit_code); a failed tool is data, not an error.

        A host that gave no answer at all (no exit marker: the connection was lost, or the
        command timed out) is reported as such, with `error: no_answer`.
        """
        from pyinfra.api import StringCommand

        fact = ToolReport()
        command = StringCommand(fact.command(self.settings_of(name).tool, args, as_user))
        _ok, output = self._run(name, command, what, timeout)
        lines = list(output.stdout_lines)
        report = fact.process(lines)
        if not any(line.startswith(EXIT_MARK) for line in lines):
            report.setdefault("error", "no_answer")
            report["message"] = report.get("message") or no_answer(name, timeout)
        return report

    def tool_ok(self, name: str, args: tuple[str, ...], what: str) -> dict:
        report = self.tool(name, args, what=what)
        if report["exit_code"] != 0:
            detail = report.get("message") or report.get("error") or no_answer(name, 120)
            raise StepFailed(f"{what} on {name}: {detail}")
        return report

    def shell(self, name: str, script: str, what: str, timeout: int) -> None:
        from pyinfra.api import StringCommand

        ok, output = self._run(name, StringCommand("sh", "-c", q(script)), what, timeout)
        if not ok:
            tail = " ".join(line for line in output.stderr_lines if line.strip())[-300:]
            raise StepFailed(f"{what} on {name}: {tail or no_answer(name, timeout)}")

    def restart_dbd(self, name: str) -> None:
        s = self.settings_of(name)
        unit = s.slurmdbd_unit
        self.shell(name, f"systemctl restart {q(unit)} && " + _wait(
            f"systemctl is-active -q {q(unit)} && ss -Hltn 'sport = :{s.slurmdbd_port}' "
            "| grep -q .", s.restart_wait, f"{unit} did not come back: see journalctl -u {unit}"),
            f"restart {unit}", s.restart_wait + 60)

    def restart_ctld(self, name: str) -> None:
        s = self.settings_of(name)
        unit = s.slurmctld_unit
        self.shell(name, f"systemctl restart {q(unit)} && " + _wait(
            controller_up(s), s.restart_wait,
            f"{unit} did not answer 'scontrol ping' with UP: see journalctl -u {unit}"),
            f"restart {unit}", s.restart_wait + 60)

    def restart_agent(self, name: str) -> None:
        """The agent unit(s) in use, by the rule the deploy and the watchdog use (agentunits):
        an enabled agent that failed for want of its key is restarted too."""
        s = self.settings_of(name)
        args = ("agent", "restart", "--timeout", str(s.restart_wait),
                *(("--unit", s.agent_unit) if s.agent_unit else ()))
        self.tool_ok(name, args, "restart the Slurm-web agent")

    def push_key(self, name: str, dest: str, owner: str, group: str, mode: int,
                 what: str) -> None:
        s = self.settings_of(name)
        ctl = self.settings_of(self.hosts.controller)
        source = KeySource("host", self.hosts.controller, path=ctl.jwt_key_path, tool=ctl.tool,
                           owner=ctl.jwt_key_owner)
        try:
            # Only the key `key rotate` reported leaves the controller, and only it is installed.
            install_key(self.state, self._host(name), source, s.tool, dest, owner, group, mode,
                        expected_sha256=self.new_sha)
        except StepFailed:
            raise
        except Exception as exc:  # OperationError from keytransfer: names paths, never keys
            raise StepFailed(f"{what} on {name}: {describe(exc)}") from None

    def check(self, name: str, key: str | None = None) -> dict:
        s = self.settings_of(name)
        return self.tool(name, check_args(s, key), as_user=None if key else s.agent_user,
                         timeout=s.check_timeout * 4 + 30, what="the connect check")

    # ---- the rotation ------------------------------------------------------------------------

    def precheck(self) -> None:
        for name in self.hosts.agent_hosts:
            report = self.check(name)
            problem = rp.judge_new_key(report["exit_code"], report.get("reason"),
                                       report.get("message"), "before the rotation")
            if problem:
                raise StepFailed(f"{problem}: the cluster is not working; run the deploy first")

    def rotate(self) -> tuple[str, str]:
        h = self.hosts
        ctl = self.settings_of(h.controller)
        report = self.tool(h.controller, rp.rotate_args(ctl), what="generating the new key")
        if report["exit_code"] != 0:
            # No answer at all: the key may have been replaced before the connection broke.
            self.generation_unknown = report.get("error") == "no_answer"
            raise StepFailed(f"generating the new key on {h.controller}: {report['message']}"
                             if self.generation_unknown else
                             f"generating the new key on {h.controller}: "
                             f"{report.get('message') or report.get('error')}")
        self.rotated = True
        self.kept_keys.append(h.controller)
        new, old = report["sha256"], report["previous_sha256"]
        self.previous_sha, self.new_sha = old, new
        self.log(f"new key {new[:12]} (previous {old[:12]}) on {h.controller}")
        for name in h.other_key_hosts:
            s = self.settings_of(name)
            self.tool_ok(name, rp.keep_key_args(s), "keeping the previous key")
            self.kept_keys.append(name)
            self.push_key(name, s.jwt_key_path, s.jwt_key_owner, s.jwt_key_group,
                          s.jwt_key_mode, "installing the new key")
        for name in h.agent_hosts:
            self.tool_ok(name, rp.keep_copy_args(self.settings_of(name)),
                         "keeping the agent's previous copy")
            self.kept_copies.append(name)
        self.restart_daemons()
        for name in h.agent_hosts:
            self.sync_copy(name)
        for name in h.agent_hosts:
            s = self.settings_of(name)
            old_check = self.check(name, key=rp.previous_path(s.agent_key_path))
            problem = rp.judge_old_key(old_check["exit_code"], old_check.get("reason"))
            if problem:
                raise StepFailed(f"{problem} (checked on {name})")
            self.prove(name, "by slurmctld and slurmdbd")
            self.restart_agent(name)
            self.prove(name, "after the agent restart")
        self.forget_previous()
        return old, new

    def forget_previous(self) -> None:
        """The rotation is proven: no host keeps the previous key any longer (a secret that
        still opens tokens issued before). A host that cannot remove it is said, not fatal."""
        for name in dict.fromkeys([*self.kept_keys, *self.kept_copies]):
            s = self.settings_of(name)
            paths = ([s.jwt_key_path] if name in self.kept_keys else []) + \
                ([s.agent_key_path] if name in self.kept_copies else [])
            try:
                self.shell(name, rp.forget_script(paths), "removing the previous key", 60)
            except Exception as exc:
                self.log(f"WARNING: {describe(exc)}: remove {rp.PREVIOUS_DIR}/* on {name} by "
                         "hand")

    def restart_daemons(self) -> None:
        for name in self.hosts.dbd_hosts:
            self.restart_dbd(name)
        for name in self.hosts.ctld_restart_order or (self.hosts.controller,):
            self.restart_ctld(name)

    def sync_copy(self, name: str) -> None:
        s = self.settings_of(name)
        if self.hosts.agent_holds_key(name):
            self.tool_ok(name, rp.local_copy_args(s), "syncing the agent's copy")
        else:
            self.push_key(name, s.agent_key_path, s.agent_user, s.agent_group,
                          s.agent_key_mode, "syncing the agent's copy")

    def prove(self, name: str, when: str) -> None:
        report = self.check(name)
        problem = rp.judge_new_key(report["exit_code"], report.get("reason"),
                                   report.get("message"), when)
        if problem:
            raise StepFailed(f"{problem} (checked on {name})")

    def rollback(self) -> list[str]:
        """Every host back onto its previous key; returns what could not be done, each naming
        the step and the host."""
        problems: list[str] = []

        def attempt(what: str, name: str, action: Callable[[], Any]) -> None:
            try:
                action()
            except StepFailed as exc:
                problems.append(str(exc))
            except Exception as exc:  # connection lost etc.: go on with the other hosts
                problems.append(f"{what} on {name}: {describe(exc)}")

        h = self.hosts
        for name in self.kept_keys:
            s = self.settings_of(name)
            attempt("restoring the previous key", name,
                    lambda n=name, s=s: self.tool_ok(n, rp.restore_key_args(s),
                                                     "restoring the previous key"))
        for name in h.dbd_hosts:
            attempt("restarting slurmdbd", name, lambda n=name: self.restart_dbd(n))
        for name in h.ctld_restart_order or (h.controller,):
            attempt("restarting slurmctld", name, lambda n=name: self.restart_ctld(n))
        for name in h.agent_hosts:
            s = self.settings_of(name)
            if name in self.kept_copies:
                attempt("restoring the agent's copy", name,
                        lambda n=name, s=s: self.tool_ok(n, rp.restore_copy_args(s),
                                                         "restoring the agent's copy"))
            attempt("restarting the Slurm-web agent", name, lambda n=name: self.restart_agent(n))
            attempt("checking after the rollback", name,
                    lambda n=name: self.prove(n, "after the rollback"))
        return problems

    def holdings(self) -> dict[str, str | None]:
        """`host:path` -> the SHA-256 each key host's key and each agent copy has now (None:
        missing, or the host did not answer): what to set right by hand after a rollback."""
        found: dict[str, str | None] = {}
        paths = [(n, self.settings_of(n).jwt_key_path) for n in self.hosts.key_hosts]
        paths += [(n, self.settings_of(n).agent_key_path) for n in self.hosts.agent_hosts]
        for name, path in paths:
            try:
                report = self.tool(name, ("key", "fingerprint", "--path", path), timeout=60)
                found[f"{name}:{path}"] = report.get("sha256") if report["exit_code"] == 0 \
                    else None
            except Exception:  # unreachable: said as such in the message
                found[f"{name}:{path}"] = None
        return found


def no_answer(name: str, timeout: int) -> str:
    """Why a step failed when the host said nothing: never an empty reason."""
    return (f"no answer from {name} (the connection was lost, {name} went down, or the "
            f"step ran over its {timeout} s)")


def describe(exc: BaseException) -> str:
    """An exception as a reason: its type (SSHException, OSError...) and message, never
    empty. Exceptions here name hosts, paths and steps, never key material."""
    text = str(exc).strip()
    if isinstance(exc, StepFailed) or type(exc).__name__ == "OperationError":
        return text or "failed without a message"
    return f"{type(exc).__name__}: {text}" if text else f"{type(exc).__name__} (no message)"


def _wait(condition: str, seconds: int, failure: str) -> str:
    """A grouped shell loop, so that `restart && WAIT` waits only after a successful restart."""
    return (f"{{ i=0; until {condition}; do i=$((i+1)); if [ $i -ge {seconds * 2} ]; then "
            f"echo {q(failure)} >&2; exit 1; fi; sleep 0.5; done; }}")


def rotate_cluster(state: Any, host: Any, hosts: rp.RotationHosts,
                   settings_of: Callable[[str], Settings]) -> bool:
    """FunctionCommand body, on the cluster's controller. False (and a message) on failure."""
    from pyinfra import logger

    rotation = Rotation(state, hosts, settings_of)
    rotation.log = lambda text: host.log_styled(text, log_func=logger.info)
    try:
        rotation.precheck()
    except StepFailed as exc:
        return record_failure(host, f"rotation of cluster {hosts.cluster} not started: {exc}")
    try:
        old, new = rotation.rotate()
    except Exception as exc:  # anything after the new key exists must end in a rollback
        why = describe(exc)
        if not rotation.rotated and rotation.generation_unknown:
            # Restoring KEY.previous could bring back an older key: nothing is rolled back.
            ctl = settings_of(hosts.controller)
            return record_failure(
                host, f"rotation of cluster {hosts.cluster} failed: {why}; the key on "
                f"{hosts.controller} may or may not have been replaced (nothing was rolled "
                f"back). To do by hand: once {hosts.controller} answers, run the deploy for the "
                f"cluster (pyinfra -y INVENTORY slurmrestd_access.deploys.slurmrestd_access "
                f"--limit "
                f"{hosts.cluster}): it puts the controller's key {ctl.jwt_key_path} on every "
                "host and restarts what reads it")
        if not rotation.rotated:
            return record_failure(
                host, f"rotation of cluster {hosts.cluster} failed: {why}; nothing was changed")
        host.log_styled(f"rotation of cluster {hosts.cluster} failed: {why}; rolling back",
                        fg="red", log_func=logger.error)
        problems = rotation.rollback()
        holdings = rotation.holdings() if problems else {}
        return record_failure(host, rp.failure_message(
            hosts.cluster, why, problems, holdings=holdings, previous=rotation.previous_sha,
            new=rotation.new_sha))
    host.log_styled(
        f"cluster {hosts.cluster}: key rotated {old[:12]} -> {new[:12]}; previous key refused "
        "by slurmctld, new key accepted, agent restarted and accepted", fg="green",
        log_func=logger.info)
    return True
