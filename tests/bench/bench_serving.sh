#!/usr/bin/env bash
# tests/bench/bench_serving.sh: serving throughput of a coordinator + 2 workers on loopback,
# measured with `baton load` (streaming completions) at concurrency 1, 4 and 16. One line per
# concurrency with aggregate output tokens/s and latency percentiles; run by tests/bench/run.sh.
# The models are random-weight q8_0 ones from `baton mkmodel` (cached in $BUILD/bench/): the
# tiny shapes (hidden 256, 4 layers), then the 0.8B shapes (hidden 1024) cut to 4 layers and a
# 32k vocabulary, so a 2-core machine finishes in about a minute and a half.
#   BENCH_SERVING_MODELS: ';'-separated mkmodel flag sets ("--size 0.8b" for the whole 0.8B)
#   BENCH_SERVING_SECS: seconds per concurrency (default 10)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
source tests/e2e/lib_cluster.sh
secs=${BENCH_SERVING_SECS:-10}
specs=${BENCH_SERVING_MODELS:-"--size tiny;--size 0.8b --layers 4 --vocab 32768"}
mkdir -p "$BUILD/bench"
trap 'rc=$?; set +e; [ $rc -ne 0 ] && cluster_logs | grep -E " [WE] " | tail -8; cleanup; exit $rc' EXIT
failed=0
IFS=';' read -ra spec_list <<<"$specs"
for spec in "${spec_list[@]}"; do
    tag=$(echo "$spec" | tr -s -c 'a-z0-9.' '_')
    model=$BUILD/bench/serving${tag}q8_0.gguf
    if [ ! -f "$model" ]; then
        # shellcheck disable=SC2086 # spec is a list of flags
        "$BUILD/baton" mkmodel $spec --type q8_0 -o "$model.tmp" 2>/dev/null
        mv "$model.tmp" "$model"
    fi
    # Default heartbeat window (1 s x 3): workers answer pings from a comms thread while the
    # compute thread runs long prefill steps. --min-gain 0.01: both workers take layers even when the planner would drop one.
    cluster_start "$model" 2 --max-seqs 16 --max-batch 64 --min-gain 0.01
    echo "bench_serving: model=$(basename "$model") ($spec, q8_0) workers=2 secs=$secs" \
        "$(grep -o "stages=.*" "$CLUSTER_DIR/plan.txt")"
    for c in 1 4 16; do
        out=$("$BUILD/baton" load --url "$CLUSTER_URL" --concurrency "$c" --duration "$secs" \
            --prompt-len 32 --output-len 64 --temp 0 --timeout 30 --quiet --json) || true
        node -e '
            const r = JSON.parse(process.argv[1]);
            const f = (x, d = 1) => (x === undefined ? "-" : x.toFixed(d));
            console.log(`bench_serving: concurrency=${r.concurrency} requests=${r.ok} errors=${r.errors.total}` +
                ` output_tok_s=${f(r.output_tok_per_s)} req_s=${f(r.req_per_s, 2)}` +
                ` ttft_p50_ms=${f(r.ttft_ms.p50)} ttft_p99_ms=${f(r.ttft_ms.p99)}` +
                ` itl_p50_ms=${f(r.itl_ms.p50)} itl_p99_ms=${f(r.itl_ms.p99)} e2e_p50_ms=${f(r.e2e_ms.p50)}` +
                (r.errors.last ? ` last_error="${r.errors.last}"` : ""));
            if (r.ok === 0) process.exit(1);
        ' "$out" || failed=1
    done
    cluster_cleanup
done
exit $failed
