#!/usr/bin/env bash
# Installs every Debian package baton needs to build, test and fuzz. Idempotent, non-interactive.
set -euo pipefail
pkgs=(build-essential pkg-config git ca-certificates clang libclang-rt-14-dev clang-format
      libzmq3-dev libsodium-dev libprotobuf-c-dev protobuf-c-compiler liburing-dev
      libmicrohttpd-dev libcjson-dev libcriterion-dev libxxhash-dev libpcre2-dev
      libopenmpi-dev openmpi-bin iproute2 curl python3
      ansible ansible-lint python3-apt openssh-server openssh-client systemd
      gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)
# Node.js (for the official openai client in tests) may come from another repository: only add
# Debian's when none is installed.
command -v npm >/dev/null 2>&1 || pkgs+=(nodejs npm)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "deps: all ${#pkgs[@]} packages present"
    exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
