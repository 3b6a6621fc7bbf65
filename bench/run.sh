#!/usr/bin/env bash
# One command per benchmark, from a fresh checkout: installs the packages
# (.ci/deps, as root) and builds into build/ when they are missing.
#   bash bench/run.sh overhead|faultmix|hedging|scale|memory|state|protocols|serve|frontier|all [args...]
# Extra args go to the benchmark (see each script's header).
set -euo pipefail
cd "$(dirname "$0")/.."
build="${SCATTER_BUILD_DIR:-build}"
for tool in cmake luajit nginx microsocks cc; do
  if ! command -v "$tool" >/dev/null; then
    echo "bench/run.sh: $tool is missing: installing the packages (.ci/deps)" >&2
    bash .ci/deps
    break
  fi
done
if [ ! -f "$build/lib/scatter/core.so" ] || [ ! -x "$build/spec/support/farm/scatter-farm" ]; then
  echo "bench/run.sh: building into $build" >&2
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$build" -j"$(nproc)" >/dev/null
fi
export LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="$build/lib/?.so;;"
name="${1:-}"
shift || true
case "$name" in
  overhead|hedging|memory|protocols|frontier|tls) exec luajit "bench/$name.lua" "$@" ;;
  faultmix) bash bench/peers.sh && exec luajit bench/faultmix.lua "$@" ;;
  scale) exec luajit bench/sim_bench.lua "${1:-1000000}" ;;
  state) exec luajit bench/state_bench.lua "$@" ;;
  serve) exec luajit bench/serve.lua "$@" ;;
  all)
    for b in overhead faultmix hedging scale memory frontier; do bash bench/run.sh "$b"; echo; done ;;
  *) echo "usage: bash bench/run.sh overhead|faultmix|hedging|scale|memory|state|protocols|serve|frontier|tls|all [args...]" >&2; exit 2 ;;
esac
