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

tmp=$(mktemp -d /tmp/baton-demo.XXXXXX)
pids=()
cleanup() {
    local rc=$?
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "$rc" -ne 0 ]; then
        echo "demo: FAILED (rc=$rc); last log lines:" >&2
        for f in "$tmp"/*.log; do [ -f "$f" ] && { echo "== $f" >&2; tail -8 "$f" >&2; }; done
    fi
    if [ "${DEMO_KEEP:-0}" = 1 ]; then echo "demo: logs kept in $tmp"; else rm -rf "$tmp"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits up to $3 seconds for the regex $2 in file $1 while the process $4 lives; prints the match.
wait_for() {
    local file=$1 re=$2 secs=$3 pid=$4 i
    for ((i = 0; i < secs * 10; i++)); do
        if grep -oE "$re" "$file" 2>/dev/null | head -1 | grep .; then return 0; fi
        kill -0 "$pid" 2>/dev/null || { echo "demo: process $pid exited early" >&2; return 1; }
        sleep 0.1
    done
    echo "demo: timed out after ${secs}s waiting for '$re' in $file" >&2
    return 1
}

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
"$BUILD/baton-coordinator" --model "$model" --bind tcp://127.0.0.1:0 --min-workers 2 \
    --http 127.0.0.1:0 --max-seqs 8 --max-ctx 2048 --min-gain 0.01 \
    >"$tmp/plan.txt" 2>"$tmp/coordinator.log" &
coord=$!; pids+=("$coord")
ctl=$(wait_for "$tmp/coordinator.log" 'control=tcp://[0-9.]+:[0-9]+' 30 "$coord")
ctl=${ctl#control=}
for i in 1 2; do
    "$BUILD/baton-worker" --join "$ctl" --threads "$threads" --mem 2G --id "demo-w$i" \
        --cache-dir "$tmp/cache$i" >"$tmp/worker$i.log" 2>&1 &
    pids+=("$!")
done
port=$(wait_for "$tmp/coordinator.log" 'ready http_port=[0-9]+' 180 "$coord")
port=${port#ready http_port=}
url=http://127.0.0.1:$port
sed 's/^/demo:   /' "$tmp/plan.txt"
grep -oE 'serving: .*' "$tmp/coordinator.log" | sed 's/^/demo:   /'
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
