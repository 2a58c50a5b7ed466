# tests/e2e/cluster_lib.sh: sourced by the serving e2e tests and benches (not run by itself).
# cluster_start MODEL N_WORKERS [coordinator flags...] starts baton-coordinator and N workers
# on 127.0.0.1 with ephemeral ports (each worker reads MODEL itself), waits until the HTTP API
# is ready, and sets CLUSTER_URL (http://127.0.0.1:PORT) and CLUSTER_DIR (logs). cluster_stop
# stops them (SIGTERM, then waits); call it from an EXIT trap. Needs BUILD set.
#   CLUSTER_THREADS: threads per worker (default: cores / N, at least 1)
CLUSTER_PIDS=()
CLUSTER_DIR=""
CLUSTER_URL=""

_cluster_wait() { # file regex secs pid -> prints the first match
    local file=$1 re=$2 secs=$3 pid=$4 i
    for ((i = 0; i < secs * 10; i++)); do
        if grep -oE "$re" "$file" 2>/dev/null | head -1 | grep .; then return 0; fi
        kill -0 "$pid" 2>/dev/null || { echo "cluster: process $pid exited early" >&2; return 1; }
        sleep 0.1
    done
    echo "cluster: timed out after ${secs}s waiting for '$re' in $file" >&2
    return 1
}

cluster_start() {
    local model=$1 n=$2 i ctl port
    shift 2
    CLUSTER_DIR=$(mktemp -d /tmp/baton-cluster.XXXXXX)
    local threads=${CLUSTER_THREADS:-$(($(nproc) / n))}
    [ "$threads" -ge 1 ] || threads=1
    "$BUILD/baton-coordinator" --model "$model" --bind tcp://127.0.0.1:0 --min-workers "$n" \
        --http 127.0.0.1:0 "$@" >"$CLUSTER_DIR/plan.txt" 2>"$CLUSTER_DIR/coordinator.log" &
    CLUSTER_PIDS+=("$!")
    local coord=$!
    ctl=$(_cluster_wait "$CLUSTER_DIR/coordinator.log" 'control=tcp://[0-9.]+:[0-9]+' 30 "$coord") ||
        return 1
    ctl=${ctl#control=}
    for ((i = 1; i <= n; i++)); do
        "$BUILD/baton-worker" --join "$ctl" --model "$model" --threads "$threads" --mem 2G \
            --id "w$i" --cache-dir "$CLUSTER_DIR/cache$i" >"$CLUSTER_DIR/worker$i.log" 2>&1 &
        CLUSTER_PIDS+=("$!")
    done
    port=$(_cluster_wait "$CLUSTER_DIR/coordinator.log" 'ready http_port=[0-9]+' 120 "$coord") ||
        return 1
    CLUSTER_URL=http://127.0.0.1:${port#ready http_port=}
}

cluster_stop() {
    local p
    for p in "${CLUSTER_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${CLUSTER_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    CLUSTER_PIDS=()
}

# Prints the tail of every log (for a failing test), then removes the directory.
cluster_logs() {
    local f
    for f in "$CLUSTER_DIR"/*.log; do
        [ -f "$f" ] && { echo "== $f"; tail -15 "$f"; }
    done
}

cluster_cleanup() {
    cluster_stop
    [ -n "$CLUSTER_DIR" ] && rm -rf "$CLUSTER_DIR"
    CLUSTER_DIR=""
}

# The shared reference fixtures: $BT_FIXTURES, else ../shared/fixtures next to the checkout,
# else /work/shared/fixtures (as tests/fixtures.h looks for them).
fixtures_dir() {
    local d
    for d in "${BT_FIXTURES:-}" "$PWD/../shared/fixtures" "$PWD/../../shared/fixtures" /work/shared/fixtures; do
        [ -n "$d" ] && [ -r "$d/tiny-a/model.json" ] && { echo "$d"; return 0; }
    done
    echo "fixtures not found: set BT_FIXTURES to the shared/fixtures folder" >&2
    return 1
}
