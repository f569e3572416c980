"""Render the host-specific files of a testbed host (pure: text in, text out).

The result is the start state an administrator has after installing the Slurm and Slurm-web
packages: Slurm working with munge only (no AuthAlt/JWT anywhere), slurmrestd untouched, the
agent installed and reading an agent.ini that names only its cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.testbed.accounts import ACCOUNTS
from tests.testbed.standin.uwsgi_client import UWSGI_SOCKET, UWSGI_UNIT
from tests.testbed.topology import AGENT_UNITS, DEFAULT_SLURMWEB, Catalog, Cluster, Host

# Baked into the base's MariaDB by basecache; slurmdbd.conf must carry the same one.
DB_USER = "slurm"
DB_PASSWORD = "testbed-slurmdbd"
DB_NAME = "slurm_acct_db"

STANDIN_PATH = "/usr/local/libexec/slurm-web-agent-standin.py"
# Where Slurm-web's packages put the uWSGI agent's files (its lib/wsgi/agent/ directory).
WSGI_DIR = "/usr/share/slurm-web/wsgi/agent"
WSGI_INI = f"{WSGI_DIR}/slurm-web-agent.ini"
WSGI_FILE = f"{WSGI_DIR}/slurm-web-agent.py"
WSGI_SOURCE = Path(__file__).with_name("standin") / "slurm_web_agent_wsgi.py"
GATEWAY_KEY = "/var/lib/slurm-web/jwt.key"
UNIT_DIR = "/usr/lib/systemd/system"
NET_UNIT = "testbed-network.service"
# Shared by the controllers of a high-availability cluster (a bind of one machine directory).
STATE_SAVE_LOCATION = "/var/lib/slurm/slurmctld"
SLURMCTLD_STOP_DROPIN = "/etc/systemd/system/slurmctld.service.d/testbed-stop.conf"
SLURMCTLD_STOP = ("# Written by the testbed (tests/testbed/hostconfig.py): see there.\n"
                  "[Service]\nTimeoutStopSec=15s\n")

# Daemon units enabled per role; everything else the packages enabled is disabled in the base.
ROLE_UNITS = {
    "slurmctld": ("slurmctld.service",),
    "slurmdbd": ("mariadb.service", "slurmdbd.service"),
    "compute": ("slurmd.service",),
    "slurmrestd": (),  # slurmrestd stays installed but not enabled: that is the project's job
}


@dataclass(frozen=True)
class HostFile:
    """A file to place in the host's root before boot."""

    path: str
    content: str | bytes
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"


def etc_hosts(catalog: Catalog) -> str:
    # Every host of every topology: addresses are fixed, and a name that does not resolve makes
    # slurmrestd hang 10-19 s on each call (measured).
    # The host's own name maps to its bridge address (not 127.0.1.1) so Slurm daemons announce
    # an address the other hosts can reach.
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{h.address}\t{h.name}" for h in catalog.all_hosts]
    return "\n".join(lines) + "\n"


# OpenSSH 9.8 and later (trixie's 10.0, forky's) refuse for a while every connection from an
# address whose connections ended in failed authentication (PerSourcePenalties, on by default;
# older releases reject the option). Every test reaches the hosts from the one machine address,
# and some tests fail logins on purpose: a few refused `nosudo` logins then locked root out
# too (measured: three logins refused by pam_nologin, then `kex_exchange_identification:
# Connection closed by remote host` for root). The machine is exempt; nothing else changes.
_SSHD_PENALTIES = ("trixie", "forky")
SSHD_DROPIN = "/etc/ssh/sshd_config.d/testbed.conf"


def sshd_dropin(gateway: str) -> str:
    return ("# Written by the testbed (tests/testbed/hostconfig.py): the machine running the\n"
            "# tests is not penalised for the logins they refuse on purpose.\n"
            f"PerSourcePenaltyExemptList {gateway}/32\n")


