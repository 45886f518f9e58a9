#!/usr/bin/env bash
# Runs LocalStack (S3 only) without Docker, in the foreground, on
# 127.0.0.1:PORT (default 4566), with the bucket $WALHOUSE_BUCKET (default
# walhouse) created by the same init hook the Docker setup uses.
#
#   localstack/run-local.sh [PORT]
#
# First run: a venv target/localstack-venv on Python 3.11 with
# localstack-core[runtime] installed by uv, pinned to the packages published
# before 2025-12-01 (--exclude-newer). Needs python3.11 on PATH.
# Stop it with Ctrl-C (or kill its pid).
set -euo pipefail
cd "$(dirname "$0")/.."
port="${1:-4566}"
venv=target/localstack-venv
if ! "$venv/bin/python" -c "import localstack.runtime.main" 2>/dev/null; then
    python=$(command -v python3.11 || true)
    if [ -z "$python" ]; then
        echo "localstack/run-local.sh: needs python3.11 on PATH" >&2
        exit 1
    fi
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check uv
    "$venv/bin/uv" pip install --quiet --python "$venv/bin/python" \
        --exclude-newer 2025-12-01 'localstack-core[runtime]'
fi
# LocalStack in host mode keeps its files under FILESYSTEM_ROOT and runs the
# init hooks of $FILESYSTEM_ROOT/etc/localstack/init.
root="$PWD/target/localstack-fs"
mkdir -p "$root/etc/localstack"
rm -rf "$root/etc/localstack/init"
cp -r localstack/init "$root/etc/localstack/init"
export FILESYSTEM_ROOT="$root"
# This machine may look like a container to LocalStack: say it is not, so the
# paths above are used (not /etc/localstack, /var/lib/localstack).
export OVERRIDE_IN_DOCKER=0
export SERVICES=s3
export GATEWAY_SERVER=hypercorn
export GATEWAY_LISTEN="127.0.0.1:$port"
export LOCALSTACK_HOST="127.0.0.1:$port"
export SKIP_SSL_CERT_DOWNLOAD=1
export DISABLE_EVENTS=1
exec "$venv/bin/python" -m localstack.runtime.main
