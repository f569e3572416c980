"""After boot: wait until a cluster's daemons really work (over SSH, as an admin would check)."""

from __future__ import annotations

import shlex
from pathlib import Path

from tests.testbed.errors import TestbedError
from tests.testbed.sshrun import ssh
from tests.testbed.topology import Cluster, Host

READY_TIMEOUT = 120

# Runs on every host: wait until every wanted unit has been active for 3 checks in a row, starting
# again any that failed. slurmdbd's first start right after MariaDB's can fail a moment after it
# reported active (measured: "_check_mysql_concat_is_sane: null result"), so a single
# is-active is not enough.
_SETTLE = """
declare -A seen
for i in $(seq 1 {t}); do
  all=1
  for unit in {units}; do
    case "$(systemctl show -p ActiveState --value "$unit")" in
      active) seen[$unit]=$(( ${{seen[$unit]:-0}} + 1 ));;
      failed|inactive) seen[$unit]=0
        systemctl reset-failed "$unit" 2>/dev/null; systemctl start --no-block "$unit";;
      *) seen[$unit]=0;;
    esac
    [ "${{seen[$unit]}}" -ge 3 ] || all=0
  done
  [ "$all" = 1 ] && exit 0
  sleep 1
done
for unit in {units}; do
  systemctl is-active -q "$unit" || {{ echo "$unit is not active"; \
    systemctl status --no-pager -l "$unit" | tail -20; }}
done
exit 1
"""

# Every controller UP (a backup too, high availability): at least one UP and none DOWN.
_CTL_READY = """
all_up() {{ out=$(timeout 10 scontrol ping 2>/dev/null) && echo "$out" | grep -q 'is UP' && \
  ! echo "$out" | grep -q 'is DOWN'; }}
for i in $(seq 1 {t}); do
  all_up && break; sleep 1
done
all_up || {{ timeout 10 scontrol ping; exit 1; }}
for i in $(seq 1 {t}); do
  timeout 10 sacctmgr -n -P show cluster format=cluster 2>/dev/null | grep -qx {cluster} && break
  # slurmctld registers its cluster with slurmdbd when it can reach it; make sure it is added.
  [ "$i" = 5 ] && timeout 10 sacctmgr -i add cluster {cluster} >/dev/null 2>&1
  sleep 1
done
timeout 10 sacctmgr -n -P show cluster format=cluster | grep -qx {cluster} || \
  {{ echo "cluster {cluster} not in slurmdbd"; exit 1; }}
for node in {nodes}; do
  for i in $(seq 1 {t}); do
    case "$(sinfo -h -n "$node" -o %t)" in idle*) break;; esac
    [ "$i" = 20 ] && scontrol update nodename="$node" state=resume >/dev/null 2>&1
    sleep 1
  done
  case "$(sinfo -h -n "$node" -o %t)" in idle*) ;; *) sinfo -N; exit 1;; esac
done
"""

# The agent host is ready when its agent stand-in has started and, like the real agent on a
# fresh host, exited for want of its key copy (the deploy gives it one), or when it answers (a
# host kept up after a deploy) where its unit serves: HTTP on 5012, or uWSGI's socket
# (standin/uwsgi_client.py, fed to the host's python3 here).
_AGENT_READY = """
client=$(mktemp)
trap 'rm -f "$client"' EXIT
cat > "$client" <<'SRA_AGENT_CLIENT'
@CLIENT@
SRA_AGENT_CLIENT
for i in $(seq 1 {t}); do
  case "$(systemctl show -p ActiveState --value {unit})" in
    failed|inactive)
      journalctl -b -u {unit} --no-pager -o cat | \\
        grep -q 'Unable to load JWT key for slurmrestd authentication' && exit 0;;
    active)
      python3 "$client" --unit {unit} /standin/status 2>/dev/null | python3 -c '
import json, sys
(answer,) = json.load(sys.stdin)
status = json.loads(answer["body"])
sys.exit(0 if answer["status"] == 200 and status.get("standin") and
         status.get("unit") == sys.argv[1] else 1)' {unit} && exit 0;;
  esac
  sleep 1
done
systemctl status --no-pager -l {unit} | tail -20
exit 1
"""
CLIENT_SOURCE = Path(__file__).with_name("standin") / "uwsgi_client.py"


def agent_ready_script(unit: str, timeout: int = READY_TIMEOUT) -> str:
    return (_AGENT_READY.format(t=timeout, unit=shlex.quote(unit))
            .replace("@CLIENT@", CLIENT_SOURCE.read_text().rstrip("\n")))


def host_units(host: Host) -> list[str]:
    # systemd-user-sessions removes /run/nologin: until it has run, PAM refuses every login but
    # root's. It is a oneshot without Restart=; under load a unit can fail to start at all
    # ("Failed to spawn executor", seen here on testbed-network.service), and a failed one
    # would leave admin and nosudo locked out for good. Here a failed one is started again.
    units = ["munge.service", "ssh.service", "systemd-user-sessions.service"]
    if host.has("slurmdbd"):
        units += ["mariadb.service", "slurmdbd.service"]
    if host.has("slurmctld"):
        units.append("slurmctld.service")
    if host.has("compute"):
        units.append("slurmd.service")
    if host.runs_sackd:
        units.append("sackd.service")
    return units


def _remote(key: Path, host: Host, script: str, what: str) -> None:
    try:
        res = ssh(key, host.address, script, timeout=READY_TIMEOUT + 60)
    except TestbedError as exc:
        raise TestbedError(f"{host.name}: {what}: {exc}") from exc
    if res.returncode != 0:
        out = (res.stdout + res.stderr).decode(errors="replace").strip()
        raise TestbedError(
            f"{host.name}: {what} (exit {res.returncode}):\n{out}\n"
            f"inspect with `python -m tests.testbed ssh {host.name} -- journalctl -b --no-pager`"
        )


def settle_host(key: Path, host: Host) -> None:
    units = " ".join(shlex.quote(u) for u in host_units(host))
    _remote(key, host, _SETTLE.format(t=READY_TIMEOUT, units=units), "daemons did not start")


def cluster_ready(key: Path, cluster: Cluster) -> None:
    """slurmctld answers, slurmdbd knows the cluster, compute nodes idle, agent answers."""
    nodes = " ".join(h.name for h in cluster.compute_hosts)
    script = _CTL_READY.format(t=READY_TIMEOUT, cluster=cluster.name, nodes=nodes)
    _remote(key, cluster.ctl_host, script, "Slurm is not ready")
    rest = cluster.rest_host
    _remote(key, rest, agent_ready_script(rest.agent_unit),
            f"agent stand-in {rest.agent_unit} neither answers nor refused to start "
            "for want of its key")
