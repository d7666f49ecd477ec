#!/usr/bin/env bash
# Runs the Rudder vs etcd benchmark: installs Debian's etcd-server if etcd is missing, builds the
# release API server and benchmark, and runs it. Extra arguments go to rudder-bench
# (e.g. `bash bench/run.sh --quick`).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! command -v etcd >/dev/null 2>&1; then
    echo "run.sh: etcd not found; installing Debian's etcd-server" >&2
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
    if ! { "${sudo_cmd[@]}" apt-get update && "${sudo_cmd[@]}" apt-get install -y etcd-server; }; then
        echo "run.sh: *** could not install etcd-server: the comparison cannot run ***" >&2
        exit 1
    fi
fi
etcd --version | head -1 >&2

# One build at a time: the machine is small and shared.
cargo build --release -p rudder-apiserver
cargo build --release -p rudder-bench

target="${CARGO_TARGET_DIR:-$root/target}"

# The build just wrote hundreds of MB of binaries; let the kernel write them back before timing,
# or the measured fsyncs queue behind that writeback (seen: a third off Rudder's create rate,
# which runs first, while etcd, measured later, was unaffected).
sync
sleep 2
exec "$target/release/rudder-bench" --rudder-bin "$target/release/rudder-apiserver" "$@"
