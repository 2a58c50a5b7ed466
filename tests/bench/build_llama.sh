#!/usr/bin/env bash
# Builds llama.cpp's llama-bench, llama-batched-bench and ggml-rpc-server into build/llama.cpp/
# (never committed)
# from the source bundle shipped in the node-llama-cpp npm package (3.22.1: llama.cpp
# de3ff81, the release the fixtures were made with). Skips the build when
# build/llama.cpp/bin/llama-bench and llama-batched-bench exist. If LLAMA_BIN names a directory that already holds
# llama-bench, it is linked as build/llama.cpp/bin instead of building.
# Needs: npm, git, cmake, a C/C++ compiler. Uses at most 2 jobs.
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=build/llama.cpp
[ -x "$dest/bin/llama-bench" ] && [ -x "$dest/bin/llama-batched-bench" ] &&
    { echo "build_llama: $dest/bin/llama-bench present"; exit 0; }
mkdir -p "$dest"
if [ -n "${LLAMA_BIN:-}" ] && [ -x "$LLAMA_BIN/llama-bench" ] && [ ! -d "$dest/build" ]; then
    ln -sfn "$(cd "$LLAMA_BIN" && pwd)" "$dest/bin"
    echo "build_llama: linked $dest/bin -> $LLAMA_BIN"
    exit 0
fi
pkg=node-llama-cpp-3.22.1.tgz
if [ ! -f "build/$pkg" ]; then
    (cd build && npm pack node-llama-cpp@3.22.1 >/dev/null)
fi
if [ ! -d "$dest/src/.git" ]; then
    rm -rf "$dest/pkg" "$dest/src"
    mkdir -p "$dest/pkg"
    tar -xzf "build/$pkg" -C "$dest/pkg"
    git clone -q "$dest/pkg/package/llama/gitRelease.bundle" "$dest/src"
fi
cmake -S "$dest/src" -B "$dest/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_RPC=ON \
    -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF >/dev/null
cmake --build "$dest/build" -j2 --target llama-bench llama-batched-bench ggml-rpc-server
ln -sfn build/bin "$dest/bin"
echo "build_llama: built $dest/bin/llama-bench"
