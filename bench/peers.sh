#!/usr/bin/env bash
# Installs the npm peers bench/faultmix.lua measures against (Crawlee 3 and
# proxy-chain, pinned) into bench/peers/, which git ignores. Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p peers
cat > peers/package.json <<'JSON'
{ "name": "scatter-bench-peers", "private": true, "version": "0.0.0",
  "dependencies": { "crawlee": "3.18.1", "proxy-chain": "2.7.1" } }
JSON
if [ -f peers/node_modules/crawlee/package.json ] && [ -f peers/node_modules/proxy-chain/package.json ] \
   && grep -q '"version": "3.18.1"' peers/node_modules/crawlee/package.json; then
  exit 0
fi
command -v npm >/dev/null || { echo "bench/peers.sh: npm (node 20) is needed for the Crawlee peer" >&2; exit 1; }
cd peers && npm install --no-audit --no-fund --omit=optional --loglevel=error
