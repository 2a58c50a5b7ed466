#!/usr/bin/env bash
# tests/e2e/test_drain.sh: an operator drains a worker in the middle of a request, stops and
# restarts it, and asks for a new plan: the request completes with the tokens of an
# uninterrupted run, and so does one after the new plan (coordinator/admin.h, `baton admin`).
# 1) coordinator + 3 workers (tiny-a f32, --wire f32): `baton admin drain w2 --wait` while a
#    long greedy generation streams; the coordinator re-plans onto w1 and w3 (2 stages); w2 is
#    stopped (SIGTERM) and started again; it joins idle; `baton admin replan --wait` brings
#    back 3 stages; a second generation equals the first.
# 2) coordinator + 2 workers whose memory budgets hold the model only together: draining one
#    pauses the pipeline ("waiting for workers"); the worker is restarted, the coordinator
#    plans with it again, and the stream that waited completes with the reference tokens.
# Also the answers to bad admin requests: unknown worker 404, wrong method 405, unknown route
# 404, replan while nothing changed 200.
source "$(dirname "$0")/lib_cluster.sh"
M=$FIX/gguf/model-f32.gguf
N=200
t0=$(date +%s)

gen() { gen_story "$1" "$2" $N; }
admin() { # PORT ARGS...
    local port=$1
    shift
    "$BIN/baton" admin --url "http://127.0.0.1:$port" --timeout 60 "$@"
}
http_status() { # PORT METHOD PATH: the HTTP status of one request
    curl -s -o /dev/null -w '%{http_code}' -X "$2" "http://127.0.0.1:$1$3"
}
worker_state() { # PORT ID
    admin "$1" workers --json | node -e '
        const j = JSON.parse(require("fs").readFileSync(0, "utf8"));
        const w = j.workers.find((x) => x.id === process.argv[1]);
        console.log(w ? w.state : "absent");' "$2"
}
stages_now() { # PORT
    admin "$1" workers --json | node -e '
        console.log(JSON.parse(require("fs").readFileSync(0, "utf8")).stages)'
}

# start_case NAME N_WORKERS MEM: the coordinator and N workers; sets PORT, CTRL and WP[i].
declare -A WP=()
start_case() {
    local name=$1 n=$2 mem=$3 i
    start_coord "coord-$name" "$BIN/baton-coordinator" --model "$M" --bind 'tcp://127.0.0.1:*' \
        --min-workers "$n" --http 127.0.0.1:0 --wire f32 --max-ctx 512 --max-seqs 4 --uniform \
        --recover-timeout 60
    PORT=$HTTP_PORT
    for ((i = 1; i <= n; i++)); do
        start_worker "$name-w$i" "$BIN/baton-worker" --join "$CTRL" --model "$M" --mem "$mem" \
            --threads 1 --id "w$i"
        WP[$i]=$!
    done
    wait_ready "coord-$name" 30
}

# timed_ref NAME: an uninterrupted run into $TMP/NAME-ref.txt; sets REF_MS.
timed_ref() {
    local ta tb
    ta=$(date +%s%N)
    gen "$PORT" "$TMP/$1-ref.txt" || fail "$1: uninterrupted run: $(cat "$TMP/$1-ref.txt.err")"
    tb=$(date +%s%N)
    REF_MS=$(((tb - ta) / 1000000))
    [ "$(wc -w <"$TMP/$1-ref.txt")" -eq $N ] || fail "$1: uninterrupted run is short"
}

same_as_ref() { # NAME FILE WHAT
    [ "$(cat "$2")" = "$(cat "$TMP/$1-ref.txt")" ] || fail "$1: $3: tokens differ from the uninterrupted run"
}

# ---- 1) the rest holds the model: drain, stop, restart, replan ----
start_case three 3 1G
[ "$(stages_now "$PORT")" = 3 ] || fail "three: want 3 stages at start"
[ "$(http_status "$PORT" POST /admin/workers/nosuch/drain)" = 404 ] || fail "drain of an unknown worker is not 404"
[ "$(http_status "$PORT" GET /admin/workers/w1/drain)" = 405 ] || fail "GET on drain is not 405"
[ "$(http_status "$PORT" POST /admin/workers)" = 405 ] || fail "POST on workers is not 405"
[ "$(http_status "$PORT" GET /admin/nothing)" = 404 ] || fail "unknown admin route is not 404"
[ "$(http_status "$PORT" POST /admin/workers/w1/undrain)" = 404 ] || fail "unknown worker action is not 404"
admin "$PORT" drain nosuch 2>"$TMP/nosuch.err" && fail "baton admin drain nosuch succeeded"
grep -q 'no worker with id nosuch' "$TMP/nosuch.err" || fail "drain nosuch: no clear error: $(cat "$TMP/nosuch.err")"
out=$(admin "$PORT" replan --wait) || fail "replan with nothing changed failed: $out"
case "$out" in *"is the current one"*) ;; *) fail "replan with nothing changed: $out" ;; esac

