#!/usr/bin/env bash
# Runs every bench binary in $BUILD/bench (bench_*), one after another, passing their output
# through, then every tests/bench/bench_*.sh script. Extra arguments go to each binary.
# Exit status: 0 only if every bench succeeded.
set -uo pipefail
BUILD=${BUILD:-build}
cd "$(dirname "$0")/../.."
failed=()
found=0
# bench_forward's inputs: the mkmodel 9B files, written once and cached in build/bench/, and
# llama.cpp (tests/bench/build_llama.sh; LLAMA_BIN=dir with an existing llama-bench is linked).
if [ -x "$BUILD/bench/bench_forward" ] && [ -z "${BENCH_MODELS:-}" ]; then
    mkdir -p build/bench
    for t in q4_k_m q8_0; do
        f=build/bench/9b-$t.gguf
        [ -f "$f" ] && continue
        echo "run: writing $f (baton mkmodel --size 9b --type $t)"
        "$BUILD/baton" mkmodel --size 9b --type "$t" -o "$f.tmp" && mv "$f.tmp" "$f"
    done
fi
if [ -x "$BUILD/bench/bench_forward" ]; then
    bash tests/bench/build_llama.sh || echo "run: llama.cpp unavailable; bench_forward reports baton only"
fi
for b in "$BUILD"/bench/bench_*; do
    [ -x "$b" ] && [ -f "$b" ] || continue
    case "$b" in *.o|*.d) continue ;; esac
    found=1
    echo "run: $(basename "$b")"
    start=$(date +%s%N)
    if ! "$b" "$@"; then
        failed+=("$(basename "$b")")
    fi
    echo "run: $(basename "$b"): ms=$((($(date +%s%N) - start) / 1000000))"
done
# scripted benches (tests/bench/bench_*.sh: whole daemons driven by the CLI), after the binaries
for s in tests/bench/bench_*.sh; do
    [ -f "$s" ] || continue
    found=1
    echo "run: $(basename "$s")"
    start=$(date +%s%N)
    if ! BUILD="$BUILD" bash "$s"; then
        failed+=("$(basename "$s")")
    fi
    echo "run: $(basename "$s"): ms=$((($(date +%s%N) - start) / 1000000))"
done
[ "$found" -eq 1 ] || { echo "run: no bench binaries in $BUILD/bench (make BUILD=$BUILD benches)"; exit 1; }
[ ${#failed[@]} -eq 0 ] || { echo "run: failed: ${failed[*]}"; exit 1; }
echo "run: all benches ok"
