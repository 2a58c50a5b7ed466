#!/usr/bin/env bash
# tests/e2e/test_netns.sh: the cluster across network namespaces made here: a switch namespace
# holding a bridge, the coordinator in its own namespace and 3 workers in theirs, each on a
# veth pair with its own 10.x address. Worker 3 has NO model file: the coordinator streams its
# layers (ModelChunk, XXH3-checked) into its cache. Greedy generation of both tiny-a prompts
# with f32 on the wire must give the reference tokens. The API answers another namespace, the
# /admin/ endpoints only the coordinator's own loopback (403 otherwise). Everything made is
# removed on exit.
# Skips (exit 0 with a message) only without root / CAP_NET_ADMIN.
source "$(dirname "$0")/lib_cluster.sh"
t0=$(date +%s)
if [ "$(id -u)" -ne 0 ] || ! ip netns add "btcap$$" 2>/dev/null; then
    echo "test_netns: SKIPPED: needs root (CAP_NET_ADMIN) to create network namespaces"
    exit 0
fi
ip netns del "btcap$$"
M=$FIX/gguf/model-f32.gguf
N=32
P=bt$$                       # name prefix: unique per run
NET=10.$((100 + $$ % 100)).$(($$ / 100 % 250)).  # a /24 unlikely to clash with the host's
SW=$P-sw
NSS=("$P-c" "$P-w1" "$P-w2" "$P-w3")
ADDR=("${NET}1" "${NET}11" "${NET}12" "${NET}13")
CLEANUPS+=("ip netns del $SW")
for ns in "${NSS[@]}"; do CLEANUPS+=("ip netns del $ns"); done

ip netns add "$SW" || fail "netns add $SW"
ip -n "$SW" link add br0 type bridge || fail "bridge"
ip -n "$SW" link set br0 up
ip -n "$SW" link set lo up
for i in "${!NSS[@]}"; do
    ns=${NSS[$i]}
    ip netns add "$ns" || fail "netns add $ns"
    ip link add "$P-v$i" type veth peer name "$P-p$i" || fail "veth $i"
    ip link set "$P-v$i" netns "$ns"
    ip link set "$P-p$i" netns "$SW"
    ip -n "$ns" link set "$P-v$i" name eth0
    ip -n "$ns" addr add "${ADDR[$i]}/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    ip -n "$SW" link set "$P-p$i" master br0
    ip -n "$SW" link set "$P-p$i" up
done

start_coord coord ip netns exec "${NSS[0]}" "$BIN/baton-coordinator" --model "$M" \
    --bind "tcp://${ADDR[0]}:*" --min-workers 3 --http 0.0.0.0:0 --wire f32 --max-ctx 2048 \
    --max-seqs 4 --uniform --heartbeat-ms 500
for w in 1 2 3; do
    model=(--model "$M")
    [ $w -eq 3 ] && model=(--cache-dir "$TMP/cache-w3")
    start_worker "w$w" ip netns exec "${NSS[$w]}" "$BIN/baton-worker" --join "$CTRL" \
        "${model[@]}" --mem 1G --threads 1 --id "w$w"
done
wait_ready coord 40
stages=$(grep -c '^stage [0-9]*: worker=' "$TMP/coord.log")
[ "$stages" -eq 3 ] || fail "plan has $stages stages, want 3"
for w in 1 2 3; do
    grep -q "joined worker=w$w .*data=tcp://${ADDR[$w]}:" "$TMP/coord.log" ||
        fail "w$w did not join from its own address ${ADDR[$w]}"
done
grep -q "joined worker=w3 .*model=none (streamed)" "$TMP/coord.log" || fail "w3 should have no model"
served=$(grep -Eo 'loaded stage=[0-9]+ worker=w3 .* served=[0-9.]+MiB' "$TMP/coord.log" | grep -Eo 'served=[0-9.]+' | cut -d= -f2)
[ -n "$served" ] && [ "$(echo "$served > 0" | bc)" = 1 ] || fail "nothing was streamed to w3"
ls "$TMP/cache-w3"/* >/dev/null 2>&1 || fail "w3 cache is empty"
# The API answers every host; the operator endpoints (coordinator/admin.h) only loopback.
status_from() { # NS URL
    ip netns exec "$1" curl -s -o /dev/null -w '%{http_code}' "$2"
}
[ "$(status_from "${NSS[1]}" "http://${ADDR[0]}:$HTTP_PORT/v1/models")" = 200 ] ||
    fail "/v1/models from another host is not 200"
[ "$(status_from "${NSS[1]}" "http://${ADDR[0]}:$HTTP_PORT/admin/workers")" = 403 ] ||
    fail "/admin/workers from another host is not 403"
[ "$(status_from "${NSS[0]}" "http://127.0.0.1:$HTTP_PORT/admin/workers")" = 200 ] ||
    fail "/admin/workers from the coordinator's host is not 200"
for p in chat story; do
    got=$(ip netns exec "${NSS[0]}" "$BIN/baton" generate --cluster "http://127.0.0.1:$HTTP_PORT" \
        --tokens "$FIX/prompts/$p.ids" -n $N --greedy --timeout 30 2>"$TMP/gen-$p.err") ||
        fail "$p: generate failed: $(cat "$TMP/gen-$p.err")"
    [ "$got" = "$(ref_ids $p)" ] || fail "$p: tokens differ from the reference: $got"
done
# A worker killed mid-request (1500 tokens: seconds of work, so the kill lands inside it): the
# coordinator re-plans over the two left (w3 streamed its
# slice already) and the request completes, its tokens equal to the reference prefix; the
# coordinator keeps answering HTTP throughout.
ip netns exec "${NSS[0]}" "$BIN/baton" generate --cluster "http://127.0.0.1:$HTTP_PORT" \
    --tokens "$FIX/prompts/chat.ids" -n 1500 --greedy --timeout 60 >"$TMP/long.out" 2>"$TMP/long.err" &
gen=$!
sleep 0.3
w2pid=$(ip netns pids "${NSS[2]}" | head -1)
[ -n "$w2pid" ] || fail "no worker process in ${NSS[2]}"
kill -0 $gen 2>/dev/null || fail "the long request ended before the kill"
kill -9 "$w2pid"
t1=$(date +%s)
wait $gen || fail "the request failed after the loss of a stage: $(cat "$TMP/long.err")"
lost_s=$(( $(date +%s) - t1 ))
grep -q 'recovered: stages=' "$TMP/coord.log" || fail "no recovery logged"
[ "$(cut -d' ' -f1-32 "$TMP/long.out")" = "$(ref_ids chat)" ] || fail "tokens after recovery differ"
ip netns exec "${NSS[0]}" bash -c "exec 3<>/dev/tcp/127.0.0.1/$HTTP_PORT && printf 'GET /health HTTP/1.0\r\n\r\n' >&3 && cat <&3" |
    grep -q '200 OK' || fail "coordinator not healthy after the recovery"
stop_all
echo "test_netns: ok: coordinator + 3 workers in 4 namespaces (${ADDR[*]}), w3 without a model (streamed ${served} MiB), both prompts equal the reference with f32 on the wire; a worker killed mid-request: re-planned onto 2 and the request completed ${lost_s} s later; $(( $(date +%s) - t0 )) s"
