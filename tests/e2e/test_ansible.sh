#!/usr/bin/env bash
# tests/e2e/test_ansible.sh: the static checks of the deployment (ansible/), fast enough for
# every test run; the full deployment to three hosts is tests/e2e/slow_ansible.sh
# (make test-deploy).
#   1. ansible-playbook --syntax-check and ansible-lint (production profile) on site.yml and
#      rolling.yml;
#   2. the roles' templates rendered by Ansible on this machine (a coordinator and a worker
#      configuration, into a temp prefix): systemd-analyze verify on both units (warnings
#      count as failures), sh -n on the baton-service wrapper, and the rendered command lines
#      accepted by the daemons' own option parsers (--help would not check them: an unknown or
#      malformed option makes argp exit 64 before anything starts; we look for that).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
BUILD=${BUILD:-build}
die() { echo "test_ansible: FAIL: $*" >&2; exit 1; }
for t in ansible-playbook ansible-lint systemd-analyze; do
    command -v "$t" >/dev/null || die "$t not found (make deps installs it)"
done
export ANSIBLE_CONFIG=$root/ansible/ansible.cfg ANSIBLE_NOCOLOR=1

tmp=$(mktemp -d /tmp/bt-ansible-static.XXXXXX)
trap '[ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"' EXIT
export ANSIBLE_LOCAL_TEMP=$tmp/local ANSIBLE_REMOTE_TEMP=$tmp/remote
export ANSIBLE_ROLES_PATH=$root/ansible/roles

(cd ansible && ansible-playbook -i inventory.example.ini --syntax-check site.yml rolling.yml) \
    >"$tmp/syntax.log" 2>&1 || { cat "$tmp/syntax.log"; die "syntax-check"; }
(cd ansible && ansible-lint --nocolor -p site.yml rolling.yml) >"$tmp/lint.log" 2>&1 ||
    { cat "$tmp/lint.log"; die "ansible-lint"; }
echo "test_ansible: syntax-check and ansible-lint (production profile) passed"

# Render with the roles' own defaults, everything under $tmp.
prefix=$tmp/opt/baton
mkdir -p "$prefix/bin" "$tmp/etc"
for b in baton-coordinator baton-worker; do
    [ -x "$BUILD/$b" ] || die "$BUILD/$b not built"
    cp "$BUILD/$b" "$prefix/bin/"
done
cat >"$tmp/inventory.ini" <<EOF
[coordinator]
head ansible_host=192.0.2.10
[workers]
w1 ansible_host=192.0.2.11 baton_mem=2G baton_threads=2 baton_model_local=true baton_worker_bind=tcp://192.0.2.11:7801
w2 ansible_host=192.0.2.12
EOF
cat >"$tmp/render.yml" <<EOF
- name: Render the baton templates locally
  hosts: coordinator:workers
  connection: local
  gather_facts: false
  tasks:
    # A static import that runs nothing: it brings in the role defaults at their own (lowest)
    # precedence, so the inventory's host variables still win, as in a real run.
    - name: Load the role defaults
      ansible.builtin.import_role:
        name: common
      when: false
    - name: Make the directory
      ansible.builtin.file: {path: "{{ baton_conf_dir }}", state: directory, mode: "0755"}
    - name: Render
      ansible.builtin.template:
        src: "$root/ansible/roles/{{ item.role }}/templates/{{ item.src }}"
        dest: "{{ baton_conf_dir }}/{{ item.src | regex_replace('\\\\.j2\$', '') }}"
        mode: "0644"
      loop:
        - {role: common, src: baton-service.sh.j2}
        - {role: "{{ 'coordinator' if inventory_hostname == 'head' else 'worker' }}", src: "{{ 'coordinator' if inventory_hostname == 'head' else 'worker' }}.env.j2"}
        - {role: "{{ 'coordinator' if inventory_hostname == 'head' else 'worker' }}", src: "baton-{{ 'coordinator' if inventory_hostname == 'head' else 'worker' }}.service.j2"}
EOF
# Extra vars (the paths under $tmp): they win over everything.
cat >"$tmp/extra.yml" <<EOF
baton_prefix: $prefix
baton_conf_dir: "$tmp/etc/{{ inventory_hostname }}"
baton_svc: none
baton_model_src: /srv/models/m.gguf
baton_wire: f16
baton_max_ctx: 1024
EOF
ansible-playbook -i "$tmp/inventory.ini" -e "@$tmp/extra.yml" "$tmp/render.yml" >"$tmp/render.log" 2>&1 ||
    { cat "$tmp/render.log"; die "rendering the templates"; }

for f in "$tmp/etc/head/baton-coordinator.service" "$tmp/etc/w1/baton-worker.service" \
         "$tmp/etc/w2/baton-worker.service"; do
    # verify wants the unit's name to be a unit name: it is. The baton user need not exist.
    out=$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify "$f" 2>&1) || die "verify $f: $out"
    [ -z "$out" ] || die "systemd-analyze verify $(basename "$f") printed: $out"
done
echo "test_ansible: systemd-analyze verify: both units clean"
for h in head w1 w2; do sh -n "$tmp/etc/$h/baton-service.sh" || die "sh -n baton-service ($h)"; done

# The options the roles write must be ones the daemons accept.
args() { (set -a; . "$1"; printf '%s' "$BATON_ARGS"); }
grep -q -- '--join tcp://192.0.2.10:7700' "$tmp/etc/w1/worker.env" || die "worker --join"
grep -q -- '--bind tcp://192.0.2.11:7801' "$tmp/etc/w1/worker.env" || die "worker --bind"
grep -q -- '--model' "$tmp/etc/w2/worker.env" && die "w2 keeps no model: no --model"
grep -q -- '--min-workers 2' "$tmp/etc/head/coordinator.env" || die "coordinator --min-workers"
for pair in "head baton-coordinator coordinator" "w1 baton-worker worker" "w2 baton-worker worker"; do
    set -- $pair
    a=$(args "$tmp/etc/$1/$3.env")
    # A bad option makes argp exit 64 at once; a good command line gets past parsing and then
    # fails later (no model file, no coordinator) or keeps running: stop it after 2 s.
    # shellcheck disable=SC2086
    rc=0; timeout 2 "$prefix/bin/$2" $a >"$tmp/$1.out" 2>&1 || rc=$?
    [ "$rc" -ne 64 ] || { cat "$tmp/$1.out"; die "$2 rejected the rendered options: $a"; }
done
echo "test_ansible: rendered env files parse with the daemons' options"
echo "test_ansible: ok"
