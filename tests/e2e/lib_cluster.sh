# tests/e2e/lib_cluster.sh: helpers for the cluster end-to-end scripts, the demo and the serving
# benches (sourced, not run). Starts daemons in the background, waits for their readiness log
# lines, and kills every child it started on exit (trap: `cleanup`; a script that sets its own
# EXIT trap calls `cleanup` from it). Binaries come from $BUILD (default build), relative to the
# repo, which becomes the working directory. Two ways to start a cluster:
#   start_coord/start_worker/wait_ready: one daemon at a time, logs in $TMP/NAME.log;
#   cluster_start MODEL N [coordinator flags...]: a coordinator and N workers on 127.0.0.1.
set -uo pipefail
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
BIN=$ROOT/$BUILD

# fixtures_dir: the shared reference fixtures: $BT_FIXTURES, else ../shared/fixtures next to
# the checkout, else /work/shared/fixtures (as tests/fixtures.h looks for them).
fixtures_dir() {
    local d
    for d in "${BT_FIXTURES:-}" "$ROOT/../shared/fixtures" "$ROOT/../../shared/fixtures" /work/shared/fixtures; do
        [ -n "$d" ] && [ -r "$d/tiny-a/model.json" ] && { echo "$d"; return 0; }
    done
    echo "fixtures not found: set BT_FIXTURES to the shared/fixtures folder" >&2
    return 1
}
FIX=$(fixtures_dir)/tiny-a || exit 1
TMP=$(mktemp -d /tmp/baton-e2e.XXXXXX)
PIDS=()
CLEANUPS=()
CLUSTER_PIDS=()
CLUSTER_DIR=""
CLUSTER_URL=""

cleanup() {
    local p
    cluster_stop
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    local c
    for c in "${CLEANUPS[@]}"; do eval "$c" >/dev/null 2>&1; done
    [ -n "${KEEP:-}" ] && echo "logs kept in $TMP" || rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    echo "FAIL: $*"
    for f in "$TMP"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -15 "$f"; }; done
    exit 1
}

# wait_log FILE REGEX SECS [PID]: waits until FILE has a line matching REGEX; prints the match.
# With PID, gives up (saying so on stderr) as soon as that process has exited.
wait_log() {
    local f=$1 re=$2 secs=$3 pid=${4:-} i
    for ((i = 0; i < secs * 20; i++)); do
        if grep -Eo "$re" "$f" 2>/dev/null | head -1 | grep -q .; then
            grep -Eo "$re" "$f" | head -1
            return 0
        fi
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            echo "process $pid exited before '$re' appeared in $f" >&2
            return 1
        fi
        sleep 0.05
    done
    [ -z "$pid" ] || echo "timed out after ${secs}s waiting for '$re' in $f" >&2
    return 1
}

# start_coord NAME ARGS...: coordinator on an ephemeral control port and HTTP port; sets
# CTRL (tcp://...) and HTTP_PORT, and COORD_PID.
start_coord() {
    local name=$1; shift
    "$@" >"$TMP/$name.log" 2>&1 &
    COORD_PID=$!
    PIDS+=("$COORD_PID")
    HTTP_PORT=$(wait_log "$TMP/$name.log" 'http listening on [^ ]+' 20 | awk -F: '{print $NF}') ||
        fail "$name: no http port"
    case " $* " in *" --local "*) CTRL=; return 0 ;; esac
    CTRL=$(wait_log "$TMP/$name.log" 'control=tcp://[^ ]+' 20 | cut -d= -f2) ||
        fail "$name: no control endpoint"
}

# start_worker NAME ARGS...: a worker in the background (its pid in PIDS).
start_worker() {
    local name=$1; shift
    "$@" >"$TMP/$name.log" 2>&1 &
    PIDS+=("$!")
}

# wait_ready NAME SECS: until the coordinator NAME logs that it serves.
wait_ready() {
    wait_log "$TMP/$1.log" 'ready (local )?http_port=[0-9]+' "$2" >/dev/null ||
        fail "$1: not ready within $2 s"
}

