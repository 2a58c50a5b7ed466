#!/usr/bin/env bash
# Runs every bench binary in $BUILD/bench (bench_*), one after another, passing their output
# through. Extra arguments go to each binary. Exit status: 0 only if every bench succeeded.
set -uo pipefail
BUILD=${BUILD:-build}
cd "$(dirname "$0")/../.."
failed=()
found=0
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
[ "$found" -eq 1 ] || { echo "run: no bench binaries in $BUILD/bench (make BUILD=$BUILD benches)"; exit 1; }
[ ${#failed[@]} -eq 0 ] || { echo "run: failed: ${failed[*]}"; exit 1; }
echo "run: all benches ok"
