#!/usr/bin/env bash
# tests/bench/bench_pipeline.sh: a 2-worker baton pipeline on loopback against one baton process
# and against llama.cpp with 2 rpc-servers, on the same GGUF file (issue 8); run by
# tests/bench/run.sh after the bench binaries. Per model ($BENCH_MODELS, space-separated; default
# build/bench/9b-q4_k_m.gguf):
#   single: `baton-coordinator --local --threads T` (T = all CPUs), the single-process figure,
#     started first and kept up (idle between its runs) through every pipeline phase, so each
#     pipeline 1-stream run is paired with a single-process run of the same minute: this host's
#     memory bandwidth moves up to 2x within minutes, and pipe/single is the median of the
#     per-pair ratios (memory: the model twice, plus the rpc-servers' copy in llama.cpp runs);
#   pipe Wt (for each W in BENCH_PIPELINE_WORKER_THREADS, default "1 T"): a coordinator and 2
#     baton-workers on 127.0.0.1 with W threads each, layers split by the planner (--uniform:
#     the two workers are the same machine), then 2 ggml-rpc-servers with W threads each.
# Every run of a phase measures, through the OpenAI API with `baton load --temp 0`:
#   1 stream: 2 requests one after the other, prompt of BENCH_PIPELINE_PROMPT words (8),
#     BENCH_PIPELINE_DECODE output tokens (32); decode_tok_s = tokens after the first / (e2e -
#     ttft), i.e. decode only (what llama-bench's tg measures); out_tok_s = output tokens / wall;
#   16 streams (pipeline phases only): `--concurrency 16 --duration BENCH_PIPELINE_SECS` (30),
#     same lengths; agg_tok_s = output tokens of all streams / wall (prefills included; the
#     streams start together, so whole waves run, and the tail after the deadline is counted);
#   llama.cpp (pipeline phases): llama-bench --rpc A,B -dev RPC0/RPC1 -ngl 99 -p 0 -n DECODE:
#     every layer on the two rpc-servers (-dev keeps llama-bench's own CPU device out of the
#     split; only the token embedding lookup stays in llama-bench), one sequence;
#   llama.cpp, 16 sequences (when llama-batched-bench is there): llama-batched-bench on the same
#     two rpc-servers, -npl 16 -npp BENCH_PIPELINE_PROMPT_TOKENS (16, about what 8 words make)
#     -ntg DECODE: agg_tok_s = 16 x DECODE / (prefill + decode time), the figure baton's
#     16-stream agg_tok_s is compared with, and its decode-only aggregate tg_tok_s.
# Each run of a pipe phase: single 1 stream, pipe 1 stream, pipe 16 streams, llama.cpp 1
# sequence, llama.cpp 16 sequences; medians of the runs are printed.
# "Same total threads": the single process uses T threads. For one stream only one stage of
# the pipeline computes at a time, so workers with T threads each keep T threads active (the
# fair single-stream comparison); workers with T/2 threads each (1 on this 2-core machine) use
# T threads in all, the fair comparison when both stages are busy (16 streams). Both are printed.
# Environment: BENCH_MODELS, BENCH_THREADS (T), BENCH_PIPELINE_WORKER_THREADS ("1 T"),
# BENCH_PIPELINE_DECODE (32), BENCH_PIPELINE_PROMPT (8), BENCH_PIPELINE_SECS (30),
# BENCH_PIPELINE_RUNS (3), BENCH_PIPELINE_QUICK=1 (a 0.8B q8_0 mkmodel file in $BUILD/bench,
# 1 run, 16 decode tokens, 10 s: checks that the script works), LLAMA_BIN (directory with
# llama-bench and ggml-rpc-server; default build/llama.cpp/bin), KEEP=1 keeps the logs.
# Output: `bench_pipeline:` lines, key=value.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}
T=${BENCH_THREADS:-$(nproc)}
runs=${BENCH_PIPELINE_RUNS:-3}
decode=${BENCH_PIPELINE_DECODE:-32}
plen=${BENCH_PIPELINE_PROMPT:-8}
secs=${BENCH_PIPELINE_SECS:-30}
wthreads=${BENCH_PIPELINE_WORKER_THREADS:-"1 $T"}
models=${BENCH_MODELS:-build/bench/9b-q4_k_m.gguf}
llama=${LLAMA_BIN:-build/llama.cpp/bin}
if [ "${BENCH_PIPELINE_QUICK:-0}" = 1 ]; then
    models=$BUILD/bench/pipeline-0.8b-q8_0.gguf
    runs=${BENCH_PIPELINE_RUNS:-1}
    decode=${BENCH_PIPELINE_DECODE:-16}
    secs=${BENCH_PIPELINE_SECS:-10}
    if [ ! -f "$models" ]; then
        mkdir -p "$BUILD/bench"
        "$BUILD/baton" mkmodel --size 0.8b --type q8_0 -o "$models.tmp" 2>/dev/null &&
            mv "$models.tmp" "$models" || { echo "bench_pipeline: mkmodel failed"; exit 1; }
    fi
