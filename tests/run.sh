#!/usr/bin/env bash
# Runs every Criterion suite in $BUILD/tests, then tests/e2e/*.sh, and prints one summary line
# in Criterion's format as the last line. Exit status: 0 only if everything passed.
set -uo pipefail
BUILD=${BUILD:-build}
cd "$(dirname "$0")/.."
tested=0 passing=0 failing=0 crashing=0
failed_names=()
for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    case "$t" in *.o|*.d) continue ;; esac
    out=$("$t" --jobs 1 2>&1)
    rc=$?
    syn=$(printf '%s\n' "$out" | grep 'Synthesis:' | tail -1)
    if [ -z "$syn" ]; then
        printf '%s\n' "$out" | tail -30
        echo "run: $t produced no summary (rc=$rc)"
        crashing=$((crashing + 1)); tested=$((tested + 1)); failed_names+=("$t")
        continue
    fi
    read -r a b c d < <(printf '%s\n' "$syn" | sed -E 's/.*Tested: ([0-9]+).*Passing: ([0-9]+).*Failing: ([0-9]+).*Crashing: ([0-9]+).*/\1 \2 \3 \4/')
    tested=$((tested + a)); passing=$((passing + b)); failing=$((failing + c)); crashing=$((crashing + d))
    if [ "$rc" -ne 0 ] || [ "$c" -ne 0 ] || [ "$d" -ne 0 ]; then
        printf '%s\n' "$out" | grep -v '^\[----\]   ' | tail -40
        failed_names+=("$t")
    fi
    echo "run: $(basename "$t"): $a tested, $b passing"
done
# The AArch64 kernels (ops/ops_neon.c), cross-compiled and run under qemu-user against ops_ref
# (Makefile test-cross), when the cross compiler and qemu exist (.ci/deps.sh installs both).
if command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 && command -v qemu-aarch64 >/dev/null 2>&1; then
    tested=$((tested + 1))
    log=$(mktemp)
    if make --no-print-directory BUILD="$BUILD" test-cross >"$log" 2>&1; then
        passing=$((passing + 1))
        echo "run: test-cross (aarch64 neon under qemu-user): ok, $(grep -c '^ok ' "$log") checks"
    else
        failing=$((failing + 1)); failed_names+=("test-cross")
        grep -E 'FAIL|error' "$log" | head -20 | sed 's/^/run:   /'
        tail -20 "$log"; echo "run: test-cross (aarch64 neon under qemu-user): FAILED"
    fi
    rm -f "$log"
else
    echo "run: test-cross: skipped (aarch64-linux-gnu-gcc or qemu-aarch64 not installed)"
fi
for s in tests/e2e/test_*.sh; do
    [ -f "$s" ] || continue
    tested=$((tested + 1))
    log=$(mktemp)
    if BUILD="$BUILD" bash "$s" >"$log" 2>&1; then
        passing=$((passing + 1)); echo "run: $(basename "$s"): ok"
    else
        failing=$((failing + 1)); failed_names+=("$s")
        # The verdict first (daemon logs can bury it), then the end of the output.
        grep -m 5 -E '^FAIL|FAIL:|Assertion' "$log" | sed 's/^/run:   /'
        tail -30 "$log"; echo "run: $(basename "$s"): FAILED"
    fi
    rm -f "$log"
done
[ ${#failed_names[@]} -eq 0 ] || echo "run: failed: ${failed_names[*]}"
echo "[====] Synthesis: Tested: $tested | Passing: $passing | Failing: $failing | Crashing: $crashing"
[ "$failing" -eq 0 ] && [ "$crashing" -eq 0 ] && [ ${#failed_names[@]} -eq 0 ]
