#!/bin/sh
# Turn testbed hosts configless by hand and look at what slurmrestd then reads (issue 22, item 1;
# results in MEASUREMENTS.md, "Configless Slurm (issue 22), measured"). A measurement aid, not a
# deploy. Run from the worktree, under the testbed lock, after `up` and the project's deploy:
#   ctl CTL                  enable_configless in CTL's slurm.conf, restart slurmctld
#   sackd HOST CTL DEB       install DEB (Debian's sackd of the host's Slurm version), stop slurmd,
#                            move the local slurm.conf to /root, sackd --conf-server CTL
#   slurmd HOST CTL          stop sackd, move the local slurm.conf, slurmd --conf-server CTL
#                            (HOST must be a NodeName in CTL's slurm.conf)
#   show HOST CTL            HOST's cache (/run/slurm/conf), its AuthAlt lines, CTL's file's hash
#   rest HOST                restart slurmrestd as the unit stands, then with its vendor
#                            ConditionPathExists reset (a runtime drop-in), and what it reads
#   hidden HOST              slurmrestd restarted with the cached slurm.conf moved away
#   noalt HOST               slurmrestd on a copy of the cache without the AuthAlt lines
#   reconf CTL HOST...       AuthAltParameters on CTL pointed at a copy of the key, `scontrol
#                            reconfigure`, how fast HOST's cache follows, the agent meanwhile;
#                            then put back
#   token HOST CTL           a token from CTL's `scontrol token` through HOST's slurmrestd socket
set -eu
P=${PYTHON:-.venv/bin/python}
# printf, not echo: dash's echo turns the backslash escapes of the commands into bytes.
on() { h=$1; shift; printf '+ [%s] %s\n' "$h" "$*"; $P -m tests.testbed ssh "$h" -- "$*"; }
# The agent stand-in's data endpoint: 200 only when slurmctld took the agent's token.
AGENT="python3 -c 'import urllib.request as u; print(\"agent /jobs\", u.urlopen(\"http://127.0.0.1:5012/v6.0.0/jobs\").status)'"
CHECK="slurmrestd-access check --as-user slurm-web; echo check exit \$?"
MAINENV="tr '\\0' '\\n' < /proc/\$(systemctl show -p MainPID --value slurmrestd)/environ | grep ^SLURM"

step=$1; shift
case $step in
ctl)
    on "$1" "grep -q '^SlurmctldParameters=.*enable_configless' /etc/slurm/slurm.conf \
        || echo SlurmctldParameters=enable_configless >> /etc/slurm/slurm.conf; \
        systemctl restart slurmctld && sleep 2 && scontrol ping && \
        scontrol show config | grep -E '^(SlurmctldParameters|AuthAlt)'"
    ;;
sackd)
    host=$1 ctl=$2 deb=$3
    # `tests.testbed ssh` gives the remote command no stdin: the package travels in the command.
    on "$host" "echo $(base64 -w0 "$deb") | base64 -d > /root/$(basename "$deb") && \
        dpkg -i /root/$(basename "$deb") && dpkg-query -W sackd"
    on "$host" "systemctl disable --now slurmd 2>/dev/null; \
        mv -v /etc/slurm/slurm.conf /root/slurm.conf.local 2>/dev/null; \
        echo 'SACKD_OPTIONS=\"--conf-server $ctl\"' > /etc/default/sackd; \
        systemctl restart sackd; sleep 2; systemctl is-active sackd; \
        journalctl -u sackd -o cat --no-pager -n 5"
    ;;
slurmd)
    host=$1 ctl=$2
    on "$host" "systemctl disable --now sackd 2>/dev/null; ls -la /run/slurm 2>&1; \
        mv -v /etc/slurm/slurm.conf /root/slurm.conf.local 2>/dev/null; \
        echo 'SLURMD_OPTIONS=\"--conf-server $ctl\"' > /etc/default/slurmd; \
        systemctl enable slurmd 2>/dev/null; systemctl restart slurmd; sleep 3; \
        systemctl is-active slurmd; journalctl -u slurmd -o cat --no-pager -n 5"
    ;;
show)
    host=$1 ctl=$2
    on "$host" "ls -la /etc/slurm/ /run/slurm/ /run/slurm/conf/; readlink -f /run/slurm/conf; \
        grep -n '^AuthAlt' /run/slurm/conf/slurm.conf; sha256sum /run/slurm/conf/slurm.conf; \
        ls -la /var/spool/slurm 2>&1"
    on "$ctl" "grep -n '^AuthAlt' /etc/slurm/slurm.conf; sha256sum /etc/slurm/slurm.conf"
    ;;