timed_ref three
gen "$PORT" "$TMP/three-got.txt" &
g=$!
sleep "$(awk -v m="$REF_MS" 'BEGIN{printf "%.2f", m / 3000}')"
kill -0 $g 2>/dev/null || fail "three: generation ended before the drain (${REF_MS} ms): test too fast"
out=$(admin "$PORT" drain w2 --wait) || fail "three: drain w2: $out"
echo "$out" | grep -q 'drained; loading a 2-stage plan without it' || fail "three: drain w2 said: $out"
[ "$(worker_state "$PORT" w2)" = drained ] || fail "three: w2 is not drained"
[ "$(stages_now "$PORT")" = 2 ] || fail "three: want 2 stages after the drain"
stop_pid "${WP[2]}"
wait $g || fail "three: the stream failed across the drain: $(cat "$TMP/three-got.txt.err")"
same_as_ref three "$TMP/three-got.txt" "across the drain"
grep -q 'drained by the operator: re-planning' "$TMP/coord-three.log" || fail "three: no drain logged"
grep -Eq 're-prefilled [1-9][0-9]* sequences' "$TMP/coord-three.log" ||
    fail "three: the drain did not move the live sequence (test too fast?)"

start_worker three-w2-again "$BIN/baton-worker" --join "$CTRL" --model "$M" --mem 1G --threads 1 --id w2
for ((i = 0; i < 100; i++)); do
    [ "$(worker_state "$PORT" w2)" = idle ] && break
    sleep 0.1
done
[ "$(worker_state "$PORT" w2)" = idle ] || fail "three: restarted w2 did not join idle"
out=$(admin "$PORT" replan --wait) || fail "three: replan: $out"
echo "$out" | grep -q 'loading a 3-stage plan' || fail "three: replan said: $out"
[ "$(stages_now "$PORT")" = 3 ] || fail "three: want 3 stages after the replan"
gen "$PORT" "$TMP/three-again.txt" || fail "three: after the replan: $(cat "$TMP/three-again.txt.err")"
same_as_ref three "$TMP/three-again.txt" "after the replan"
echo "ok: three: drain w2 at 1/3 of a ${REF_MS} ms run, stop, restart, replan: $N tokens equal twice"
stop_all

# ---- 2) the rest cannot hold the model: the drain pauses requests until the worker is back ----
start_case pair 2 80M
[ "$(stages_now "$PORT")" = 2 ] || fail "pair: want 2 stages at start"
timed_ref pair
gen "$PORT" "$TMP/pair-got.txt" &
g=$!
sleep "$(awk -v m="$REF_MS" 'BEGIN{printf "%.2f", m / 3000}')"
kill -0 $g 2>/dev/null || fail "pair: generation ended before the drain (${REF_MS} ms): test too fast"
out=$(admin "$PORT" drain w1 --wait) || fail "pair: drain w1: $out"
echo "$out" | grep -q 'cannot hold the model' || fail "pair: drain w1 said: $out"
[ "$(curl -s "http://127.0.0.1:$PORT/admin/workers" | grep -o '"status":"[^"]*"')" = '"status":"waiting for workers"' ] ||
    fail "pair: status is not waiting for workers"
stop_pid "${WP[1]}"
kill -0 $g 2>/dev/null || fail "pair: the stream ended while the pipeline was paused"
start_worker pair-w1-again "$BIN/baton-worker" --join "$CTRL" --model "$M" --mem 80M --threads 1 --id w1
wait $g || fail "pair: the stream failed across the pause: $(cat "$TMP/pair-got.txt.err")"
same_as_ref pair "$TMP/pair-got.txt" "across the pause"
grep -Eq 're-prefilled [1-9][0-9]* sequences' "$TMP/coord-pair.log" ||
    fail "pair: the live sequence was not resumed on the new plan"
[ "$(stages_now "$PORT")" = 2 ] || fail "pair: want 2 stages after w1 came back"
echo "ok: pair: drain w1 paused the stream, w1 restarted, $N tokens equal"
stop_all
echo "test_drain: ok; $(($(date +%s) - t0)) s"
