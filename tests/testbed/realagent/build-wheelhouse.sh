#!/bin/sh
# HAND CHECK ONLY (never run by CI or the e2e tests): build an offline wheelhouse of the REAL
# Slurm-web agent for a testbed host (Debian trixie: CPython 3.13, x86_64, no network).
#
#   tests/testbed/realagent/build-wheelhouse.sh [TAG] [OUT]
#     TAG  a Slurm-web tag, default v5.2.0 (v6.0.0 works the same way)
#     OUT  default /var/tmp/slurm-web-realagent/TAG
#
# Slurm-web's source comes from a bare mirror of rackslab/Slurm-web (SLURMWEB_REPO, default
# /work/.mirror/rackslab+Slurm-web/repo); nothing of it enters this repository. Its Python
# dependencies are downloaded from the package registry as cp313 manylinux wheels, which the
# testbed hosts (no network) then install with `pip install --no-index --no-deps`.
# PYTHON names the interpreter that runs pip here (it needs the `wheel` package; default: the
# worktree's .venv/bin/python, else python3).
set -eu

TAG=${1:-v5.2.0}
OUT=${2:-/var/tmp/slurm-web-realagent/$TAG}
REPO=${SLURMWEB_REPO:-/work/.mirror/rackslab+Slurm-web/repo}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi

rm -rf "$OUT"
mkdir -p "$OUT/src" "$OUT/wheels" "$OUT/share"
git -C "$REPO" archive "$TAG" slurmweb conf lib pyproject.toml README.md LICENSE | tar -x -C "$OUT/src"
# The files a Slurm-web package puts under /usr/share/slurm-web (the agent reads them by
# absolute path: settings definitions and the RBAC policy) and its units, as of this tag.
cp -r "$OUT/src/conf" "$OUT/src/lib" "$OUT/share/"

"$PYTHON" -m pip wheel -q --no-deps -w "$OUT/wheels" "$OUT/src"

# pyproject's dependencies plus its `agent` extra. RacksDB comes without its own dependencies:
# pycairo and PyGObject have no wheels (stubs/ stands for the names its drawers import).
# 6.x's unified `slurm-web` command imports its gateway even for `agent` and `connect-check`:
# it needs the gateway's `markdown` too, and python-ldap (no wheel: stubs/ldap). 5.x's separate
# executables need neither.
TARGET="--python-version 3.13 --implementation cp --abi cp313 --only-binary=:all:
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux_2_28_x86_64 --platform manylinux_2_5_x86_64
        --platform manylinux1_x86_64"
# shellcheck disable=SC2086
"$PYTHON" -m pip download -q -d "$OUT/wheels" $TARGET \
    aiohttp Flask 'RFL.authentication>=1.5.0' 'RFL.core>=1.1.0' 'RFL.log>=1.4.0' \
    'RFL.settings>=1.4.0' 'RFL.web>=1.3.0' setuptools \
    ClusterShell prometheus-client redis requests requests-toolbelt markdown
# shellcheck disable=SC2086
"$PYTHON" -m pip download -q --no-deps -d "$OUT/wheels" $TARGET racksdb

cp -r "$HERE/stubs" "$OUT/stubs"
echo "$TAG" > "$OUT/TAG"
ls "$OUT/wheels" > "$OUT/WHEELS"
echo "wheelhouse: $OUT ($(wc -l < "$OUT/WHEELS") wheels)"
