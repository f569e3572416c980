"""What a coordinated key rotation does on which host of one cluster, and how it is judged. Pure.

Order (each host's previous key is kept on that host, so a rollback needs no key from anywhere
else, in root's own 0700 directory STATE_DIR/previous: never beside the key, where the account
owning the key's directory could replace it and steer the proof or the rollback):
  1. controller: `key rotate` (new key generated there, the old one kept)
  2. other key hosts (slurmdbd): keep their key, get the new one by hash
  3. agent hosts: keep the agent's copy
  4. restart slurmdbd, wait until it listens; restart slurmctld, wait for `scontrol ping` UP
     (high availability: each backup controller, then the primary, one at a time, each
     waiting until every controller is UP).
     A restart, not `scontrol reconfigure`: reconfigure reloads the key on 24.11 but not on
     22.05 (measured on 24.11.5 and 22.05.8), and slurmdbd needs a restart anyway.
  5. agent copy synced to the new key
  6. proof: the previous key is refused by slurmctld (check --key COPY.previous, exit 30), the
     new copy is accepted (check as the agent user, exit 0)
  7. restart the agent, prove again as the agent does
  8. the kept keys are removed (and a KEY.previous left beside a key by a version before 0.9)
Any failure after step 1 rolls every host back onto its kept key, restarts the daemons and the
agent onto it, and proves that the previous key works again; the kept keys stay, for the next
rotation or the deploy to converge from, until a rotation succeeds.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from urllib.parse import quote

from slurmrestd_access.cluster import ClusterPlan
from slurmrestd_access.settings import Settings

# The tool's own state on each host: root's, 0700 (`key rotate|sync --private-dir`).
STATE_DIR = "/var/lib/slurmrestd-access"
PREVIOUS_DIR = STATE_DIR + "/previous"
LEGACY_SUFFIX = ".previous"
# slurmrestd-access check's exit codes: 30 = slurmctld refused the token; 31/33 = slurmctld
# accepted it and only slurmdbd refused it / could not be reached.
REJECTED_BY_SLURMCTLD = 30
PASSED_SLURMCTLD = (0, 31, 33)


def previous_path(path: str) -> str:
    """Where a host keeps the key at `path` during a rotation: one flat name per path."""
    return f"{PREVIOUS_DIR}/{quote(path, safe='')}"


def legacy_previous_path(path: str) -> str:
    """Where versions before 0.9 kept it: beside the key, in a directory `slurm` may own."""
    return path + LEGACY_SUFFIX


@dataclass(frozen=True)
class RotationHosts:
    cluster: str
    controller: str
    other_key_hosts: tuple[str, ...]  # slurmdbd hosts (and further controllers) but the first
    dbd_hosts: tuple[str, ...]
    agent_hosts: tuple[str, ...]
    key_hosts: tuple[str, ...]  # every host whose daemons load the key, controller first
    # slurmctld hosts in the order they are restarted: backups first, the primary last
    # (ClusterPlan.controller_restart_order). Empty: the controller alone (older callers).
    ctld_restart_order: tuple[str, ...] = ()

    def agent_holds_key(self, host: str) -> bool:
        """The agent host also holds Slurm's key: its copy is made locally, not pushed."""
        return host in self.key_hosts


def rotation_hosts(plan: ClusterPlan) -> RotationHosts:
    key_hosts = tuple(plan.hosts_needing_key())
    return RotationHosts(
        cluster=plan.name,
        controller=plan.key_origin,
        other_key_hosts=tuple(h for h in key_hosts if h != plan.key_origin),
        dbd_hosts=tuple(plan.dbd_hosts),
        agent_hosts=tuple(plan.rest_hosts),
        key_hosts=key_hosts,
        ctld_restart_order=tuple(plan.controller_restart_order()),
    )


def rotate_args(s: Settings) -> tuple[str, ...]:
    return ("key", "rotate", "--path", s.jwt_key_path, "--keep-previous",
            previous_path(s.jwt_key_path), "--private-dir", "--owner", s.jwt_key_owner,
            "--group", s.jwt_key_group, "--mode", f"{s.jwt_key_mode:04o}")


def keep_key_args(s: Settings) -> tuple[str, ...]:
    """Keep a key host's current key in root's state directory."""
    return ("key", "sync", "--source", s.jwt_key_path, "--dest", previous_path(s.jwt_key_path),
            "--owner", "root", "--group", "root", "--mode", "0600", "--private-dir")


