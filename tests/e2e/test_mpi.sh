#!/usr/bin/env bash
# tests/e2e/test_mpi.sh: mpirun mode on this machine (docs/mpi.md).
#  1. mpi_selftest under mpirun -np 3: the MPI transport (frames, 64 MiB, order, timeouts,
#     wakeup, poll mixed with inproc, errors, malformed input, rank-to-rank channel, finish);
#     a stopped rank (SIGSTOP) is seen lost and the job ends through MPI_Abort with a message
#     naming it; a killed rank ends the job (mpirun's report). Neither may hang.
#  2. mpirun -np 3 baton-mpi (coordinator + 2 workers), f32 on the wire: both tiny-a prompts
#     give the reference greedy tokens, and the tokens with 5 logprobs each are byte-identical
#     to a ZeroMQ cluster (baton-coordinator + 2 baton-workers) with the same plan (--uniform).
#  3. the official openai npm client against baton-mpi's HTTP API (as test_openai.sh).
#  4. SIGTERM to mpirun ends every rank cleanly ("done (exit 0)" x3) within 15 s; so does
#     SIGTERM to one worker rank alone (its BYE carries exit 0; the job ends with exit 0).
#  5. a worker rank stopped with SIGSTOP mid-service: the job ends within the rank liveness
#     window with "rank 2 lost" on rank 0 (no hang).
source "$(dirname "$0")/lib_cluster.sh"
t0=$(date +%s)
M=$FIX/gguf/model-f32.gguf
N=32
command -v mpirun >/dev/null || fail "mpirun missing (make deps)"
[ -x "$BIN/baton-mpi" ] && [ -x "$BIN/mpi/mpi_selftest" ] || fail "build baton-mpi first (make)"
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
# ASan builds (make asan): Open MPI's own allocations live until exit; keep its plugins loaded
# so their frames have names, and suppress only Open MPI's and hwloc's (tests/mpi/lsan.supp)
export OMPI_MCA_mca_base_component_disable_dlclose=1
export LSAN_OPTIONS="suppressions=$ROOT/tests/mpi/lsan.supp:print_suppressions=0:fast_unwind_on_malloc=0"
# loopback only; no core binding (ranks share 2 cores with their compute threads)
MPIRUN=(mpirun -np 3 --oversubscribe --bind-to none --mca btl self,vader,tcp
        --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo)

# run_bounded SECS LOG CMD...: runs CMD with its output in LOG; prints the exit code and the
# elapsed seconds; a run past SECS is killed and fails the test (a hang).
run_bounded() {
    local secs=$1 log=$2 s rc
    shift 2
    s=$(date +%s)
    timeout -k 5 "$secs" "$@" </dev/null >"$log" 2>&1
    rc=$?
    [ $rc -eq 124 ] || [ $rc -eq 137 -a $(($(date +%s) - s)) -ge "$secs" ] &&
        fail "$(basename "$log"): still running after $secs s (a hang)"
    echo "$rc $(($(date +%s) - s))"
}

# 1. the transport
read -r rc secs < <(run_bounded 120 "$TMP/selftest.log" "${MPIRUN[@]}" "$BIN/mpi/mpi_selftest")
[ "$rc" -eq 0 ] || fail "mpi_selftest: exit $rc: $(grep -E 'FAIL|failed' "$TMP/selftest.log" | head -5)"
oks=$(grep -c ' ok: ' "$TMP/selftest.log")
[ "$oks" -ge 30 ] || fail "mpi_selftest: only $oks checks passed"
echo "selftest: $oks checks ok in $secs s"
read -r rc secs < <(run_bounded 40 "$TMP/selftest-stop.log" "${MPIRUN[@]}" "$BIN/mpi/mpi_selftest" stop)
[ "$rc" -ne 0 ] || fail "stopped rank: the job exited 0"
grep -q 'ends the MPI job: rank(s) 2 lost' "$TMP/selftest-stop.log" || fail "stopped rank: no 'rank(s) 2 lost'"
echo "stopped rank: job ended in $secs s (exit $rc) naming rank 2"
read -r rc secs < <(run_bounded 40 "$TMP/selftest-crash.log" "${MPIRUN[@]}" "$BIN/mpi/mpi_selftest" crash)
[ "$rc" -ne 0 ] || fail "killed rank: the job exited 0"
grep -q 'rank 2 .*exited on signal 9' "$TMP/selftest-crash.log" || fail "killed rank: no report naming rank 2"
echo "killed rank: job ended in $secs s (exit $rc): $(grep -o 'process rank 2.*' "$TMP/selftest-crash.log" | head -1)"

