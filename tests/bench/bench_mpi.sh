#!/usr/bin/env bash
# tests/bench/bench_mpi.sh: serving over the MPI transport (mpirun -np 3 baton-mpi: coordinator
# + 2 worker ranks on loopback) next to the same cluster over ZeroMQ (baton-coordinator + 2
# baton-workers), measured with `baton load` (streaming completions, greedy) at concurrency 1
# and 4. One line per transport and concurrency; run by tests/bench/run.sh.
# The model is bench_serving's random-weight tiny q8_0 (baton mkmodel, cached in $BUILD/bench/):
# with so little compute per token, the transports' latency shows (the MPI comm threads poll,
# sleeping up to --idle-us between polls; docs/mpi.md).
#   BENCH_MPI_SECS: seconds per concurrency (default 8)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
source tests/e2e/lib_cluster.sh
secs=${BENCH_MPI_SECS:-8}
[ -x "$BUILD/baton-mpi" ] || { echo "bench_mpi: $BUILD/baton-mpi not built (needs libopenmpi-dev)"; exit 1; }
[ "$(id -u)" -ne 0 ] || export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$BUILD/bench"
model=$BUILD/bench/serving_size_tiny_q8_0.gguf
if [ ! -f "$model" ]; then
    "$BUILD/baton" mkmodel --size tiny --type q8_0 -o "$model.tmp" 2>/dev/null
    mv "$model.tmp" "$model"
fi
threads=$(($(nproc) / 2))
[ "$threads" -ge 1 ] || threads=1
MPI_PID=
LOG=$TMP/mpi.log
bench_cleanup() {
    [ -n "$MPI_PID" ] && kill -TERM "$MPI_PID" 2>/dev/null && wait "$MPI_PID" 2>/dev/null
    cleanup
}
trap 'rc=$?; set +e; [ $rc -ne 0 ] && grep -E " [WE] " "$LOG" | tail -8; bench_cleanup; exit $rc' EXIT
failed=0

load() { # TRANSPORT URL
    local c out
    for c in 1 4; do
        out=$("$BUILD/baton" load --url "$2" --concurrency "$c" --duration "$secs" \
            --prompt-len 32 --output-len 64 --temp 0 --timeout 30 --quiet --json) || true
        node -e '
            const r = JSON.parse(process.argv[1]);
            const f = (x, d = 1) => (x === undefined ? "-" : x.toFixed(d));
            console.log(`bench_mpi: transport=${process.argv[2]} concurrency=${r.concurrency} ` +
                `requests=${r.ok} errors=${r.errors.total} output_tok_s=${f(r.output_tok_per_s)}` +
                ` ttft_p50_ms=${f(r.ttft_ms.p50)} itl_p50_ms=${f(r.itl_ms.p50)}` +
                ` itl_p99_ms=${f(r.itl_ms.p99)} e2e_p50_ms=${f(r.e2e_ms.p50)}` +
                (r.errors.last ? ` last_error="${r.errors.last}"` : ""));
            if (r.ok === 0) process.exit(1);
        ' "$out" "$1" || failed=1
    done
}

echo "bench_mpi: model=$(basename "$model") workers=2 threads=$threads secs=$secs"
mpirun -np 3 --oversubscribe --bind-to none --mca btl self,vader,tcp \
    --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo \
    "$BUILD/baton-mpi" --model "$model" --http 127.0.0.1:0 --max-seqs 16 --max-batch 64 \
    --min-gain 0.01 --threads "$threads" --mem 2000000000 </dev/null >"$LOG" 2>&1 &
MPI_PID=$!
port=$(wait_log "$LOG" 'ready http_port=[0-9]+' 120 "$MPI_PID") || exit 1
load mpi "http://127.0.0.1:${port#ready http_port=}"
kill -TERM "$MPI_PID"
wait "$MPI_PID" 2>/dev/null || true
MPI_PID=

CLUSTER_THREADS=$threads cluster_start "$model" 2 --max-seqs 16 --max-batch 64 --min-gain 0.01
load zmq "$CLUSTER_URL"
cluster_cleanup
exit $failed
