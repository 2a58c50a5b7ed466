#!/usr/bin/env bash
# tests/bench/bench_stall.sh: what a long prompt does to streams that are decoding, with the
# scheduler's prefill limit (--prefill-stall, coordinator/batch_cost.h) off and on.
# A coordinator and 2 workers on loopback serve a random-weight mkmodel file (cached in
# $BUILD/bench/); per run, BENCH_STALL_STREAMS (4) greedy streams of BENCH_STALL_OUTPUT (160)
# tokens start, and once they decode one request with a BENCH_STALL_PROMPT-word (600) prompt
# arrives (600 words are about 1250 tokens). Printed per run and as medians over
# BENCH_STALL_RUNS (3; the settings alternate):
#   streams: inter-token p50 / p99 / max (ms), the stall the long prompt causes, and their
#            output tokens/s;
#   long prompt: its time to first token (ms).
# Environment: BENCH_STALL_MODEL (mkmodel flags, default "--size 0.8b"), BENCH_STALL_VALUES
# ("0 3": the --prefill-stall settings compared; 0 = off, 3 = the default), the sizes above.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
source tests/e2e/lib_cluster.sh
spec=${BENCH_STALL_MODEL:-"--size 0.8b"}
values=${BENCH_STALL_VALUES:-"0 3"}
runs=${BENCH_STALL_RUNS:-3}
streams=${BENCH_STALL_STREAMS:-4}
olen=${BENCH_STALL_OUTPUT:-160}
plen=${BENCH_STALL_PROMPT:-600}
mkdir -p "$BUILD/bench"
tag=$(echo "$spec" | tr -s -c 'a-z0-9.' '_')
model=$BUILD/bench/stall${tag}q8_0.gguf
if [ ! -f "$model" ]; then
    # shellcheck disable=SC2086 # spec is a list of flags
    "$BUILD/baton" mkmodel $spec --type q8_0 -o "$model.tmp" 2>/dev/null
    mv "$model.tmp" "$model"
fi
trap 'rc=$?; set +e; [ $rc -ne 0 ] && cluster_logs | grep -E " [WE] " | tail -8; cleanup; exit $rc' EXIT
declare -A res # "$value" -> lines "p50 p99 max tok_s ttft"
for ((r = 0; r < runs; r++)); do
    for v in $values; do
        cluster_start "$model" 2 --max-seqs 8 --max-ctx 2048 --max-batch 256 --min-gain 0.01 \
            --prefill-stall "$v"
        "$BUILD/baton" load --url "$CLUSTER_URL" --concurrency "$streams" --requests "$streams" \
            --prompt-len 16 --output-len "$olen" --temp 0 --timeout 300 --quiet --json \
            >"$TMP/streams.json" &
        lp=$!
        # the streams decode once the coordinator has sampled for each of them; a fixed wait
        # that covers their short prompts on a 2-core machine
        sleep "${BENCH_STALL_DELAY:-4}"
        "$BUILD/baton" load --url "$CLUSTER_URL" --requests 1 --prompt-len "$plen" \
            --output-len 4 --temp 0 --timeout 600 --quiet --json >"$TMP/long.json" || true
        wait "$lp" || true # the summaries say what failed
        line=$(node -e '
            const s = require(process.argv[1]), l = require(process.argv[2]);
            if (!(s.ok >= 1) || l.ok !== 1) process.exit(1);
            const f = (x) => x.toFixed(1);
            console.log([f(s.itl_ms.p50), f(s.itl_ms.p99), f(s.itl_ms.max),
                         f(s.output_tok_per_s), f(l.ttft_ms.p50)].join(" "));
        ' "$TMP/streams.json" "$TMP/long.json") || {
            echo "bench_stall: run failed"; cat "$TMP/streams.json" "$TMP/long.json"; exit 1; }
        read -r p50 p99 mx toks ttft <<<"$line"
        echo "bench_stall: run=$r prefill_stall=$v streams_itl_p50_ms=$p50 itl_p99_ms=$p99" \
            "itl_max_ms=$mx streams_out_tok_s=$toks long_prompt_ttft_ms=$ttft"
        res[$v]+="$line"$'\n'
        cluster_cleanup
    done
done
med() { sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
for v in $values; do
    col() { printf '%s' "${res[$v]}" | awk -v c="$1" 'NF {print $c}' | med; }
    echo "bench_stall: model=$(basename "$model") streams=$streams prompt_words=$plen" \
        "prefill_stall=$v median of $runs: itl_p50_ms=$(col 1) itl_p99_ms=$(col 2)" \
        "itl_max_ms=$(col 3) streams_out_tok_s=$(col 4) long_prompt_ttft_ms=$(col 5)"
done