fi
[ "$runs" -ge 1 ] || runs=1
for b in baton baton-coordinator baton-worker; do
    [ -x "$BUILD/$b" ] || { echo "bench_pipeline: $BUILD/$b missing (make BUILD=$BUILD)"; exit 1; }
done
have_llama=0 have_batched=0
[ -x "$llama/llama-bench" ] && [ -x "$llama/ggml-rpc-server" ] && have_llama=1
[ $have_llama = 1 ] && [ -x "$llama/llama-batched-bench" ] && have_batched=1
ptok=${BENCH_PIPELINE_PROMPT_TOKENS:-16}
export LD_LIBRARY_PATH=$llama${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

TMP=$(mktemp -d /tmp/bench-pipeline.XXXXXX)
PIDS=() # daemons of the current phase, the coordinator first
RPC_PIDS=()
SINGLE_PIDS=() # the single process, up through the pipeline phases
stop_pids() { # stop_pids PID...: SIGTERM, up to 10 s, then SIGKILL
    local p i
    for p in "$@"; do kill -TERM "$p" 2>/dev/null; done
    for p in "$@"; do
        for ((i = 0; i < 200; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    return 0
}
cleanup() {
    stop_pids "${PIDS[@]}" "${RPC_PIDS[@]}" "${SINGLE_PIDS[@]}"
    PIDS=() RPC_PIDS=() SINGLE_PIDS=()
    [ -n "${KEEP:-}" ] && echo "bench_pipeline: logs kept in $TMP" || rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_log FILE REGEX SECS PID: until FILE has a line matching REGEX (printed); 1 if PID exits
# first or time runs out.
wait_log() {
    local f=$1 re=$2 secs=$3 pid=$4 i m
    for ((i = 0; i < secs * 10; i++)); do
        m=$(grep -Eo "$re" "$f" 2>/dev/null | head -1)
        [ -n "$m" ] && { echo "$m"; return 0; }
        kill -0 "$pid" 2>/dev/null || { echo "bench_pipeline: pid $pid exited; $f:" >&2; tail -5 "$f" >&2; return 1; }
        sleep 0.1
    done
    echo "bench_pipeline: timed out waiting for '$re' in $f" >&2
    return 1
}

# Coordinator flags shared by both setups: 16 sequence slots, a short context (the KV cache of
# 16 x 4096 tokens would only cost memory), missed pings tolerated for long 9B passes.
COORD_FLAGS=(--max-seqs 16 --max-ctx 1024 --liveness 30 --load-timeout 1800)
URL=""

# start_single MODEL: one process, T threads; sets SURL.
start_single() {
    local log=$TMP/single.log port
    "$BUILD/baton-coordinator" --local --model "$1" --threads "$T" --http 127.0.0.1:0 \
        "${COORD_FLAGS[@]}" >"$TMP/single.out" 2>"$log" &
    SINGLE_PIDS=("$!")
    port=$(wait_log "$log" 'ready (local )?http_port=[0-9]+' 1800 "${SINGLE_PIDS[0]}") || return 1
    SURL=http://127.0.0.1:${port##*=}
}

# start_pipe MODEL W: coordinator + 2 workers with W threads each; sets URL and PLAN.
start_pipe() {
    local model=$1 w=$2 log=$TMP/coord-$2.log ctl port i
    "$BUILD/baton-coordinator" --model "$model" --bind tcp://127.0.0.1:0 --min-workers 2 \
        --http 127.0.0.1:0 --min-gain 0.01 --uniform "${COORD_FLAGS[@]}" \
        >"$TMP/plan-$w.txt" 2>"$log" &
    PIDS=("$!")
    ctl=$(wait_log "$log" 'control=tcp://[0-9.]+:[0-9]+' 60 "${PIDS[0]}") || return 1
    for i in 1 2; do
        "$BUILD/baton-worker" --join "${ctl#control=}" --model "$model" --threads "$w" \
            --id "w$i" --cache-dir "$TMP/cache$i" >"$TMP/worker$i-$w.log" 2>&1 &
        PIDS+=("$!")
    done
    port=$(wait_log "$log" 'ready http_port=[0-9]+' 1800 "${PIDS[0]}") || return 1
    URL=http://127.0.0.1:${port##*=}
    PLAN=$(grep -o "stages=.*" "$TMP/plan-$w.txt" | head -1)
}

# start_rpc W: two ggml-rpc-servers with W threads each on free ports; sets RPC (host:port,..).
start_rpc() {
    local w=$1 i port
    RPC=""
    for i in 1 2; do
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
        # stdbuf: the server's banner (our readiness line) is printf'd, block-buffered into a file
        stdbuf -oL "$llama/ggml-rpc-server" -H 127.0.0.1 -p "$port" -t "$w" >"$TMP/rpc$i-$w.log" 2>&1 &
        RPC_PIDS+=("$!")
        wait_log "$TMP/rpc$i-$w.log" 'endpoint' 30 "$!" >/dev/null || return 1
        RPC=${RPC:+$RPC,}127.0.0.1:$port
    done
}

# load_json URL C ARGS...: one `baton load` run at concurrency C, JSON on stdout.
load_json() {
    local url=$1 c=$2
    shift 2
    "$BUILD/baton" load --url "$url" --concurrency "$c" --prompt-len "$plen" \
        --output-len "$decode" --temp 0 --timeout 600 --quiet --json "$@"
}

# fig JSON: "decode_tok_s out_tok_s ok errors" of a load summary (decode as in the header).
fig() {
    python3 -c '
import json, sys
r = json.loads(sys.argv[1])
ok = r["ok"]
gen = (r["e2e_ms"]["mean"] - r["ttft_ms"]["mean"]) / 1000 if ok else 0
dec = (r["output_tokens"] / ok - 1) / gen if ok and gen > 0 else 0
print("%.3f %.3f %d %d" % (dec, r["output_tok_per_s"], ok, r["errors"]["total"]))
' "$1" 2>/dev/null || echo "0 0 0 1"
}

# llama_run W: one llama-bench over the two rpc-servers; prints tg tokens/s (empty on failure).
llama_run() {
    "$llama/llama-bench" -m "$model" --rpc "$RPC" -dev RPC0/RPC1 -ngl 99 -t "$1" -p 0 \
        -n "$decode" -r 1 -o json 2>>"$TMP/llama-bench.err" | python3 -c '
import json, sys
for t in json.load(sys.stdin):
    if t.get("n_gen", 0) > 0: print("%.3f" % t["avg_ts"])
' 2>/dev/null
}

# llama_batched W: llama-batched-bench, 16 sequences over the two rpc-servers; prints
# "agg_tok_s tg_tok_s" (empty on failure).
llama_batched() {
    "$llama/llama-batched-bench" -m "$model" --rpc "$RPC" -dev RPC0,RPC1 -ngl 99 -t "$1" \
        -c $((16 * (ptok + decode) + 64)) -b 512 -ub 512 -npp "$ptok" -ntg "$decode" -npl 16 \
        --output-format jsonl 2>>"$TMP/llama-batched.err" | python3 -c '
import json, sys
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("{"): continue
    r = json.loads(line)
    print("%.3f %.3f" % (r["pl"] * r["tg"] / r["t"], r["speed_tg"]))
' 2>/dev/null
}

median() { python3 -c 'import sys,statistics as s; v=[float(x) for x in sys.argv[1:]]; print("%.3f"%s.median(v) if v else "")' "$@"; }
ratio() { python3 -c 'import sys; a,b=sys.argv[1:]; print("%.2f"%(float(a)/float(b)) if a and b and float(b)>0 else "-")' "$1" "${2:-}"; }

echo "bench_pipeline: threads=$T worker_threads=\"$wthreads\" runs=$runs decode=$decode" \
    "prompt_words=$plen secs16=$secs llama=$([ $have_llama = 1 ] && echo "$llama" || echo absent)" \
    "load=$(cut -d' ' -f1-3 /proc/loadavg)"
failed=0
for model in $models; do
    if [ ! -r "$model" ]; then
        echo "bench_pipeline: model=$model missing (tests/bench/run.sh writes it with baton mkmodel)"
        continue
    fi
    m=$(basename "$model")
    # the single process, kept up (idle between its runs) through the pipeline phases
    t0=$(date +%s)
    if ! start_single "$model"; then
        echo "bench_pipeline: model=$m single process did not start"
        failed=1
        stop_pids "${SINGLE_PIDS[@]}"
        SINGLE_PIDS=()
        continue
    fi
    echo "bench_pipeline: model=$m single threads=$T load_s=$(($(date +%s) - t0))"
    single=()
    for w in $wthreads; do
        t0=$(date +%s)
        if ! start_pipe "$model" "$w"; then
            echo "bench_pipeline: model=$m pipeline worker_threads=$w did not start"
            failed=1
            stop_pids "${PIDS[@]}"
            PIDS=()
            continue
        fi
        echo "bench_pipeline: model=$m pipe worker_threads=$w load_s=$(($(date +%s) - t0)) $PLAN"
        rpc_ok=0
        if [ $have_llama = 1 ]; then
            start_rpc "$w" && rpc_ok=1 || echo "bench_pipeline: model=$m rpc-servers did not start"
        fi
        p1=() p1o=() p16=() ll=() lb=() lbt=() pair=()
        for ((r = 0; r < runs; r++)); do
            read -r sdec out ok err <<<"$(fig "$(load_json "$SURL" 1 --requests 2)")"
            echo "bench_pipeline: model=$m run=$r single 1stream decode_tok_s=$sdec out_tok_s=$out ok=$ok errors=$err"
            [ "$ok" -gt 0 ] && single+=("$sdec") || failed=1
            read -r dec out ok err <<<"$(fig "$(load_json "$URL" 1 --requests 2)")"
            echo "bench_pipeline: model=$m run=$r pipe${w}t 1stream decode_tok_s=$dec out_tok_s=$out ok=$ok errors=$err" \
                "pipe/single=$(ratio "$dec" "$sdec")"
            [ "$ok" -gt 0 ] && p1+=("$dec") p1o+=("$out") || failed=1
            pr=$(ratio "$dec" "$sdec")
            [ "$pr" != - ] && pair+=("$pr")
            read -r dec out ok err <<<"$(fig "$(load_json "$URL" 16 --duration "$secs")")"
            echo "bench_pipeline: model=$m run=$r pipe${w}t 16streams agg_tok_s=$out per_stream_decode_tok_s=$dec ok=$ok errors=$err"
            [ "$ok" -gt 0 ] && p16+=("$out") || failed=1
            if [ $rpc_ok = 1 ]; then
                tg=$(llama_run "$w")
                echo "bench_pipeline: model=$m run=$r llama_rpc${w}t tg$decode=${tg:-failed}"
                [ -n "$tg" ] && ll+=("$tg")
            fi
            if [ $rpc_ok = 1 ] && [ $have_batched = 1 ]; then
                read -r agg tgs <<<"$(llama_batched "$w")"
                echo "bench_pipeline: model=$m run=$r llama_rpc${w}t 16seqs agg_tok_s=${agg:-failed} tg_tok_s=${tgs:--}"
                [ -n "$agg" ] && lb+=("$agg") lbt+=("$tgs")
            fi
        done
        stop_pids "${PIDS[@]}" "${RPC_PIDS[@]}"
        PIDS=() RPC_PIDS=()
        a=$(median "${p1[@]}") ao=$(median "${p1o[@]}") b=$(median "${p16[@]}") l=$(median "${ll[@]}")
        lbm=$(median "${lb[@]}") lbtm=$(median "${lbt[@]}")
        echo "bench_pipeline: model=$m pipe worker_threads=$w (total $((2 * w)), active for 1 stream $w)" \
            "median of $runs: 1stream decode_tok_s=$a out_tok_s=$ao 16streams agg_tok_s=$b" \
            "llama_rpc2 tg$decode=${l:--} llama_rpc2_16seqs agg_tok_s=${lbm:--} tg_tok_s=${lbtm:--}"
        echo "bench_pipeline: model=$m ratios worker_threads=$w:" \
            "pipe_1stream/single=$(median "${pair[@]}") (median of the runs' pipe/single pairs;" \
            "target >= 0.95 at the same total threads)" \
            "pipe_16streams/pipe_1stream=$(ratio "$b" "$ao") (out_tok_s both; target >= 6)" \
            "baton_2workers/llama_rpc2=$(ratio "$a" "$l") (1 stream decode; target >= 2)" \
            "baton_16streams/llama_rpc2_16seqs=$(ratio "$b" "$lbm") (agg_tok_s both)"
    done
    stop_pids "${SINGLE_PIDS[@]}"
    SINGLE_PIDS=()
    echo "bench_pipeline: model=$m single median of ${#single[@]}: decode_tok_s=$(median "${single[@]}") (threads=$T)"
done
exit $failed
