#!/usr/bin/env bash
# Install the Debian 12 packages reap needs to build, test and run, if any
# are missing. Safe to run again; needs root (or sudo) only when installing.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config
  libgrpc-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler grpc-proto
  libssl-dev librocksdb-dev libzstd-dev libjansson-dev uuid-dev libjwt-dev
  libmicrohttpd-dev libseccomp-dev libsystemd-dev
  libcriterion-dev bubblewrap
  bazel-bootstrap bazel-rules-cc bazel-rules-java
  libnetty-tcnative-jni   # Debian's Bazel needs it for grpcs:// (ALPN)
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
echo "deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
