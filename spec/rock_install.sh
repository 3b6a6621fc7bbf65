#!/usr/bin/env bash
# Installs scatter with luarocks (offline) into a temporary tree and runs a
# script with the installed CLI and with the installed module under luajit.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
tree=$(mktemp -d /tmp/scatter-rock.XXXXXX)
trap 'rm -rf "$tree"' EXIT
cd "$src"
LUAROCKS_CONFIG="$src/rocks/luarocks-config.lua" \
  luarocks --tree "$tree" make --no-doc rocks/scatter-scm-1.rockspec >"$tree/install.log" 2>&1 ||
  { cat "$tree/install.log"; exit 1; }

cat > "$tree/check.lua" <<'LUA'
local scatter = require("scatter")
local cjson = require("cjson")
local path = package.searchpath and package.searchpath("scatter", package.path) or "?"
local t0 = scatter.now()
scatter.run(function() scatter.sleep(0.01) end)
assert(scatter.now() - t0 >= 0.01)
local ok, err = pcall(scatter.pool, { proxies = { "127.0.0.1:1" }, max_inflght = 1 })
assert(not ok and err:find("did you mean 'max_inflight'", 1, true), err)
print(cjson.encode({ ok = true }) .. " " .. scatter._VERSION .. " " .. path)
LUA
out=$(cd / && env -u LUA_PATH -u LUA_CPATH "$tree/bin/scatter" run "$tree/check.lua")
echo "installed CLI: $out"
case "$out" in '{"ok":true} 0.1.0 '*/share/lua/5.1/scatter/init.lua) ;; *) echo "unexpected output"; exit 1 ;; esac
"$tree/bin/scatter" version | head -1

eval "$(LUAROCKS_CONFIG="$src/rocks/luarocks-config.lua" luarocks --tree "$tree" path)"
out=$(cd / && luajit "$tree/check.lua")
echo "installed module under luajit: $out"
case "$out" in *"$tree/share/lua/5.1/scatter/init.lua"*) ;; *) echo "not the installed module"; exit 1 ;; esac
echo "1 passed, 0 failed"