def restore_key_args(s: Settings) -> tuple[str, ...]:
    # A link planted at the key (by the account owning its directory) is replaced, not
    # followed: the rollback puts a real key back.
    return ("key", "sync", "--source", previous_path(s.jwt_key_path), "--dest", s.jwt_key_path,
            "--owner", s.jwt_key_owner, "--group", s.jwt_key_group, "--mode",
            f"{s.jwt_key_mode:04o}", "--replace-link")


def keep_copy_args(s: Settings) -> tuple[str, ...]:
    """Keep the agent's current copy in root's state directory (signs the old-key proof)."""
    return ("key", "sync", "--source", s.agent_key_path, "--dest",
            previous_path(s.agent_key_path), "--owner", "root", "--group", "root",
            "--mode", "0600", "--private-dir")


def forget_script(paths: list[str]) -> str:
    """Shell removing a host's kept keys once the rotation is proven; `rm` removes a name and
    never follows one, so a link an account left at a legacy path is removed, not its target."""
    names = [previous_path(p) for p in paths] + [legacy_previous_path(p) for p in paths]
    return "rm -f -- " + " ".join(shlex.quote(n) for n in names)


def restore_copy_args(s: Settings) -> tuple[str, ...]:
    return ("key", "sync", "--source", previous_path(s.agent_key_path), "--dest",
            s.agent_key_path, "--owner", s.agent_user, "--group", s.agent_group,
            "--mode", f"{s.agent_key_mode:04o}", "--replace-link")


def local_copy_args(s: Settings) -> tuple[str, ...]:
    return ("key", "sync", "--source", s.jwt_key_path, "--dest", s.agent_key_path,
            "--owner", s.agent_user, "--group", s.agent_group,
            "--mode", f"{s.agent_key_mode:04o}")


def judge_old_key(exit_code: int, reason: str | None) -> str | None:
    """None when the previous key is refused by slurmctld, else why the proof fails."""
    if exit_code == REJECTED_BY_SLURMCTLD:
        return None
    if exit_code in PASSED_SLURMCTLD:
        return "a token signed with the previous key is still accepted by slurmctld"
    return (f"the previous key could not be shown to be refused (check exit {exit_code}, "
            f"{reason or 'unknown'})")


def judge_new_key(exit_code: int, reason: str | None, message: str | None, when: str) -> str | None:
    """None when a token signed with the agent's (new) copy is accepted, else why not."""
    if exit_code == 0:
        return None
    return f"the new key is not accepted {when} ({reason or 'unknown'}, exit {exit_code}: " \
           f"{message or 'no details'})"


def failure_message(cluster: str, why: str, rollback_problems: list[str], *,
                    holdings: dict[str, str | None] | None = None, previous: str | None = None,
                    new: str | None = None) -> str:
    """The run's one line for a failed rotation; with rollback problems, what to do by hand:
    which host holds which key (fingerprints), and the command that converges the cluster."""
    if not rollback_problems:
        return (f"rotation of cluster {cluster} failed: {why}; rolled back to the previous key "
                "(daemons restarted onto it, the agent's check passes)")

    def name(sha: str | None) -> str:
        if sha is None:
            return "unknown (no answer, or missing)"
        label = {previous: " (the previous key)", new: " (the new key)"}.get(sha, "")
        return f"{sha[:12]}{label}"

    held = ", ".join(f"{where} {name(sha)}" for where, sha in (holdings or {}).items())
    return (f"rotation of cluster {cluster} failed: {why}; rolled back to the previous key, BUT "
            f"the rollback had problems: {'; '.join(rollback_problems)}. Keys now: "
            f"{held or 'not known'}. To do by hand: once every host of {cluster} answers again, "
            f"run the deploy for it (pyinfra -y INVENTORY "
            f"slurmrestd_access.deploys.slurmrestd_access --limit "
            f"{cluster}): it installs the controller's key on every host by SHA-256 and restarts "
            f"what reads it; then `slurmrestd-access-report INVENTORY --limit {cluster}` must say "
            f"{cluster}: OK (until a rotation succeeds, each host keeps its previous key in "
            f"{PREVIOUS_DIR}, root only)")