rest)
    on "$1" "grep -n Condition /usr/lib/systemd/system/slurmrestd.service; \
        systemctl restart slurmrestd; sleep 1; systemctl is-active slurmrestd; \
        journalctl -u slurmrestd -o cat --no-pager -n 1"
    on "$1" "mkdir -p /run/systemd/system/slurmrestd.service.d && \
        printf '[Unit]\\nConditionPathExists=\\n' > /run/systemd/system/slurmrestd.service.d/zz-configless-probe.conf && \
        systemctl daemon-reload && systemctl restart slurmrestd; sleep 1; \
        systemctl is-active slurmrestd; $MAINENV; $CHECK; $AGENT"
    ;;
hidden)
    on "$1" "mv /run/slurm/conf/slurm.conf /run/slurm/conf/slurm.conf.hidden; \
        systemctl restart slurmrestd; sleep 2; systemctl is-active slurmrestd; \
        journalctl -u slurmrestd -o cat --no-pager -n 6 | grep -E 'error|fatal'; \
        mv /run/slurm/conf/slurm.conf.hidden /run/slurm/conf/slurm.conf; \
        systemctl reset-failed slurmrestd; systemctl restart slurmrestd; sleep 1; systemctl is-active slurmrestd"
    ;;
noalt)
    d=/run/systemd/system/slurmrestd.service.d/zz-noalt-probe.conf
    on "$1" "grep -v '^AuthAlt' /run/slurm/conf/slurm.conf > /etc/noalt-probe.conf; \
        chmod 644 /etc/noalt-probe.conf; grep -c AuthAlt /etc/noalt-probe.conf; \
        printf '[Service]\\nEnvironment=SLURM_CONF=/etc/noalt-probe.conf\\n' > $d; \
        systemctl daemon-reload; systemctl restart slurmrestd; sleep 1; systemctl is-active slurmrestd; \
        $MAINENV; $CHECK; $AGENT; \
        rm $d /etc/noalt-probe.conf; systemctl daemon-reload; systemctl restart slurmrestd"
    ;;
reconf)
    ctl=$1; shift
    on "$ctl" "cp -p /var/spool/slurm/jwt_hs256.key /var/spool/slurm/jwt_hs256.key.b && \
        sed -i 's/jwt_hs256.key\$/jwt_hs256.key.b/' /etc/slurm/slurm.conf && \
        grep -n AuthAltP /etc/slurm/slurm.conf && date +%s.%N && scontrol reconfigure"
    for h in "$@"; do
        # slurmd re-execs on reconfigure and re-creates /run/slurm/conf: wait for the new file.
        on "$h" "for i in \$(seq 40); do [ -f /run/slurm/conf/slurm.conf ] && \
            grep -q key.b /run/slurm/conf/slurm.conf && break; sleep 0.25; done; date +%s.%N; \
            grep -n AuthAltP /run/slurm/conf/slurm.conf; journalctl -u sackd -u slurmd -o cat --no-pager -n 3; \
            systemctl show -p ActiveEnterTimestamp slurmrestd; ! systemctl -q is-active slurmrestd || $AGENT"
    done
    on "$ctl" "sed -i 's/jwt_hs256.key.b\$/jwt_hs256.key/' /etc/slurm/slurm.conf && \
        scontrol reconfigure && rm /var/spool/slurm/jwt_hs256.key.b"
    ;;
token)
    host=$1 ctl=$2 sock=/run/slurmrestd/slurmrestd.socket
    tok=$($P -m tests.testbed ssh "$ctl" -- scontrol token username=slurm lifespan=300 | sed -n 's/^SLURM_JWT=//p')
    # A one-request HTTP client over the unix socket (the base has python3, no curl).
    py='import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b"GET /slurm/v0.0.42/diag HTTP/1.0\r\nX-SLURM-USER-TOKEN: " + sys.argv[2].encode() + b"\r\n\r\n")
print(s.recv(300).split(b"\r\n")[0].decode())'
    printf '+ [%s] GET /slurm/v0.0.42/diag with a token from %s (scontrol token)\n' "$host" "$ctl"
    $P -m tests.testbed ssh "$host" -- "echo $(printf '%s' "$py" | base64 -w0) | base64 -d | python3 - $sock $tok"
    ;;
*) echo "unknown step $step" >&2; exit 2 ;;
esac
