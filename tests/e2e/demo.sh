#!/usr/bin/env bash
# tests/e2e/demo.sh: `make demo`. Writes a small random-weight Qwen3.5 model (baton mkmodel),
# starts a coordinator and two workers on 127.0.0.1 (ephemeral ports; the workers fetch their
# layers from the coordinator), waits until the API is ready, sends one streamed chat request
# with `baton complete --chat`, runs a short `baton load`, then stops everything. Exit 0 only
# if all of that worked. Not named test_*.sh: `make test` does not run it, `make demo` does.
#   DEMO_SIZE (tiny|0.8b, default 0.8b: real 0.8B layer shapes, 4 layers, 32k vocab),
#   DEMO_KEEP=1 keeps the temp dir with the logs.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
for b in baton baton-coordinator baton-worker; do
    [ -x "$BUILD/$b" ] || { echo "demo: building ($BUILD/$b missing)"; make -s BUILD="$BUILD" -j"$(nproc)" all; break; }
done

source tests/e2e/lib_cluster.sh
tmp=$TMP
[ "${DEMO_KEEP:-0}" = 1 ] && KEEP=1
trap 'rc=$?; set +e; [ $rc -ne 0 ] && { echo "demo: FAILED (rc=$rc); last log lines:"
      tail -8 "$TMP/mkmodel.log" 2>/dev/null; cluster_logs 8; } >&2
      cleanup; exit $rc' EXIT

size=${DEMO_SIZE:-0.8b}
model=$tmp/demo-$size.gguf
echo "demo: 1/4 writing a random-weight model ($size shapes, q8_0) -> $model"
if [ "$size" = tiny ]; then
    "$BUILD/baton" mkmodel --size tiny --type q8_0 -o "$model" 2>"$tmp/mkmodel.log"
else
    "$BUILD/baton" mkmodel --size "$size" --layers 4 --vocab 32768 --type q8_0 -o "$model" \
        2>"$tmp/mkmodel.log"
fi
grep -o 'wrote .*' "$tmp/mkmodel.log" | sed 's/^/demo:   /'

# one core per worker on small machines, half the cores each on bigger ones
threads=$(( $(nproc) / 2 )); [ "$threads" -ge 1 ] || threads=1

echo "demo: 2/4 starting a coordinator and 2 workers on 127.0.0.1"
CLUSTER_THREADS=$threads CLUSTER_WORKER_MODEL=0 CLUSTER_READY_SECS=180 \
    cluster_start "$model" 2 --max-seqs 8 --max-ctx 2048 --min-gain 0.01
url=$CLUSTER_URL
sed 's/^/demo:   /' "$CLUSTER_DIR/plan.txt"
grep -oE 'serving: .*' "$CLUSTER_DIR/coordinator.log" | sed 's/^/demo:   /'
echo "demo:   OpenAI API at $url (GET /health: $(curl -s "$url/health" 2>/dev/null || echo '-'))"

echo "demo: 3/4 one chat request (streamed, temperature 0.8; random weights, so the words are noise)"
echo "----"
"$BUILD/baton" complete --url "$url" --chat --stream --temp 0.8 -n 64 \
    -p "Write a short poem about the sea and the wind." 2>"$tmp/complete.err"
echo "----"
sed 's/^/demo:   /' "$tmp/complete.err"

echo "demo: 4/4 a short load: 16 requests, 4 at a time"
"$BUILD/baton" load --url "$url" --concurrency 4 --requests 16 --prompt-len 32 --output-len 32 \
    --quiet | sed 's/^/demo:   /'
echo "demo: ok"
