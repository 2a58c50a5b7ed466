#!/usr/bin/env bash
# tests/e2e/test_openai.sh: the official `openai` npm client (installed here from the npm
# registry into $BUILD/npm, unmodified) against a coordinator + 2 workers on loopback serving
# the tiny-a fixture (f32 weights, f32 activations on the wire): chat and completions,
# streaming and not; greedy tokens must equal the fixture reference (tests/e2e/openai_client.mjs).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
source tests/e2e/lib_cluster.sh
fx=$(dirname "$FIX")
command -v node >/dev/null && command -v npm >/dev/null || { echo "node/npm missing (make deps)"; exit 1; }

npmdir=$BUILD/npm
if [ ! -f "$npmdir/node_modules/openai/package.json" ]; then
    mkdir -p "$npmdir"
    [ -f "$npmdir/package.json" ] || echo '{"name":"baton-e2e","private":true,"type":"module"}' >"$npmdir/package.json"
    npm install --prefix "$npmdir" openai@4 --no-audit --no-fund --loglevel=error
fi
echo "openai npm package: $(node -p "require('./$npmdir/node_modules/openai/package.json').version")"
# an ES module resolves imports from its own folder: run a copy next to node_modules
cp tests/e2e/openai_client.mjs "$npmdir/openai_client.mjs"

trap 'rc=$?; set +e; [ $rc -ne 0 ] && cluster_logs; cleanup; exit $rc' EXIT
cluster_start "$fx/tiny-a/gguf/model-f32.gguf" 2 --wire f32 --max-seqs 8
echo "cluster: $CLUSTER_URL"
sed 's/^/  /' "$CLUSTER_DIR/plan.txt"
node "$npmdir/openai_client.mjs" "$CLUSTER_URL" "$fx/tiny-a/prompts/chat.ids" \
    "$fx/tiny-a/ref/f32/chat/greedy.txt"
curl -sf "$CLUSTER_URL/health" >/dev/null
echo "server still healthy"
