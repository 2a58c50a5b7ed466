#!/usr/bin/env bash
# tests/e2e/slow_ansible.sh (make test-deploy; takes minutes, so tests/run.sh skips it): the
# Ansible deployment (ansible/, docs/deploy.md) against three
# "hosts" made on this machine, then a real chat request to the deployed cluster.
#
# Each host is a network namespace on a private bridge (its own IP, its own hostname through a
# UTS namespace) running sshd in a mount namespace that gives it its own /opt (empty), its own
# /etc (a copy of this machine's, so the baton user and /etc/baton are per host) and its own
# /run (tmpfs: pidfiles). /usr is shared, so the Debian packages the roles ask for are the ones
# installed here (make deps). No systemd runs in a namespace: the inventory sets
# baton_service_manager=none (the documented fallback: baton-service + start-stop-daemon), and
# the systemd units the roles render are checked with systemd-analyze verify on each host.
#
# Steps (lint and the units rendered locally: tests/e2e/test_ansible.sh): keys and sshd per
# host; site.yml with the binaries of $BUILD copied (install mode "copy") and the
# tiny-a fixture as the model (the coordinator and h2 keep a copy, h3 gets its slice streamed);
# /health, /v1/models and a chat completion over the bridge; site.yml again: changed=0 on every
# host; rolling.yml (each daemon restarted one by one), then another chat request.
# Everything is torn down on exit (trap): daemons and sshd by the pids in each namespace,
# namespaces, links, the temp dir.
# Needs root (namespaces), ansible, openssh-server, systemd (for systemd-analyze).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
BUILD=${BUILD:-build}
say() { echo "slow_ansible: $*"; }
die() { echo "slow_ansible: FAIL: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root for network and mount namespaces"
for t in ansible-playbook ssh ssh-keygen ip unshare start-stop-daemon curl python3 \
         systemd-analyze; do
    command -v "$t" >/dev/null || die "$t not found (make deps installs it)"
done
[ -x /usr/sbin/sshd ] || die "/usr/sbin/sshd not found (openssh-server; make deps)"
for b in baton baton-coordinator baton-worker; do
    [ -x "$BUILD/$b" ] || die "$BUILD/$b not built"
done
fixtures=${BT_FIXTURES:-}
for d in "$fixtures" ../shared/fixtures /work/shared/fixtures; do
    [ -n "$d" ] && [ -r "$d/tiny-a/gguf/model-q8_0.gguf" ] && { fixtures=$(cd "$d" && pwd); break; }
done
model=$fixtures/tiny-a/gguf/model-q8_0.gguf
[ -r "$model" ] || die "tiny-a fixture not found (BT_FIXTURES)"

export ANSIBLE_CONFIG=$root/ansible/ansible.cfg
export ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0
# Per-task times in the logs (printed on failure).
export ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_tasks

# --- static checks ---------------------------------------------------------------------------
(cd ansible && ansible-playbook -i inventory.example.ini --syntax-check site.yml rolling.yml) \
    >/dev/null || die "ansible-playbook --syntax-check"
say "syntax-check passed"

# --- hosts -----------------------------------------------------------------------------------
tmp=$(mktemp -d /tmp/bt-ansible.XXXXXX)
tag=$(printf '%04x' $((RANDOM)))
net=10.$((100 + RANDOM % 100)).$((RANDOM % 250))
br=btb$tag
names=(h1 h2 h3)
ns_of() { echo "bt-ans-$tag-$1"; }

cleanup() {
    set +e
    for h in "${names[@]}"; do
        ns=$(ns_of "$h")
        ip netns list 2>/dev/null | grep -q "^$ns\b" || continue
        # Everything in the namespace was started by this test: sshd and what it ran (the
        # daemons, detached by start-stop-daemon).
        pids=$(ip netns pids "$ns" 2>/dev/null)
        [ -n "$pids" ] && kill $pids 2>/dev/null
    done
    sleep 1
    for h in "${names[@]}"; do
        ns=$(ns_of "$h")
        pids=$(ip netns pids "$ns" 2>/dev/null)
        [ -n "$pids" ] && kill -9 $pids 2>/dev/null
        ip netns del "$ns" 2>/dev/null
    done
    ip link del "$br" 2>/dev/null
    if [ -n "${KEEP_TMP:-}" ]; then echo "slow_ansible: kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

mkdir -p "$tmp/ssh" "$tmp/cp" "$tmp/local" "$tmp/remote"
ssh-keygen -q -t ed25519 -N '' -f "$tmp/ssh/id" -C bt-ansible-test
ssh-keygen -q -t ed25519 -N '' -f "$tmp/ssh/host_key" -C bt-ansible-host
cp "$tmp/ssh/id.pub" "$tmp/ssh/authorized_keys"
chmod 600 "$tmp/ssh/authorized_keys"

ip link add "$br" type bridge
ip addr add "$net.1/24" dev "$br"
ip link set "$br" up
i=0
for h in "${names[@]}"; do
    i=$((i + 1))
    ns=$(ns_of "$h")
    ip=$net.1$i
    hd=$tmp/$h
    mkdir -p "$hd/opt" "$hd/etc"
    cp -a /etc/. "$hd/etc/"
    echo "$h" >"$hd/etc/hostname"
    cat >"$hd/sshd_config" <<EOF
ListenAddress $ip
HostKey $tmp/ssh/host_key
PermitRootLogin prohibit-password
AuthorizedKeysFile $tmp/ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
    ip netns add "$ns"
    ip link add "btv$tag$i" type veth peer name "btp$tag$i"
    ip link set "btp$tag$i" netns "$ns"
    ip link set "btv$tag$i" master "$br" up
    ip -n "$ns" link set lo up
    ip -n "$ns" link set "btp$tag$i" name eth0
    ip -n "$ns" addr add "$ip/24" dev eth0
    ip -n "$ns" link set eth0 up
    # The mount namespace: own /opt, /etc, /run; sshd replaces the shell (exec) so the daemons
    # the play starts live in these namespaces too.
    ip netns exec "$ns" unshare --mount --uts --propagation private /bin/sh -c "
        hostname $h
        mount --bind $hd/opt /opt
        mount --bind $hd/etc /etc
        mount -t tmpfs -o mode=0755 tmpfs /run
        mkdir -p /run/sshd
        exec /usr/sbin/sshd -D -e -f $hd/sshd_config" >"$hd/sshd.log" 2>&1 &
done

cat >"$tmp/inventory.ini" <<EOF
[coordinator]
h1 ansible_host=$net.11

[workers]
h2 ansible_host=$net.12 baton_model_local=true baton_threads=1 baton_worker_bind=tcp://$net.12:7801
h3 ansible_host=$net.13 baton_model_local=false baton_threads=1

[all:vars]
ansible_user=root
ansible_ssh_private_key_file=$tmp/ssh/id
ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR'
baton_service_manager=none
baton_install_mode=copy
baton_local_build_dir=$root/$BUILD
baton_model_src=$model
baton_apt_update=false
baton_min_workers=2
baton_max_ctx=512
baton_drain_timeout=20
baton_log_level=info
EOF
export ANSIBLE_SSH_CONTROL_PATH_DIR=$tmp/cp ANSIBLE_LOCAL_TEMP=$tmp/local \
       ANSIBLE_REMOTE_TEMP=$tmp/remote

for h in 1 2 3; do
    for _ in $(seq 50); do
        ssh -o BatchMode=yes -o ConnectTimeout=2 -o StrictHostKeyChecking=no \
            -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -i "$tmp/ssh/id" \
            "root@$net.1$h" true 2>/dev/null && break
        sleep 0.2
    done
done
got=$(ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
      -o LogLevel=ERROR -i "$tmp/ssh/id" "root@$net.12" 'hostname; ls -A /opt | wc -l') ||
    die "ssh to h2 failed: $(cat "$tmp/h2/sshd.log")"
[ "$(echo "$got" | head -1)" = h2 ] && [ "$(echo "$got" | tail -1)" = 0 ] ||
    die "h2 is not a separate host (hostname, empty /opt): $got"
say "3 hosts up on $net.0/24 (sshd per netns, own hostname, /opt, /etc, /run)"

dump_logs() {
    for h in "${names[@]}"; do
        for f in "$tmp/$h"/opt/baton/log/*.log; do
            [ -f "$f" ] || continue
            echo "--- $h: $(basename "$f")"; tail -n 30 "$f"
        done
    done
}

play() { # playbook, log name
    local t0=$SECONDS
    if ! ansible-playbook -i "$tmp/inventory.ini" "ansible/$1" >"$tmp/$2.log" 2>&1; then
        tail -n 60 "$tmp/$2.log"; dump_logs; die "ansible-playbook $1 ($2) failed"
    fi
    say "$1 ($2): $((SECONDS - t0)) s; $(grep -E '^h[0-9] +:' "$tmp/$2.log" | tr -s ' ' | tr '\n' ';')"
}

chat() { # label
    local url=http://$net.11:8080 models id out
    curl -sf "$url/health" >/dev/null || die "/health not ok"
    models=$(curl -sf "$url/v1/models") || die "/v1/models failed"
    id=$(printf '%s' "$models" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')
    out=$(curl -sf -m 60 "$url/v1/chat/completions" -H 'Content-Type: application/json' \
          -d "{\"model\":\"$id\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello, baton\"}],\"max_tokens\":12,\"temperature\":0}") ||
        { dump_logs; die "chat request failed ($1)"; }
    printf '%s' "$out" | python3 -c '
import json, sys
r = json.load(sys.stdin)
c = r["choices"][0]
assert r["object"] == "chat.completion", r
assert c["message"]["role"] == "assistant", r
assert c["finish_reason"] in ("stop", "length"), r
assert r["usage"]["completion_tokens"] > 0 and r["usage"]["prompt_tokens"] > 0, r
print("usage", r["usage"], "finish", c["finish_reason"], "text", repr(c["message"]["content"][:60]))
' || die "bad chat response ($1): $out"
    say "chat ($1) via $url model $id ok"
}

# --- deploy, serve, redeploy -----------------------------------------------------------------
play site.yml first
chat "after first deploy"
[ -s "$tmp/h2/opt/baton/models/$(basename "$model")" ] || die "h2 should keep a model copy"
[ ! -e "$tmp/h3/opt/baton/models/$(basename "$model")" ] || die "h3 should have no model copy"
grep -q -- "--bind tcp://$net.12:7801" "$tmp/h2/etc/baton/worker.env" || die "h2 --bind missing"

play site.yml second
bad=$(grep -E '^h[0-9] +:' "$tmp/second.log" | grep -vE 'changed=0 .*failed=0' || true)
[ -z "$bad" ] || die "second run was not idempotent: $bad"
say "second run: changed=0 on every host"

# --- the systemd units, checked where they were rendered -------------------------------------
for h in h1 h2 h3; do
    i=${h#h}
    unit=baton-worker.service
    [ "$h" = h1 ] && unit=baton-coordinator.service
    out=$(ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
          -o LogLevel=ERROR -i "$tmp/ssh/id" "root@$net.1$i" \
          "SYSTEMD_LOG_LEVEL=warning systemd-analyze verify /etc/baton/systemd/$unit 2>&1") ||
        die "systemd-analyze verify $unit on $h: $out"
    [ -z "$out" ] || die "systemd-analyze verify $unit on $h printed: $out"
done
say "systemd-analyze verify: units clean on h1 h2 h3"

# --- rolling restart -------------------------------------------------------------------------
# Requests keep coming while every worker is drained and restarted: none may fail, and the
# coordinator (nothing of it changed) keeps running.
on_h1() { ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o LogLevel=ERROR -i "$tmp/ssh/id" "root@$net.11" "$@"; }
coord_pid=$(on_h1 cat /run/baton/coordinator.pid) || die "no coordinator pidfile on h1"
model_id=$(curl -sf "http://$net.11:8080/v1/models" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])') || die "/v1/models"
(
    ok=0 bad=0
    while [ ! -e "$tmp/stop-traffic" ]; do
        if curl -sf -m 120 "http://$net.11:8080/v1/completions" -H 'Content-Type: application/json' \
            -d "{\"model\":\"$model_id\",\"prompt\":\"Once upon a time\",\"max_tokens\":24,\"temperature\":0}" \
            >/dev/null; then
            ok=$((ok + 1))
        else
            bad=$((bad + 1))
        fi
    done
    echo "$ok $bad" >"$tmp/traffic"
) &
traffic=$!
play rolling.yml rolling
touch "$tmp/stop-traffic"
wait $traffic
read -r t_ok t_bad <"$tmp/traffic"
say "requests during the rolling restart: $t_ok ok, $t_bad failed"
[ "$t_bad" -eq 0 ] || { dump_logs; die "$t_bad requests failed during the rolling restart"; }
[ "$t_ok" -gt 0 ] || die "no request completed during the rolling restart"
grep -q 'Drain the worker' "$tmp/rolling.log" || die "rolling.yml did not drain"
[ "$(on_h1 cat /run/baton/coordinator.pid)" = "$coord_pid" ] ||
    die "the coordinator was restarted although nothing of it changed"
workers=$(on_h1 /opt/baton/bin/baton admin --url http://127.0.0.1:8080 workers) ||
    die "baton admin workers on h1 failed"
printf '%s\n' "$workers"
printf '%s\n' "$workers" | grep -q '^status: serving, 2 stage' || die "not serving on 2 stages after the rolling restart"
chat "after rolling restart"

say "ok"
