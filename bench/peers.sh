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
if ! command -v npm >/dev/null; then
  # Debian 12's node 18 runs Crawlee 3 too
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bench/peers.sh: installing node and npm (apt)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  else
    echo "bench/peers.sh: npm is needed for the Crawlee peer (apt-get install nodejs npm)" >&2
    exit 1
  fi
fi
cd peers && npm install --no-audit --no-fund --omit=optional --loglevel=error
