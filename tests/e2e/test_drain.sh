#!/usr/bin/env bash
# tests/e2e/test_drain.sh: an operator drains a worker in the middle of a request, stops and
# restarts it, and asks for a new plan: the request completes with the tokens of an
# uninterrupted run, and so does one after the new plan (coordinator/admin.h, `baton admin`).
# 1) coordinator + 3 workers (tiny-a f32, --wire f32): `baton admin drain` of the worker with
#    the last stage while a long greedy generation and a seeded sampled one (temperature 2, the API's most: most draws decide)
#    stream; the coordinator re-plans onto the other two (2 stages) and both streams equal
#    uninterrupted runs (the sampled one goes on with its random stream on the new last stage:
#    SamplingParams.rng_skip); the drained worker is stopped (SIGTERM) and started again; it
#    joins idle; `baton admin replan --wait` brings back 3 stages; a second generation equals
#    the first.
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
gen_sampled() { # PORT OUT: 280 tokens sampled at temperature 2 with seed 7 (flat enough that a
    # restarted random stream would change the tokens; longer than the greedy stream, so it is
    # still running when the drain comes)
    "$BIN/baton" generate --cluster "http://127.0.0.1:$1" --tokens "$FIX/prompts/story.ids" \
        -n 280 --temp 2 --seed 7 --timeout 60 >"$2" 2>"$2.err"
}
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
gen_tokens() { # PORT: tokens generated so far (baton_generation_tokens_total)
    curl -s "http://127.0.0.1:$1/metrics" | awk '$1 == "baton_generation_tokens_total" {print $2}'
}
last_stage_worker() { # PORT: the id of the worker running the last stage
    admin "$1" workers --json | node -e '
        const j = JSON.parse(require("fs").readFileSync(0, "utf8"));
        const w = j.workers.find((x) => x.stage === j.stages - 1);
        console.log(w ? w.id : "none");'
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
# the drained worker is the last stage's: its samplers go, so the sampled stream must be
# re-created on the new last stage with its random stream where it was
D=$(last_stage_worker "$PORT")
case "$D" in w[123]) ;; *) fail "three: no worker holds the last stage: '$D'" ;; esac
gen_sampled "$PORT" "$TMP/three-sampled-ref.txt" || fail "three: uninterrupted sampled run failed"
[ "$(cat "$TMP/three-sampled-ref.txt")" != "$(cat "$TMP/three-ref.txt")" ] ||
    fail "three: the sampled run equals the greedy one: sampling is not exercised"
base=$(gen_tokens "$PORT")
gen "$PORT" "$TMP/three-got.txt" &
g=$!
gen_sampled "$PORT" "$TMP/three-sampled-got.txt" &
gs=$!
# drain once the two streams have some 20 tokens each (not a fixed sleep: the sampled stream
# must have drawn from its random stream before it moves)
for ((i = 0; i < 400; i++)); do
    [ $(($(gen_tokens "$PORT") - base)) -ge 40 ] && break
    sleep 0.005
done
at=$(($(gen_tokens "$PORT") - base))
kill -0 $g 2>/dev/null || fail "three: generation ended before the drain (${REF_MS} ms): test too fast"
kill -0 $gs 2>/dev/null || fail "three: sampled generation ended before the drain: test too fast"
out=$(admin "$PORT" drain "$D" --wait) || fail "three: drain $D: $out"
echo "$out" | grep -q 'drained; loading a 2-stage plan without it' || fail "three: drain $D said: $out"
[ "$(worker_state "$PORT" "$D")" = drained ] || fail "three: $D is not drained"
[ "$(stages_now "$PORT")" = 2 ] || fail "three: want 2 stages after the drain"
stop_pid "${WP[${D#w}]}"
wait $g || fail "three: the stream failed across the drain: $(cat "$TMP/three-got.txt.err")"
same_as_ref three "$TMP/three-got.txt" "across the drain"
wait $gs || fail "three: the sampled stream failed across the drain: $(cat "$TMP/three-sampled-got.txt.err")"
[ "$(cat "$TMP/three-sampled-got.txt")" = "$(cat "$TMP/three-sampled-ref.txt")" ] ||
    fail "three: the sampled stream across the drain differs from the uninterrupted one"
grep -Eq 're-prefilled 2 sequences' "$TMP/coord-three.log" ||
    fail "three: the drain did not move both live sequences (test too fast?)"
grep -q 'drained by the operator: re-planning' "$TMP/coord-three.log" || fail "three: no drain logged"
grep -Eq 're-prefilled [1-9][0-9]* sequences' "$TMP/coord-three.log" ||
    fail "three: the drain did not move the live sequence (test too fast?)"

start_worker "three-$D-again" "$BIN/baton-worker" --join "$CTRL" --model "$M" --mem 1G --threads 1 --id "$D"
for ((i = 0; i < 100; i++)); do
    [ "$(worker_state "$PORT" "$D")" = idle ] && break
    sleep 0.1
done
[ "$(worker_state "$PORT" "$D")" = idle ] || fail "three: restarted $D did not join idle"
out=$(admin "$PORT" replan --wait) || fail "three: replan: $out"
echo "$out" | grep -q 'loading a 3-stage plan' || fail "three: replan said: $out"
[ "$(stages_now "$PORT")" = 3 ] || fail "three: want 3 stages after the replan"
gen "$PORT" "$TMP/three-again.txt" || fail "three: after the replan: $(cat "$TMP/three-again.txt.err")"
same_as_ref three "$TMP/three-again.txt" "after the replan"
echo "ok: three: drain $D (the last stage) after $at of $((N + 280)) tokens, stop, restart, replan: $N tokens equal twice, and a sampled stream across the drain"
stop_all

# ---- 2) the rest cannot hold the model: the drain pauses requests until the worker is back ----
start_case pair 2 80M
[ "$(stages_now "$PORT")" = 2 ] || fail "pair: want 2 stages at start"
timed_ref pair
base=$(gen_tokens "$PORT")
gen "$PORT" "$TMP/pair-got.txt" &
g=$!
# drain once the stream has some 20 tokens (not a fixed share of the reference run's time: under
# ASan the client's own start-up is a large part of it, and a drain before the request arrives
# has no live sequence to move)
for ((i = 0; i < 400; i++)); do
    [ $(($(gen_tokens "$PORT") - base)) -ge 20 ] && break
    sleep 0.005
done
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