# Where the daemons may write their pid files. Up to bookworm (22.05) Debian's units run the
# daemons as root with PIDFile=/run/<daemon>.pid and no RuntimeDirectory; from trixie on they run
# as slurm with RuntimeDirectory=<daemon> (measured in each release's base).
_OLD_UNITS = ("bullseye", "bookworm")


def _pid_file(release: str, daemon: str) -> str:
    if release in _OLD_UNITS:
        return f"/run/{daemon}.pid"
    return f"/run/{'slurm' if daemon == 'slurmd' else daemon}/{daemon}.pid"


# forky's hosts boot with a cgroup v2 hierarchy on this cgroup v1 machine (machine.boot): the
# kernel still lists the v1 hierarchies in /proc/self/cgroup and slurmd 26.05 stops with "fatal:
# Hybrid mode is not supported" (measured). The testbed uses no cgroup plugin anyway
# (proctrack/linuxproc, task/none).
_CGROUP_DISABLED = ("forky",)
CGROUP_CONF = "# testbed: containers on a cgroup v1 machine\nCgroupPlugin=disabled\n"


def _release(cluster: Cluster) -> str:
    return cluster.hosts[0].release


def slurm_conf(cluster: Cluster) -> str:
    db = cluster.db_host
    nodes = cluster.compute_hosts
    node_names = ",".join(h.name for h in nodes)
    lines = [
        "# slurm.conf written by the testbed: a plain cluster, munge authentication only.",
        f"ClusterName={cluster.name}",
        # Primary first, then the backup (high availability): Slurm's order is the lines'.
        *(f"SlurmctldHost={ctl.name}" for ctl in cluster.ctl_hosts),
        "SlurmUser=slurm",
        "AuthType=auth/munge",
        f"StateSaveLocation={STATE_SAVE_LOCATION}",
        "SlurmdSpoolDir=/var/lib/slurm/slurmd",
        # The units' RuntimeDirectory is where the unprivileged slurmctld may write its pid.
        f"SlurmctldPidFile={_pid_file(_release(cluster), 'slurmctld')}",
        f"SlurmdPidFile={_pid_file(_release(cluster), 'slurmd')}",
        # No cgroup plugins: the hosts are containers and jobs are not what is tested.
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "SelectType=select/cons_tres",
        # Slurm 20.11 is fatal without it ("Invalid SelectTypeParameters: NONE"); 22.05 and
        # later default to CR_Core_Memory.
        *(["SelectTypeParameters=CR_CPU"] if _release(cluster) == "bullseye" else []),
        "ReturnToService=2",
        "AccountingStorageType=accounting_storage/slurmdbd",
        f"AccountingStorageHost={db.name}",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=60",
        # The controller serves its files to sackd and to slurmd started with --conf-server.
        *(["SlurmctldParameters=enable_configless"] if cluster.configless else []),
    ]
    lines += [f"NodeName={h.name} CPUs=1 State=UNKNOWN" for h in nodes]
    lines.append(f"PartitionName=main Nodes={node_names} Default=YES MaxTime=INFINITE State=UP")
    return "\n".join(lines) + "\n"


def slurmdbd_conf(cluster: Cluster) -> str:
    lines = [
        "# slurmdbd.conf written by the testbed: munge authentication only.",
        "AuthType=auth/munge",
        f"DbdHost={cluster.db_host.name}",
        "SlurmUser=slurm",
        f"PidFile={_pid_file(_release(cluster), 'slurmdbd')}",
        "StorageType=accounting_storage/mysql",
        "StorageHost=localhost",
        f"StorageUser={DB_USER}",
        f"StoragePass={DB_PASSWORD}",
        f"StorageLoc={DB_NAME}",
    ]
    return "\n".join(lines) + "\n"


