#!/bin/sh
# HAND CHECK ONLY (never run by CI): what the REAL Slurm-web 5.x agent does on a deployed
# testbed host, next to what this project's check says, step by step; every command is echoed
# before its output. Run from the worktree root, with the host deployed and the real agent in
# place (README.md beside this file), the whole under the testbed lock:
#
#   flock /tmp/testbed.lock sh tests/testbed/realagent/handcheck.sh hpc1 2>&1 | tee /tmp/handcheck.log
#
# Steps (MEASUREMENTS.md, "Real Slurm-web 5.2.0 agent"): a. start with the deploy's agent.ini
# and serve; b. its connect-check vs `slurmrestd-access check`; c. refusal of 6.0-only keys;
# d. `uri` and `socket` both set; e. the REST API path it asks for; f. a rotation by
# deploys/rotate_key.py, then one by hand that the watchdog follows. agent.ini is restored after
# each step that changes it. Needs the inventory .testbed/single.py (for f) when HOST is hpc1.
set -u

HOST=${1:-hpc1}
STEPS=${STEPS:-0abcdef}
INVENTORY=${INVENTORY:-.testbed/single.py}
PY=${PYTHON:-.venv/bin/python}
INI=/etc/slurm-web/agent.ini
SAVED=/root/agent.ini.deployed
VPY=/opt/slurm-web-realagent/venv/bin/python
PROBE="$VPY /opt/slurm-web-realagent/probe.py"
REL=$($PY -m tests.testbed ssh "$HOST" -- "$VPY -c 'from importlib.metadata import version; print(version(\"Slurm-web\"))'")
case "$REL" in  # the executables as each release's package lays them out
4.*|5.*) AGENT=/usr/libexec/slurm-web/slurm-web-agent
         CHECK=/usr/libexec/slurm-web/slurm-web-connect-check ;;
*)       AGENT="/usr/bin/slurm-web agent"
         CHECK="/usr/bin/slurm-web connect-check" ;;
esac
KEY=/var/spool/slurm/jwt_hs256.key
ROTATE="umask 077; head -c 32 /dev/urandom > $KEY.rot && chown slurm:slurm $KEY.rot && mv -f $KEY.rot $KEY"

on() {  # run a shell command line on the host, echoing it first
    printf '\n$ %s\n' "$*"
    $PY -m tests.testbed ssh "$HOST" -- "$*"
    printf '[exit %s]\n' "$?"
}
step() { printf '\n======== %s\n' "$*"; }
want() { case "$STEPS" in *"$1"*) return 0 ;; esac; return 1; }  # STEPS=f: step f only
restore() {  # the deploy's agent.ini back, the agent serving (past any start-rate limit)
    $PY -m tests.testbed ssh "$HOST" -- "cp $SAVED $INI && systemctl reset-failed slurm-web-agent.service; systemctl restart slurm-web-agent.service && sleep 3"
}
# Set KEY = VALUE in SECTION of agent.ini, replacing the key's line if the section has it (the
# section is added at the end when missing), as an admin's editor would.
set_ini() {
    $PY -m tests.testbed ssh "$HOST" -- "python3 - $INI '$1' '$2' '$3' <<'EOF'
import re, sys
path, section, key, value = sys.argv[1:]
lines = open(path).read().splitlines()
head = '[' + section + ']'
if head not in lines:
    lines += [head]
start = lines.index(head) + 1
end = next((i for i in range(start, len(lines)) if lines[i].startswith('[')), len(lines))
body = [ln for ln in lines[start:end] if not re.match(re.escape(key) + r' *=', ln)]
lines[start:end] = [key + ' = ' + value] + body
open(path, 'w').write('\n'.join(lines) + '\n')
EOF"
}