# 2. baton-mpi vs the reference and vs ZeroMQ mode
start_mpi() { # NAME ARGS...: baton-mpi under mpirun in the background; sets HTTP_PORT, MPI_PID
    local name=$1
    shift
    "${MPIRUN[@]}" "$BIN/baton-mpi" --model "$M" --http 127.0.0.1:0 --wire f32 --uniform \
        --threads 1 --max-ctx 512 --max-seqs 4 "$@" </dev/null >"$TMP/$name.log" 2>&1 &
    MPI_PID=$!
    PIDS+=("$MPI_PID")
    HTTP_PORT=$(wait_log "$TMP/$name.log" 'ready http_port=[0-9]+' 60 | cut -d= -f2) ||
        fail "$name: not ready"
}
gen() { # PORT PROMPT OUT
    "$BIN/baton" generate --cluster "http://127.0.0.1:$1" --tokens "$FIX/prompts/$2.ids" -n $N \
        --greedy --logprobs 5 --timeout 30 >"$3" 2>"$3.err" || fail "generate $2 on :$1: $(tail -3 "$3.err")"
}
start_mpi mpi
for p in chat story; do
    gen "$HTTP_PORT" $p "$TMP/mpi-$p.txt"
    [ "$(head -1 "$TMP/mpi-$p.txt")" = "$(ref_ids $p)" ] ||
        fail "mpi $p: tokens differ from the reference: $(head -1 "$TMP/mpi-$p.txt")"
done
echo "baton-mpi: both prompts equal the reference greedy tokens"
# the plan's layer split (which worker holds a stage depends on noisy speed measurements
# that break --uniform's ties; the stages' layers and roles are what decide the numbers)
plan_of() { grep '^stage [0-9]*: worker=' "$1" | sed 's/ *weights=.*//; s/worker=[^ ]* //'; }
plan_of "$TMP/mpi.log" >"$TMP/mpi-plan.txt"

# 3. the openai client, on the same job
npmdir=$BUILD/npm
if command -v node >/dev/null && command -v npm >/dev/null; then
    if [ ! -f "$npmdir/node_modules/openai/package.json" ]; then
        mkdir -p "$npmdir"
        [ -f "$npmdir/package.json" ] || echo '{"name":"baton-e2e","private":true,"type":"module"}' >"$npmdir/package.json"
        npm install --prefix "$npmdir" openai@4 --no-audit --no-fund --loglevel=error >/dev/null 2>&1 ||
            fail "npm install openai"
    fi
    cp tests/e2e/openai_client.mjs "$npmdir/openai_client.mjs"
    node "$npmdir/openai_client.mjs" "http://127.0.0.1:$HTTP_PORT" "$FIX/prompts/chat.ids" \
        "$FIX/ref/f32/chat/greedy.txt" >"$TMP/openai.log" 2>&1 ||
        fail "openai client: $(tail -3 "$TMP/openai.log")"
    echo "openai client: $(grep -c '^ok:' "$TMP/openai.log") checks ok against baton-mpi"
else
    fail "node/npm missing (make deps)"
fi

# 4. SIGTERM to mpirun: every rank ends cleanly
s=$(date +%s)
kill -TERM "$MPI_PID"
for ((i = 0; i < 150; i++)); do kill -0 "$MPI_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$MPI_PID" 2>/dev/null && fail "SIGTERM: mpirun still running after 15 s"
wait "$MPI_PID" 2>/dev/null
done_n=$(grep -c 'mpi: rank [0-9] done (exit 0)' "$TMP/mpi.log")
[ "$done_n" -eq 3 ] || fail "SIGTERM: $done_n of 3 ranks ended with exit 0"
echo "SIGTERM: 3 ranks ended cleanly in $(($(date +%s) - s)) s"

