#!/usr/bin/env bash
# tests/e2e/test_load.sh: `baton load --check-greedy` at concurrency 1, 4 and 16 against a
# coordinator + 2 workers on loopback. Each of 8 fixed prompts (completions endpoint, token ids
# returned) is first run alone; every answer under load must carry exactly the same greedy
# tokens (continuous batching must not change results). Runs on the tiny-a fixture with f32 and
# with q8_0 weights (quantized activations), default f16 wire. Prints tokens/s per concurrency.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
source tests/e2e/lib_cluster.sh
fx=$(dirname "$FIX")
trap 'rc=$?; set +e; [ $rc -ne 0 ] && cluster_logs; cleanup; exit $rc' EXIT

for w in f32 q8_0; do
    cluster_start "$fx/tiny-a/gguf/model-$w.gguf" 2 --max-seqs 16
    echo "tiny-a $w: cluster at $CLUSTER_URL"
    for c in 1 4 16; do
        out=$("$BUILD/baton" load --url "$CLUSTER_URL" --concurrency "$c" --requests $((c * 6 + 8)) \
            --prompt-len 8:48 --output-len 24 --check-greedy --prompts 8 --quiet --json) || {
            echo "load at concurrency $c failed: $out"
            exit 1
        }
        # the summary must show the work was done and matched: every request ok, none mismatched
        node -e '
            const r = JSON.parse(process.argv[1]);
            if (r.errors.total !== 0 || r.ok !== r.requests || r.output_tokens <= 0) {
                console.error("bad summary", JSON.stringify(r)); process.exit(1);
            }
            console.log(`  concurrency=${r.concurrency} requests=${r.ok} greedy_mismatch=${r.errors.greedy_mismatch}` +
                ` output_tok_s=${r.output_tok_per_s.toFixed(1)} ttft_p50_ms=${r.ttft_ms.p50.toFixed(1)}` +
                ` itl_p50_ms=${r.itl_ms.p50.toFixed(2)}`);
        ' "$out"
    done
    cluster_cleanup
done
echo "greedy outputs under load equal the single-request outputs"
