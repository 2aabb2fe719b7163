#!/bin/sh
# One-shot latency of whole processes (issue 14): `GET k` through redis-cli (signed in with
# --user <oid> --pass <token>), through redis-entra with a cached token, and through redis-entra
# with no cache (a token request per run), against the same emulator, with hyperfine.
#
#   redis-entra emulator --env-file /tmp/azure.env &   # wait for `ready`
#   . /tmp/azure.env && scripts/one-shot-bench.sh [RUNS] [path/to/redis-entra]
#
# Prints hyperfine's table (written to target/one-shot-bench.md and .json), then the number of
# token requests a shell loop of 100 `redis-entra INCR n` made (each run's debug log says
# "token stored in the cache" when it asked the credential).
set -eu
runs=${1:-100}
bin=${2:-target/release/redis-entra}
: "${AZURE_REDIS_PORT:?source the emulator env file first}"
command -v hyperfine >/dev/null || { echo "hyperfine is missing: apt-get install hyperfine" >&2; exit 2; }
command -v redis-cli >/dev/null || { echo "redis-cli is missing: apt-get install redis-tools" >&2; exit 2; }
export REDIS_ENTRA_IMDS_ADDR=${REDIS_ENTRA_IMDS_ADDR:-127.0.0.1:9}
# A cache folder of this run only, never the user's own.
XDG_RUNTIME_DIR=$(mktemp -d)
export XDG_RUNTIME_DIR
trap 'rm -rf "$XDG_RUNTIME_DIR"' EXIT
token=$("$bin" token --raw-token)
oid=$("$bin" token | awk '/^oid:/ { print $2 }')
"$bin" SET k v >/dev/null         # also fills the token cache
mkdir -p target
hyperfine -N --warmup 5 --runs "$runs" \
    --export-markdown target/one-shot-bench.md --export-json target/one-shot-bench.json \
    -n redis-cli "redis-cli --tls --cacert $SSL_CERT_FILE -h localhost -p $AZURE_REDIS_PORT --user $oid --pass $token --no-auth-warning GET k" \
    -n "redis-entra (cached token)" "$bin GET k" \
    -n "redis-entra --no-token-cache" "$bin --no-token-cache GET k"

rm -rf "${XDG_RUNTIME_DIR:?}"/redis-entra
requests=0
i=0
while [ "$i" -lt 100 ]; do
    n=$("$bin" --log debug INCR n 2>&1 >/dev/null | grep -c "token stored in the cache" || true)
    requests=$((requests + n))
    i=$((i + 1))
done
echo "token requests made by a shell loop of 100 \`redis-entra INCR n\` (empty cache at start): $requests"
