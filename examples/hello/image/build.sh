#!/bin/sh
# Builds the example's image, rudder/hello:1.0, on the local Docker engine from Debian's static
# busybox (apt-get install busybox-static). Nothing is pulled.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
busybox=/bin/busybox
if [ ! -x "$busybox" ] || ! "$busybox" --list | grep -qx httpd; then
  echo "build.sh: needs Debian's static busybox at $busybox: apt-get install busybox-static" >&2
  exit 1
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$busybox" "$ctx/busybox"
cp "$here/Dockerfile" "$ctx/Dockerfile"
if ! out=$(docker build -q -t rudder/hello:1.0 "$ctx" 2>&1); then
  echo "$out" >&2
  exit 1
fi
echo "built rudder/hello:1.0"
