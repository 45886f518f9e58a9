#!/bin/sh
# LocalStack init hook (ready stage): creates the bucket walhouse writes to.
# Runs inside the LocalStack container (docker-compose.yml mounts
# localstack/init at /etc/localstack/init) and under localstack/run-local.sh,
# which points LocalStack's FILESYSTEM_ROOT at a copy of this folder.
# A plain HTTP PUT of the bucket: LocalStack does not check signatures.
set -eu
bucket="${WALHOUSE_BUCKET:-walhouse}"
listen="${GATEWAY_LISTEN:-0.0.0.0:4566}"
listen="${listen%%,*}"
port="${listen##*:}"
host="${listen%:*}"
[ "$host" = "0.0.0.0" ] && host=127.0.0.1
if command -v awslocal >/dev/null 2>&1; then
    awslocal --endpoint-url "http://$host:$port" s3 mb "s3://$bucket" || true
else
    curl -fsS -o /dev/null -X PUT "http://$host:$port/$bucket" || true
fi
echo "walhouse: bucket $bucket ready at http://$host:$port"
