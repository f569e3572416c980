#!/usr/bin/env bash
# Installs what the project needs on this machine, idempotently: the testbed's system packages
# and a virtual environment (.venv) with the project, pyinfra and the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: run as root (the testbed boots systemd-nspawn containers)" >&2
    exit 1
fi
bash tests/testbed/setup-host.sh

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -e "$stamp" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
    rm -f .venv/.installed-*
    touch "$stamp"
fi
