#!/bin/sh
# HAND CHECK ONLY, run ON a testbed agent host by install.py (never by CI): put the REAL
# Slurm-web agent, from the offline wheelhouse unpacked beside this script, in place of the
# testbed's stand-in, as a Slurm-web package would lay it out:
#   - a venv at $DIR/venv (pip --no-index --no-deps: the host has no network);
#   - the tag's vendor files at /usr/share/slurm-web/conf/ (agent.yml, policy.yml, policy.ini),
#     which the agent reads by absolute path;
#   - its executables where the tag's own unit looks for them: 5.x
#     /usr/libexec/slurm-web/slurm-web-{agent,connect-check}, 6.x /usr/bin/slurm-web;
#   - the tag's lib/systemd/slurm-web-agent.service at /etc/systemd/system/ (it overrides the
#     stand-in's unit of the same name in /usr/lib/systemd/system/), then a restart.
# Whatever it replaces is moved to /root/realagent-backup/ first. agent.ini, the key copy and
# the agent's [jwt] key are left as the testbed and the deploy made them.
set -eu

DIR=$(cd "$(dirname "$0")" && pwd)
TAG=$(cat "$DIR/TAG")
BACKUP=/root/realagent-backup
VENV=$DIR/venv
CONF=/usr/share/slurm-web/conf
UNIT=/etc/systemd/system/slurm-web-agent.service

backup() {  # move an existing file (not our own symlink) aside, once
    if [ -e "$1" ] || [ -L "$1" ]; then
        mkdir -p "$BACKUP$(dirname "$1")"
        [ -e "$BACKUP$1" ] || cp -a "$1" "$BACKUP$1"
        rm -f "$1"
    fi
}

env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin python3 -m venv --clear "$VENV"
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$VENV/bin/pip" install -q --no-index --no-deps \
    --disable-pip-version-check "$DIR"/wheels/*.whl
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cp -r "$DIR"/stubs/* "$SITE/"

mkdir -p "$CONF"
for f in agent.yml policy.yml policy.ini; do
    backup "$CONF/$f"
    install -m 0644 "$DIR/share/conf/vendor/$f" "$CONF/$f"
done

case "$TAG" in
v4.*|v5.*)
    mkdir -p /usr/libexec/slurm-web
    for exe in slurm-web-agent slurm-web-connect-check; do
        backup "/usr/libexec/slurm-web/$exe"
        ln -s "$VENV/bin/$exe" "/usr/libexec/slurm-web/$exe"
    done ;;
*)
    backup /usr/bin/slurm-web
    ln -s "$VENV/bin/slurm-web" /usr/bin/slurm-web ;;
esac

backup "$UNIT"
install -m 0644 "$DIR/share/lib/systemd/slurm-web-agent.service" "$UNIT"
systemctl daemon-reload
# A unit past its start-rate limit (e.g. an earlier ExecStart that no longer exists) refuses a
# restart until reset.
systemctl reset-failed slurm-web-agent.service 2>/dev/null || true
systemctl restart slurm-web-agent.service
echo "real Slurm-web agent $TAG in place ($VENV); replaced files kept in $BACKUP"
