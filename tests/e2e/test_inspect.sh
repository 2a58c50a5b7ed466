#!/usr/bin/env bash
# baton inspect on the fixtures: GGUF and safetensors forms describe the same model; per-range
# memory adds up to the whole; a corrupt file gives a one-line error and exit status 1.
set -euo pipefail
BUILD=${BUILD:-build}
cd "$(dirname "$0")/../.."
fx=${BT_FIXTURES:-}
for c in "$fx" ../shared/fixtures /work/shared/fixtures; do
    [ -n "$c" ] && [ -f "$c/tiny-a/model.json" ] && { fx=$c; break; }
done
[ -f "$fx/tiny-a/model.json" ] || { echo "FAIL: fixtures not found"; exit 1; }
baton=$BUILD/baton
fail() { echo "FAIL: $*"; exit 1; }

out=$($baton inspect "$fx/tiny-a/gguf/model-q4_k_m.gguf" --tensors --stages 2)
grep -q "8 layers: 6 linear attention (Gated DeltaNet) + 2 full attention (+ MTP blocks, skipped)" <<<"$out" ||
    fail "layer summary: $out"
grep -q "layer kinds:  LLLFLLLF" <<<"$out" || fail "layer kinds"
grep -qE "^blk\.0\.attn_qkv\.weight +q8_0 +\[128, 512\] +69632" <<<"$out" || fail "tensor table"
grep -q "1761 real tokens" <<<"$out" || fail "tokenizer summary"
# The two stages' weights add up to the file's tensor bytes (every trunk tensor in one range).
total=$(sed -nE 's/^tensors: +[0-9]+ \([0-9]+ skipped\), ([0-9.]+) MiB/\1/p' <<<"$out")
sum=$(awk '/^[01] +[0-9]+\.\.[0-9]+/ {s += $3} END {printf "%.1f", s}' <<<"$out")
[ "$total" = "$sum" ] || fail "stage weights $sum MiB != model $total MiB"

hf=$($baton inspect "$fx/tiny-a/hf")
grep -q "(safetensors)" <<<"$hf" || fail "hf format line"
grep -q "layer kinds:  LLLFLLLF" <<<"$hf" || fail "hf layer kinds"

bad=$(mktemp)
trap 'rm -f "$bad"' EXIT
head -c 1000 "$fx/tiny-a/gguf/model-f32.gguf" >"$bad"
if err=$($baton inspect "$bad" 2>&1); then fail "truncated file accepted"; fi
[ "$(wc -l <<<"$err")" -eq 1 ] || fail "error is not one line: $err"
echo "inspect: ok ($err)"