def network_unit(host: Host, prefixlen: int) -> str:
    # No default route on purpose: nothing beyond the bridge is reachable from a host.
    return (
        "[Unit]\n"
        "Description=Testbed address on host0\n"
        "DefaultDependencies=no\n"
        "After=sys-subsystem-net-devices-host0.device\n"
        "Before=network.target network-online.target ssh.service\n"
        "Wants=network.target\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        # Seen under load: "Failed to spawn executor" once, and the host never got its address.
        "Restart=on-failure\n"
        "RestartSec=1\n"
        f"ExecStart=/usr/sbin/ip addr replace {host.address}/{prefixlen} dev host0\n"
        "ExecStart=/usr/sbin/ip link set host0 up\n"
        "\n"
        "[Install]\n"
        "WantedBy=network-online.target multi-user.target\n"
    )


def agent_ini(cluster: Cluster) -> str:
    return f"[service]\ncluster={cluster.name}\n"


def uwsgi_ini(wsgi_file: str = WSGI_FILE, socket: str = UWSGI_SOCKET) -> str:
    """The settings of Slurm-web's lib/wsgi/agent/slurm-web-agent.ini (the same at v5.2.0 and
    v6.0.0): the master loads the application, then forks 5 workers (no lazy-apps); the
    uwsgi protocol on a unix socket that any local user may connect to; SIGTERM stops it
    (without die-on-term, uWSGI 2.0 takes SIGTERM as a reload)."""
    return ("# Written by the testbed (tests/testbed/hostconfig.py), with the settings of\n"
            "# Slurm-web's lib/wsgi/agent/slurm-web-agent.ini; the WSGI file is the STAND-IN's.\n"
            "[uwsgi]\n"
            "plugin = python3\n"
            f"wsgi-file = {wsgi_file}\n"
            "master = true\n"
            "processes = 5\n"
            f"socket = {socket}\n"
            "chmod-socket = 666\n"
            "buffer-size = 32768\n"
            "vacuum = true\n"
            "die-on-term = true\n")


