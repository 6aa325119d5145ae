#!/usr/bin/env bash
# Run a command with a private, throwaway redis-server on a free loopback port.
# Exports LUNARA_TEST_REDIS_URL for the test suite; the server dies with this script.
set -euo pipefail

if ! command -v redis-server >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
        echo "redis-server not found: installing Debian's redis-server" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
        # Debian's package starts a system instance; we only need the binary.
    else
        echo "error: redis-server is required for the tests; install it (Debian/Ubuntu: sudo apt-get install redis-server)" >&2
        exit 1
    fi
fi

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
workdir="$(mktemp -d)"
redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
    --dir "$workdir" --daemonize no --logfile "$workdir/redis.log" &
redis_pid=$!
cleanup() {
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    rm -rf "$workdir"
}
trap cleanup EXIT INT TERM

ready=""
for _ in $(seq 1 200); do
    if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then ready=1; break; fi
    sleep 0.05
done
if [ -z "$ready" ]; then
    echo "error: the private redis-server did not answer on port $port; see $workdir/redis.log" >&2
    cat "$workdir/redis.log" >&2 || true
    exit 1
fi

export LUNARA_TEST_REDIS_URL="redis://127.0.0.1:${port}/0"
export NO_PROXY="127.0.0.1,localhost"
export no_proxy="127.0.0.1,localhost"
"$@"
