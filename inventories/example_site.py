"""Example inventory: two clusters behind one Slurm-web gateway.

    pyinfra inventories/example_site.py deploys/slurmrestd_access.py --dry
    pyinfra inventories/example_site.py deploys/slurmrestd_access.py --limit atlas
    slurmrestd-access-rollout inventories/example_site.py --canary canary   # canary first
    pyinfra -y inventories/example_site.py deploys/rotate_key.py --limit atlas
    slurmrestd-access-report inventories/example_site.py                    # read-only audit

One group per cluster holds the hosts with their data (at least `cluster`, the ClusterName
of slurm.conf). The role groups say what runs where, by host name:
  slurmctld   the controller(s); the JWT signing key is created on the first one
  slurmdbd    the accounting daemon's host(s); they get the same key (checked by SHA-256)
  slurmrestd  the host of slurmrestd AND the Slurm-web agent (a unix socket puts both on one host)
  compute     hosts running slurmd from a local slurm.conf (it gets the AuthAlt lines too)
Any setting of slurmrestd_access/settings.py can be host data; the defaults are the values of the
Slurm-web documentation.
"""

_ssh = {"ssh_user": "root"}
# Where root may not log in over SSH: a deploy account with sudo (NOPASSWD: see docs/sudo.md).
_sudo = {"ssh_user": "deploy", "_sudo": True}

# Cluster "atlas": everything on separate hosts, accounting on its own server; SSH as `deploy`.
atlas = [
    ("atlas-admin", {**_sudo, "cluster": "atlas"}),
    ("atlas-db", {**_sudo, "cluster": "atlas"}),
    ("atlas-web", {**_sudo, "cluster": "atlas"}),
]

# Cluster "nova": one management host; the agent runs under uWSGI; the key comes from the
# site's secrets manager on the workstation (printed base64) instead of being generated.
nova = [
    (
        "nova-mgmt",
        {
            **_ssh,
            "cluster": "nova",
            "agent_unit": "slurm-web-agent-uwsgi.service",
            "key_source_command": "vault kv get -field=jwt_hs256 secret/slurm/nova",
            "key_source_encoding": "base64",
        },
    ),
]

slurmctld = ["atlas-admin", "nova-mgmt"]
slurmdbd = ["atlas-db", "nova-mgmt"]
slurmrestd = ["atlas-web", "nova-mgmt"]
compute = []

# Staged roll-outs: `slurmrestd-access-rollout INVENTORY --canary canary` deploys these first,
# and the rest only when every canary cluster succeeded (exit 3 and nothing else touched if not).
canary = ["nova-mgmt"]
