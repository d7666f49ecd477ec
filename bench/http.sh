#!/usr/bin/env bash
# The HTTP benchmark: installs Debian's wrk, haproxy and nginx when missing, builds the release
# API server, proxy and benchmark, and runs `rudder-bench http` (extra arguments go to it,
# e.g. `bash bench/http.sh --seconds 5`). Needs root: the proxy owns an nftables table.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

missing=()
for tool in wrk haproxy nginx; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "http.sh: installing Debian's ${missing[*]}" >&2
    if ! { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; } >/dev/null; then
        echo "http.sh: *** could not install ${missing[*]}: the comparison cannot run ***" >&2
        exit 1
    fi
    # Debian starts the services it installs; the benchmark runs its own on loopback ports.
    for svc in haproxy nginx; do
        service "$svc" stop >/dev/null 2>&1 || true
    done
fi

cargo build --release -p rudder-apiserver -p rudder-proxy -p rudder-bench
target="${CARGO_TARGET_DIR:-$root/target}"
exec "$target/release/rudder-bench" --rudder-bin "$target/release/rudder-apiserver" http "$@"