def standin_unit(unit: str, release: str = DEFAULT_SLURMWEB) -> str:
    """A unit of the stand-in package of Slurm-web `release` (slurmweb_pkg.py ships it)."""
    if unit == UWSGI_UNIT:
        return _uwsgi_unit(unit, release)
    # As Slurm-web's own units: the native one restarts on failure (systemd's default 100 ms,
    # so an agent without its key ends "failed" after 5 tries), the uWSGI one does not.
    restart = "Restart=on-failure\n" if unit == AGENT_UNITS[0] else ""
    return (
        "[Unit]\n"
        f"Description=STAND-IN for Slurm-web agent ({unit}); testbed only, not Slurm-web\n"
        "After=network.target\n"
        "\n"
        "[Service]\n"
        "User=slurm-web\n"
        "Group=slurm-web\n"
        f"Environment=UNIT={unit}\n"
        # The package's code runs as its release, as a real package's units run its own code.
        f"Environment=STANDIN_RELEASE={release}\n"
        f"ExecStart=/usr/bin/python3 {STANDIN_PATH}\n"
        f"{restart}"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def _uwsgi_unit(unit: str, release: str) -> str:
    # Shaped like Slurm-web's lib/wsgi/agent/slurm-web-agent-uwsgi.service (the same at v5.2.0
    # and v6.0.0): uWSGI as slurm-web, its socket in the unit's RuntimeDirectory, no Restart=.
    # The Environment= lines are the stand-in's (its unit name; where the WSGI file finds it).
    return (
        "[Unit]\n"
        f"Description=STAND-IN for Slurm-web agent ({unit}): uWSGI serving the stand-in; "
        "testbed only, not Slurm-web\n"
        "After=network.target\n"
        "\n"
        "[Service]\n"
        "User=slurm-web\n"
        "RuntimeDirectory=slurm-web-agent\n"
        f"Environment=UNIT={unit}\n"
        f"Environment=STANDIN_PATH={STANDIN_PATH}\n"
        f"Environment=STANDIN_RELEASE={release}\n"
        f"ExecStart=/usr/bin/uwsgi --ini {WSGI_INI}\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def enabled_units(host: Host) -> list[str]:
    """multi-user.target units to enable on this host, beyond what the base enables."""
    units = [NET_UNIT]
    for role in host.roles:
        units.extend(ROLE_UNITS[role])
    if host.runs_sackd:
        units.append("sackd.service")
    if host.is_agent_host:
        units.append(host.agent_unit)
    return units


def host_files(
    catalog: Catalog,
    host: Host,
    munge_key: bytes,
    authorized_key: str,
    machine_id: str,
    gateway_key: bytes = b"",
    wsgi_source: str | None = None,
) -> list[HostFile]:
    """wsgi_source: the stand-in's WSGI file (None: the one in this checkout)."""
    cluster = _cluster_of(catalog, host)
    files = [
        HostFile("/etc/hostname", host.name + "\n"),
        HostFile("/etc/machine-id", machine_id + "\n", 0o444),
        HostFile("/etc/hosts", etc_hosts(catalog)),
        HostFile(f"/etc/systemd/system/{NET_UNIT}", network_unit(host, catalog.network.prefixlen)),
        HostFile("/root/.ssh/authorized_keys", authorized_key.strip() + "\n", 0o600),
        # The unprivileged accounts log in with the same key (their ~/.ssh is in the base).
        *(HostFile(f"/home/{user}/.ssh/authorized_keys", authorized_key.strip() + "\n", 0o600,
                   user, user) for user in ACCOUNTS),
        HostFile("/etc/munge/munge.key", munge_key, 0o400, "munge", "munge"),
    ]
    if host.fetches_conf:
        # No slurm.conf here: slurmd or sackd fetch the controller's into /run/slurm/conf/.
        daemon = "sackd" if host.runs_sackd else "slurmd"
        server = cluster.ctl_host.name
        files.append(HostFile(f"/etc/default/{daemon}",
                              f'{daemon.upper()}_OPTIONS="--conf-server {server}"\n'))
    else:
        files.append(HostFile("/etc/slurm/slurm.conf", slurm_conf(cluster)))
    if host.has("slurmctld") and cluster.shares_state:
        # Testbed only: a backup slurmctld's stop sometimes lasted systemd's whole
        # TimeoutStopSec (90 s) with no process of it left (MEASUREMENTS.md, "High
        # availability"): systemd inside these containers missed the cgroup-empty event. Each
        # such stop cost the deploy and the rotation 90 s and left them 30 s of their 120.
        files.append(HostFile(SLURMCTLD_STOP_DROPIN, SLURMCTLD_STOP))
    if host.release in _CGROUP_DISABLED:
        files.append(HostFile("/etc/slurm/cgroup.conf", CGROUP_CONF))
    if host.release in _SSHD_PENALTIES:
        files.append(HostFile(SSHD_DROPIN, sshd_dropin(catalog.network.gateway)))
    if host.has("slurmdbd"):
        files.append(
            HostFile("/etc/slurm/slurmdbd.conf", slurmdbd_conf(cluster), 0o600, "slurm", "slurm")
        )
    if host.is_agent_host:
        # The stand-in, its units and the release's agent.yml come in the slurm-web-agent
        # package (slurmweb_pkg.py), installed beside these site files.
        files.append(HostFile("/etc/slurm-web/agent.ini", agent_ini(cluster)))
        # The agent's own signing key for its front-end tokens ([jwt] key), which the Slurm-web
        # package's set-up creates (slurm-web-gen-jwt-key): without it the agent does not start.
        files.append(HostFile(GATEWAY_KEY, gateway_key, 0o400, "slurm-web", "slurm-web"))
        # uWSGI's ini and WSGI file, as the package ships them, whichever unit the host runs.
        files.append(HostFile(WSGI_INI, uwsgi_ini()))
        files.append(HostFile(WSGI_FILE, wsgi_source if wsgi_source is not None
                              else WSGI_SOURCE.read_text()))
    return files


def _cluster_of(catalog: Catalog, host: Host) -> Cluster:
    for topo in catalog.topologies.values():
        if host.cluster in topo.clusters:
            return topo.clusters[host.cluster]
    raise KeyError(host.cluster)