# stop_pid PID: SIGTERM, then wait up to 5 s, then SIGKILL.
stop_pid() {
    local p=$1 i
    kill "$p" 2>/dev/null
    for ((i = 0; i < 100; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$p" 2>/dev/null
    wait "$p" 2>/dev/null
    return 0
}

# stop_all: stops every daemon started so far (the coordinator first: it sends Shutdown).
stop_all() {
    local p
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    PIDS=()
}

# cluster_start MODEL N_WORKERS [coordinator flags...]: baton-coordinator and N workers on
# 127.0.0.1 with ephemeral ports; waits until the HTTP API is ready; sets CLUSTER_URL
# (http://127.0.0.1:PORT) and CLUSTER_DIR (plan.txt = the coordinator's stdout, *.log).
# Returns 1 (with the reason on stderr) if a daemon exits early or is not ready in time.
#   CLUSTER_THREADS: threads per worker (default: cores / N, at least 1)
#   CLUSTER_WORKER_MODEL=0: workers fetch their layers from the coordinator (default: each
#     worker reads MODEL itself)
#   CLUSTER_READY_SECS: how long to wait for readiness (default 120)
cluster_start() {
    local model=$1 n=$2 i ctl port coord
    shift 2
    CLUSTER_DIR=$(mktemp -d "$TMP/cluster.XXXXXX")
    local threads=${CLUSTER_THREADS:-$(($(nproc) / n))}
    [ "$threads" -ge 1 ] || threads=1
    local wmodel=(--model "$model")
    [ "${CLUSTER_WORKER_MODEL:-1}" != 0 ] || wmodel=()
    "$BUILD/baton-coordinator" --model "$model" --bind tcp://127.0.0.1:0 --min-workers "$n" \
        --http 127.0.0.1:0 "$@" >"$CLUSTER_DIR/plan.txt" 2>"$CLUSTER_DIR/coordinator.log" &
    coord=$!
    CLUSTER_PIDS+=("$coord")
    ctl=$(wait_log "$CLUSTER_DIR/coordinator.log" 'control=tcp://[0-9.]+:[0-9]+' 30 "$coord") ||
        return 1
    ctl=${ctl#control=}
    for ((i = 1; i <= n; i++)); do
        "$BUILD/baton-worker" --join "$ctl" "${wmodel[@]}" --threads "$threads" --mem 2G \
            --id "w$i" --cache-dir "$CLUSTER_DIR/cache$i" >"$CLUSTER_DIR/worker$i.log" 2>&1 &
        CLUSTER_PIDS+=("$!")
    done
    port=$(wait_log "$CLUSTER_DIR/coordinator.log" 'ready http_port=[0-9]+' \
        "${CLUSTER_READY_SECS:-120}" "$coord") || return 1
    CLUSTER_URL=http://127.0.0.1:${port#ready http_port=}
}

# cluster_stop: SIGTERM to the cluster_start daemons (the coordinator first), then waits.
cluster_stop() {
    local p
    for p in "${CLUSTER_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${CLUSTER_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    CLUSTER_PIDS=()
}

# cluster_logs [LINES]: the tail of every cluster_start log (for a failing test).
cluster_logs() {
    local f
    for f in "$CLUSTER_DIR"/*.log; do
        [ -f "$f" ] && { echo "== $f"; tail -"${1:-15}" "$f"; }
    done
}

# cluster_cleanup: cluster_stop, then removes CLUSTER_DIR (before the next cluster_start).
cluster_cleanup() {
    cluster_stop
    [ -n "$CLUSTER_DIR" ] && rm -rf "$CLUSTER_DIR"
    CLUSTER_DIR=""
}

# gen_story PORT OUT N: N greedy tokens after the story prompt from the cluster at PORT (ids in
# OUT, errors in OUT.err); for the scripts that interrupt a stream and compare it.
gen_story() {
    "$BIN/baton" generate --cluster "http://127.0.0.1:$1" --tokens "$FIX/prompts/story.ids" \
        -n "$3" --greedy --timeout 60 >"$2" 2>"$2.err"
}

# ref_ids PROMPT: the fixture's greedy reference as one line.
ref_ids() {
    tr '\n' ' ' <"$FIX/ref/f32/$1/greedy.txt" | sed 's/ *$//'
}

# check_greedy PROMPT GOT_IDS TIE: 0 if GOT_IDS (one line) equals the f32 reference, or equals
# it up to the first near-tie (reference top-1/top-2 logit gap < TIE) and has the reference's
# top-1 or top-2 there (the fixture README: a flip exactly at a near-tie is not a bug; after
# it the continuation differs legitimately). Prints what it decided.
check_greedy() {
    python3 - "$FIX/ref/f32/$1" "$2" "$3" <<'PY'
import struct, sys
d, got, tie = sys.argv[1], [int(x) for x in sys.argv[2].split()], float(sys.argv[3])
ref = [int(x) for x in open(d + "/greedy.txt").read().split()]
V = 1792
def rows(f):
    b = open(f, "rb").read()
    return [struct.unpack_from("<%df" % V, b, i * V * 4) for i in range(len(b) // (4 * V))]
lg = [rows(d + "/logits.f32")[-1]] + rows(d + "/gen_logits.f32")
for i, r in enumerate(ref):
    if i >= len(got):
        print("short: %d of %d tokens" % (len(got), len(ref))); sys.exit(1)
    if got[i] == r:
        continue
    order = sorted(range(V), key=lambda k: -lg[i][k])
    gap = lg[i][order[0]] - lg[i][order[1]]
    if gap < tie and got[i] in order[:2]:
        print("equal up to token %d, then a near-tie flip (gap %.4f)" % (i, gap)); sys.exit(0)
    print("token %d: %d, reference %d (gap %.4f)" % (i, got[i], r, gap)); sys.exit(1)
print("equal"); sys.exit(0)
PY
}