del_ini() {  # remove KEY from SECTION of agent.ini
    $PY -m tests.testbed ssh "$HOST" -- "python3 - $INI '$1' '$2' <<'EOF'
import re, sys
path, section, key = sys.argv[1:]
lines = open(path).read().splitlines()
start = lines.index('[' + section + ']') + 1
end = next((i for i in range(start, len(lines)) if lines[i].startswith('[')), len(lines))
lines[start:end] = [ln for ln in lines[start:end] if not re.match(re.escape(key) + r' *=', ln)]
open(path, 'w').write('\\n'.join(lines) + '\\n')
EOF"
}
# The agent's own log lines since its unit last started (its request lines left out).
SINCE_START="journalctl -u slurm-web-agent.service -o cat --no-pager --since \"\$(systemctl show -p ActiveEnterTimestamp --value slurm-web-agent.service)\" | grep -v -e ' - - \\[' -e 'Unauthorized access'"

# Every step starts from, and goes back to, agent.ini as the deploy left it.
$PY -m tests.testbed ssh "$HOST" -- "test -e $SAVED || cp $INI $SAVED"
if want 0; then
step "0. what is installed"
on "cat $INI; echo; systemctl cat slurm-web-agent.service | head -n 12; dpkg-query -W slurm-web-agent 2>&1; ls -l /usr/libexec/slurm-web/; $VPY -m pip list 2>/dev/null | grep -i -E '^(slurm-web|rfl|flask|requests) '"

fi
if want a; then
step "a. the real agent with the deploy's agent.ini"
on "systemctl restart slurm-web-agent.service; sleep 3; systemctl show -p ActiveState,SubState,MainPID,User slurm-web-agent.service; journalctl -u slurm-web-agent.service -b -o cat --no-pager | grep -v ' - - \\[' | tail -n 8"
on "$PROBE"
on "$PROBE /v$REL/nodes /v$REL/partitions /v$REL/qos /v$REL/reservations /info"
on "$VPY -c 'import urllib.request as u; u.urlopen(\"http://localhost:5012/v$REL/jobs\")' 2>&1 | tail -n 1"

fi
if want b; then
step "b. the real connect-check vs the project's check, as slurm-web"
on "runuser -u slurm-web -- $CHECK; echo \"rc=\$?\""
on "slurmrestd-access check --as-user slurm-web; echo \"rc=\$?\""

fi
if want c; then
step "c. 6.0-only keys in agent.ini"
for kv in "slurmrestd versions 0.0.42" "cache associations 60" "filters associations name"; do
    # shellcheck disable=SC2086
    set_ini $kv
    on "grep -n -A1 '^\\[' $INI | tail -n 4; systemctl stop slurm-web-agent.service; runuser -u slurm-web -- timeout 6 $AGENT; echo \"agent exit: \$?\""
    on "systemctl restart slurm-web-agent.service; sleep 5; systemctl show -p ActiveState,Result,NRestarts slurm-web-agent.service; journalctl -u slurm-web-agent.service -o cat --no-pager -n 40 | grep -E 'CRITICAL|systemd|Failed|start' | tail -n 4"
    on "slurmrestd-access check --as-user slurm-web; echo \"rc=\$?\""
    restore
done

fi
if want d; then
step "d. uri and socket both set"
set_ini slurmrestd socket /run/slurmrestd/nonexistent.socket
on "grep -A3 '^\\[slurmrestd\\]' $INI; systemctl restart slurm-web-agent.service; sleep 3; $SINCE_START | grep -i deprecated; $PROBE /v$REL/jobs"
on "runuser -u slurm-web -- $CHECK; echo \"rc=\$?\"; slurmrestd-access check --as-user slurm-web; echo \"rc=\$?\""
restore
# The other way round: uri wrong, socket right.
set_ini slurmrestd uri unix:///run/slurmrestd/nonexistent.socket
set_ini slurmrestd socket /run/slurmrestd/slurmrestd.socket
on "grep -A3 '^\\[slurmrestd\\]' $INI; systemctl restart slurm-web-agent.service; sleep 3; $SINCE_START | grep -i deprecated; $PROBE /v$REL/jobs"
on "runuser -u slurm-web -- $CHECK; echo \"rc=\$?\"; slurmrestd-access check --as-user slurm-web; echo \"rc=\$?\""
restore
# socket alone (no uri): the deprecated key stands for uri.
del_ini slurmrestd uri
set_ini slurmrestd socket /run/slurmrestd/slurmrestd.socket
on "grep -A3 '^\\[slurmrestd\\]' $INI; systemctl restart slurm-web-agent.service; sleep 3; $SINCE_START | grep -i deprecated; $PROBE /v$REL/jobs"
on "runuser -u slurm-web -- $CHECK; echo \"rc=\$?\"; slurmrestd-access check --as-user slurm-web; echo \"rc=\$?\""
restore