# 4b. SIGTERM to one worker rank alone (what happens when it gets mpirun's forwarded signal
#     before rank 0 does): its BYE says exit 0, so the job ends cleanly, not as a failure
start_mpi term1
w1pid=$(grep -oE 'baton-mpi\.1\[[0-9]+\]' "$TMP/term1.log" | head -1 | sed -E 's/.*\[([0-9]+)\]/\1/')
[ -n "$w1pid" ] && kill -0 "$w1pid" 2>/dev/null || fail "term1: no pid for rank 1"
s=$(date +%s)
kill -TERM "$w1pid"
for ((i = 0; i < 150; i++)); do kill -0 "$MPI_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$MPI_PID" 2>/dev/null && fail "SIGTERM to rank 1: mpirun still running after 15 s"
wait "$MPI_PID" && rc=0 || rc=$?
[ "$rc" -eq 0 ] || fail "SIGTERM to rank 1: the job exited $rc: $(grep -E 'ERROR|exit' "$TMP/term1.log" | tail -3)"
grep -q 'worker rank 1 finished (exit 0): ending the job' "$TMP/term1.log" ||
    fail "SIGTERM to rank 1: rank 0 did not log the worker's clean finish"
done_n=$(grep -c 'mpi: rank [0-9] done (exit 0)' "$TMP/term1.log")
[ "$done_n" -eq 3 ] || fail "SIGTERM to rank 1: $done_n of 3 ranks ended with exit 0"
echo "SIGTERM to rank 1 alone: the job ended cleanly (exit 0) in $(($(date +%s) - s)) s"

# the same plan over ZeroMQ: coordinator + workers w1, w2 (the MPI ranks 1, 2)
start_coord zmq "$BIN/baton-coordinator" --model "$M" --bind 'tcp://127.0.0.1:*' --min-workers 2 \
    --http 127.0.0.1:0 --wire f32 --uniform --max-ctx 512 --max-seqs 4
start_worker zw1 "$BIN/baton-worker" --join "$CTRL" --model "$M" --mem 2G --threads 1 --id w1
start_worker zw2 "$BIN/baton-worker" --join "$CTRL" --model "$M" --mem 2G --threads 1 --id w2
wait_ready zmq 60
plan_of "$TMP/zmq.log" >"$TMP/zmq-plan.txt"
cmp -s "$TMP/mpi-plan.txt" "$TMP/zmq-plan.txt" ||
    fail "plans differ: $(cat "$TMP/mpi-plan.txt") vs $(cat "$TMP/zmq-plan.txt")"
for p in chat story; do
    gen "$HTTP_PORT" $p "$TMP/zmq-$p.txt"
    cmp -s "$TMP/mpi-$p.txt" "$TMP/zmq-$p.txt" ||
        fail "$p: MPI and ZeroMQ outputs differ: $(diff "$TMP/mpi-$p.txt" "$TMP/zmq-$p.txt" | head -4)"
done
echo "ZeroMQ mode, same plan ($(tr '\n' ';' <"$TMP/zmq-plan.txt")): tokens and logprobs byte-identical"
stop_all

# 5. a worker rank that stops answering ends the job (no hang)
start_mpi lose --rank-liveness-ms 3000
wpid=$(grep -oE 'baton-mpi\.2\[[0-9]+\]' "$TMP/lose.log" | head -1 | sed -E 's/.*\[([0-9]+)\]/\1/')
[ -n "$wpid" ] && kill -0 "$wpid" 2>/dev/null || fail "lose: no pid for rank 2"
s=$(date +%s)
kill -STOP "$wpid"
# a request now waits on the stopped stage; it must fail, not hang, when the job ends
"$BIN/baton" generate --cluster "http://127.0.0.1:$HTTP_PORT" --tokens "$FIX/prompts/story.ids" \
    -n 8 --greedy --timeout 60 >"$TMP/lose-gen.txt" 2>&1 &
gpid=$!
for ((i = 0; i < 300; i++)); do kill -0 "$MPI_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$MPI_PID" 2>/dev/null && { kill -CONT "$wpid"; fail "lost rank: job still running after 30 s"; }
wait "$MPI_PID" 2>/dev/null
wait "$gpid" && fail "lost rank: the request did not fail: $(cat "$TMP/lose-gen.txt")"
grep -q 'worker rank 2 lost' "$TMP/lose.log" || fail "lost rank: no 'worker rank 2 lost' message"
echo "lost rank: job ended in $(($(date +%s) - s)) s: $(grep -o 'worker rank 2 lost.*' "$TMP/lose.log" | head -1)"
echo "test_mpi: ok ($(($(date +%s) - t0)) s)"
