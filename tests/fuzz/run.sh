#!/usr/bin/env bash
# Builds and runs every libFuzzer target tests/fuzz/fuzz_<name>.c for $FUZZ_SECS seconds each.
# Corpus: $BUILD/corpus/fuzz_<name>/ (kept between runs), seeded from tests/fuzz/corpus/
# fuzz_<name>/, the bad fixtures tests/fixtures/bad/*.<name>, and the first 64 KiB of every
# *.<name> file under the shared fixtures (so fuzz_gguf gets GGUF heads). Crash inputs go to
# $BUILD/crashes/fuzz_<name>/. Prints one line per target; exit status 1 if any target failed
# to build or crashed. Usage: BUILD=build-fuzz FUZZ_SECS=60 bash tests/fuzz/run.sh [name...]
set -uo pipefail
BUILD=${BUILD:-build-fuzz}
FUZZ_SECS=${FUZZ_SECS:-60}
cd "$(dirname "$0")/../.."
fixtures=${BT_FIXTURES:-}
for d in "$fixtures" ../shared/fixtures /work/shared/fixtures; do
    [ -n "$d" ] && [ -d "$d" ] && { fixtures=$d; break; }
done
status=0
if [ $# -gt 0 ]; then srcs=(); for n in "$@"; do srcs+=("tests/fuzz/fuzz_${n#fuzz_}.c"); done
else srcs=(tests/fuzz/fuzz_*.c); fi
for src in "${srcs[@]}"; do
    [ -f "$src" ] || continue
    name=$(basename "$src" .c)
    ext=${name#fuzz_}
    bin=$BUILD/fuzz/$name
    log=$BUILD/fuzz/$name.log
    mkdir -p "$BUILD/fuzz"
    if ! make --no-print-directory "$bin" FUZZ_BUILD="$BUILD" >"$log.build" 2>&1; then
        tail -20 "$log.build"
        echo "fuzz: $name: BUILD FAILED (see $log.build)"
        status=1
        continue
    fi
    corpus=$BUILD/corpus/$name
    crashes=$BUILD/crashes/$name
    mkdir -p "$corpus" "$crashes"
    [ -d "tests/fuzz/corpus/$name" ] && cp -n "tests/fuzz/corpus/$name"/* "$corpus"/ 2>/dev/null
    for f in tests/fixtures/bad/*."$ext"; do
        [ -f "$f" ] && cp -n "$f" "$corpus/bad-$(basename "$f")"
    done
    if [ -n "$fixtures" ] && [ -d "$fixtures" ]; then
        while IFS= read -r f; do
            seed="$corpus/head-$(echo "$f" | md5sum | cut -c1-12)"
            [ -f "$seed" ] || head -c 65536 "$f" >"$seed"
        done < <(find "$fixtures" -name "*.$ext" -type f 2>/dev/null)
    fi
    n_seeds=$(ls "$corpus" | wc -l)
    "$bin" "$corpus" -max_total_time="$FUZZ_SECS" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$crashes/" -print_final_stats=1 >"$log" 2>&1
    rc=$?
    runs=$(grep -o 'Done [0-9]* runs' "$log" | tail -1 | awk '{print $2}')
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -1)
    if [ $rc -ne 0 ]; then
        grep -E 'ERROR|SUMMARY|Test unit written' "$log" | head -5
        echo "fuzz: $name: CRASH rc=$rc after ${runs:-?} runs; inputs in $crashes (log $log)"
        status=1
    else
        echo "fuzz: $name: ok, ${runs:-?} runs in ${FUZZ_SECS}s, seeds=$n_seeds, $cov"
    fi
done
exit $status
