#!/bin/sh
# Install what the testbed needs on the machine itself (Debian/Ubuntu, as root). Idempotent:
# packages already installed are left alone, and apt-get runs only when something is missing.
#   debootstrap        builds the cached Debian bases (bullseye, bookworm, trixie; forky with
#                      sid's script, which Debian 12's debootstrap has)
#   systemd-container  systemd-nspawn boots the hosts
#   iproute2           the bridge; openssh-client reaches the hosts; debian-archive-keyring
#                      lets debootstrap check each release's Release file.
#   uwsgi-core, uwsgi-plugin-python3
#                      Debian's uWSGI, which runs the agent stand-in in the unit tests as
#                      it does on the testbed's uWSGI agent host (tests/unit/test_testbed_uwsgi.py;
#                      on Debian 12: 7 packages, +5.1 MB, 4 s)
set -eu

PACKAGES="debootstrap systemd-container iproute2 openssh-client debian-archive-keyring"
PACKAGES="$PACKAGES uwsgi-core uwsgi-plugin-python3"

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-host.sh: run as root (it installs: $PACKAGES)" >&2
    exit 1
fi

missing=""
for pkg in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $pkg"
    fi
done

if [ -n "$missing" ]; then
    echo "setup-host.sh: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    apt-get install -y -q --no-install-recommends $missing
else
    echo "setup-host.sh: all present ($PACKAGES)"
fi

# The overlay file system the hosts are mounted with.
if ! grep -qw overlay /proc/filesystems; then
    modprobe overlay 2>/dev/null || {
        echo "setup-host.sh: the kernel has no overlay file system support" >&2
        exit 1
    }
fi
