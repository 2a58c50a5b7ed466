#!/usr/bin/env bash
# tests/e2e/test_mpi_netns.sh: baton-mpi across three "hosts" made here and reached over ssh,
# as on a small cluster (docs/mpi.md). Each host is a network namespace on a private bridge
# with its own IP and hostname (UTS namespace) running sshd; / is shared, like a cluster's
# shared file system, so the binary and the model have the same paths everywhere. mpirun runs
# in the root namespace (the bridge's .1 address) and starts orted on each host over ssh
# (plm_rsh_agent with a test-made key), one rank per host from a hostfile; MPI traffic is TCP
# on the bridge subnet only (btl self,tcp + btl_tcp_if_include / oob_tcp_if_include).
# Checks: each rank runs on its own host; both tiny-a prompts give the reference greedy tokens
# (f32 on the wire) through the HTTP API on h1; SIGTERM to mpirun ends all three ranks cleanly.
# Skips (exit 0 with a message) only without root / namespaces / sshd.
source "$(dirname "$0")/lib_cluster.sh"
t0=$(date +%s)
if [ "$(id -u)" -ne 0 ] || ! ip netns add "btcap$$" 2>/dev/null; then
    echo "test_mpi_netns: SKIPPED: needs root (CAP_NET_ADMIN) to create network namespaces"
    exit 0
fi
ip netns del "btcap$$"
[ -x /usr/sbin/sshd ] || fail "/usr/sbin/sshd missing (openssh-server; make deps)"
command -v mpirun >/dev/null || fail "mpirun missing (make deps)"
[ -x "$BIN/baton-mpi" ] || fail "build baton-mpi first (make)"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# ASan builds (make asan): Open MPI's own allocations live until exit; keep its plugins loaded
# so their frames have names, and suppress only Open MPI's and hwloc's (tests/mpi/lsan.supp)
export OMPI_MCA_mca_base_component_disable_dlclose=1
export LSAN_OPTIONS="suppressions=$ROOT/tests/mpi/lsan.supp:print_suppressions=0:fast_unwind_on_malloc=0"
M=$FIX/gguf/model-f32.gguf
N=32
tag=$(printf '%04x' $((RANDOM)))
net=10.$((100 + RANDOM % 100)).$((RANDOM % 250))
br=btm$tag
names=(h1 h2 h3)
CLEANUPS+=("ip link del $br")
mkdir -p "$TMP/ssh"
ssh-keygen -q -t ed25519 -N '' -f "$TMP/ssh/id" -C bt-mpi-test
ssh-keygen -q -t ed25519 -N '' -f "$TMP/ssh/host_key" -C bt-mpi-host
cp "$TMP/ssh/id.pub" "$TMP/ssh/authorized_keys"
chmod 600 "$TMP/ssh/authorized_keys"

ip link add "$br" type bridge || fail "bridge"
ip addr add "$net.1/24" dev "$br"
ip link set "$br" up
for i in 1 2 3; do
    h=${names[$((i - 1))]}
    ns=bt-mpi-$tag-$h
    ip=$net.1$i
    # namespaces go last on cleanup (the list runs in order): kill what runs in them first
    CLEANUPS+=("kill -9 \$(ip netns pids $ns) 2>/dev/null; ip netns del $ns")
    cat >"$TMP/sshd-$h.conf" <<EOF
ListenAddress $ip
HostKey $TMP/ssh/host_key
PermitRootLogin prohibit-password
AuthorizedKeysFile $TMP/ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
EOF
    ip netns add "$ns" || fail "netns add $ns"
    ip link add "btv$tag$i" type veth peer name "btp$tag$i"
    ip link set "btp$tag$i" netns "$ns"
    ip link set "btv$tag$i" master "$br" up
    ip -n "$ns" link set lo up
    ip -n "$ns" link set "btp$tag$i" name eth0
    ip -n "$ns" addr add "$ip/24" dev eth0
    ip -n "$ns" link set eth0 up
    # own hostname (UTS) and /run (sshd's privilege separation dir); sshd replaces the shell
    ip netns exec "$ns" unshare --mount --uts --propagation private /bin/sh -c "
        hostname $h
        mount -t tmpfs -o mode=0755 tmpfs /run
        mkdir -p /run/sshd
        exec /usr/sbin/sshd -D -e -f $TMP/sshd-$h.conf" >"$TMP/sshd-$h.log" 2>&1 &
    PIDS+=("$!")
done
SSH="ssh -i $TMP/ssh/id -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
for i in 1 2 3; do
    for _ in $(seq 50); do $SSH -o ConnectTimeout=2 "root@$net.1$i" true 2>/dev/null && break; sleep 0.2; done
    [ "$($SSH "root@$net.1$i" hostname)" = "h$i" ] || fail "ssh to h$i ($net.1$i)"
done
echo "3 hosts up on $net.0/24 (netns + sshd, hostnames h1-h3)"

# the hostfile: one slot per host, rank 0 (the coordinator) on the first line
printf '%s slots=1\n' "$net.11" "$net.12" "$net.13" >"$TMP/hostfile"
"$(command -v mpirun)" -np 3 --hostfile "$TMP/hostfile" --map-by node --bind-to none \
    --mca plm_rsh_agent "$SSH" --mca btl self,tcp -x LSAN_OPTIONS \
    --mca btl_tcp_if_include "$net.0/24" --mca oob_tcp_if_include "$net.0/24" \
    "$BIN/baton-mpi" --model "$M" --http "$net.11:0" --wire f32 --uniform \
    --threads 1 --max-ctx 512 --max-seqs 4 </dev/null >"$TMP/mpi.log" 2>&1 &
MPI_PID=$!
PIDS+=("$MPI_PID")
port=$(wait_log "$TMP/mpi.log" 'ready http_port=[0-9]+' 90 | cut -d= -f2) || fail "baton-mpi not ready"
for r in 1 2; do
    grep -q "rank $r of 3: worker rank$r on h$((r + 1))," "$TMP/mpi.log" ||
        fail "rank $r is not on h$((r + 1))"
done
grep -q "joined worker=rank1 host=h2" "$TMP/mpi.log" || fail "coordinator did not see rank1 on h2"
for p in chat story; do
    got=$("$BIN/baton" generate --cluster "http://$net.11:$port" --tokens "$FIX/prompts/$p.ids" \
        -n $N --greedy --timeout 30 2>"$TMP/gen-$p.err") || fail "$p: generate: $(cat "$TMP/gen-$p.err")"
    [ "$got" = "$(ref_ids $p)" ] || fail "$p: tokens differ from the reference: $got"
done
echo "baton-mpi on h1 (coordinator), h2, h3 (workers) over ssh: both prompts equal the reference"
s=$(date +%s)
kill -TERM "$MPI_PID"
for ((i = 0; i < 200; i++)); do kill -0 "$MPI_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$MPI_PID" 2>/dev/null && fail "SIGTERM: mpirun still running after 20 s"
wait "$MPI_PID" 2>/dev/null
n=$(grep -c 'mpi: rank [0-9] done (exit 0)' "$TMP/mpi.log")
[ "$n" -eq 3 ] || fail "SIGTERM: $n of 3 ranks ended with exit 0"
echo "SIGTERM: 3 ranks on 3 hosts ended cleanly in $(($(date +%s) - s)) s"
echo "test_mpi_netns: ok ($(($(date +%s) - t0)) s)"