fi
if want e; then
step "e. the REST API version it asks for"
on "systemctl stop slurm-web-agent.service; (runuser -u slurm-web -- timeout 12 $AGENT --debug --debug-flags urllib3 < /dev/null > /root/agent-debug.log 2>&1 &); sleep 5; $PROBE /v$REL/jobs /v$REL/accounts > /dev/null; sleep 8; grep -o '\"GET [^\"]*\" [0-9]*' /root/agent-debug.log; systemctl start slurm-web-agent.service"
for v in 0.0.40 0.0.42; do
    set_ini slurmrestd version $v
    on "grep -A1 '^\\[slurmrestd\\]' $INI; systemctl restart slurm-web-agent.service; sleep 3; $PROBE /v$REL/jobs /v$REL/accounts; runuser -u slurm-web -- $CHECK 2>/dev/null; slurmrestd-access check --as-user slurm-web; echo \"rc=\$?\""
    restore
done
set_ini slurmrestd version 0.0.99
on "grep -A2 '^\\[slurmrestd\\]' $INI; systemctl restart slurm-web-agent.service; sleep 3; $PROBE /v$REL/jobs /v$REL/accounts"
on "runuser -u slurm-web -- $CHECK; echo \"rc=\$?\"; slurmrestd-access check --as-user slurm-web; echo \"rc=\$?\""
restore

fi
if want f; then
step "f. rotation: deploys/rotate_key.py, then by hand with the watchdog following"
on "journalctl -u slurm-web-agent.service -b -o cat --no-pager | grep -c '^Started '"
# Poll the agent's jobs endpoint every 0.5 s during the rotation (on the host, in the background).
$PY -m tests.testbed ssh "$HOST" -- "rm -f /root/poll.stop; nohup sh -c 'while [ ! -e /root/poll.stop ]; do printf \"%s \" \$(date +%s.%N); $PROBE /v$REL/jobs | cut -c1-160; sleep 0.5; done' < /dev/null > /root/poll.log 2>&1 &"
printf '\n$ %s\n' "pyinfra -y $INVENTORY deploys/rotate_key.py"
start=$(date +%s.%N)
$PY -m pyinfra -y "$INVENTORY" deploys/rotate_key.py > /tmp/realagent-rotate.log 2>&1
printf '[exit %s] in %.1f s; last lines:\n' "$?" "$(echo "$(date +%s.%N) - $start" | bc)"
tail -n 12 /tmp/realagent-rotate.log
sleep 5
on "$PROBE; journalctl -u slurm-web-agent.service -b -o cat --no-pager | grep -c '^Started '"
on "$ROTATE; sleep 5; slurmrestd-access status | head -c 600; echo"
on "systemctl restart slurmdbd; for i in \$(seq 60); do ss -Hltn 'sport = :6819' | grep -q . && break; sleep 0.5; done; scontrol reconfigure; sleep 20; slurmrestd-access status | head -c 600; echo; journalctl -u slurmrestd-access-watch.service -o cat --no-pager -n 8"
on "$PROBE; journalctl -u slurm-web-agent.service -b -o cat --no-pager | grep -c '^Started '"
# Each sample that did not answer 200, with the samples just before and after it.
on "touch /root/poll.stop; sleep 2; awk '{print \$2, \$3}' /root/poll.log | uniq -c; awk '{ if (\$3 != 200) { if (p != \"\" && !n) print p; print; n = 1 } else if (n) { print; n = 0 }; p = \$0 }' /root/poll.log | cut -c1-150"

fi
