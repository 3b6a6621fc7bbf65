#!/usr/bin/env bash
# The demo: a local nginx target and a proxy farm with a realistic fault mix
# (most proxies broken in some way), then the demo crawl through them.
# Everything listens on 127.0.0.1 and is stopped (by PID) on exit.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${SCATTER_BUILD_DIR:-$here/build}
pages=${1:-200}
dir=$(mktemp -d /tmp/scatter-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

free_port() { luajit -e 'local s=require("socket").bind("127.0.0.1",0) local _,p=s:getsockname() print(p) s:close()'; }

mkdir -p "$dir/www" "$dir/logs"
for i in $(seq 1 "$pages"); do
  printf '<html><body><h1>page %d </h1><p>%s</p><!-- end of page --></body></html>\n' \
    "$i" "$(head -c 600 /dev/zero | tr '\0' 'a')" > "$dir/www/page$i.html"
done
port=$(free_port)
cat > "$dir/nginx.conf" <<CONF
daemon off;
master_process off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/tmp;
  proxy_temp_path $dir/tmp;
  fastcgi_temp_path $dir/tmp;
  uwsgi_temp_path $dir/tmp;
  scgi_temp_path $dir/tmp;
  server { listen 127.0.0.1:$port backlog=4096; root $dir/www; }
}
CONF
mkdir -p "$dir/tmp"
nginx -p "$dir" -c "$dir/nginx.conf" & pids+=($!)

cat > "$dir/farm.conf" <<CONF
good count=6
slow latency=0.4 jitter=0.2 count=4
refuse count=8
blackhole count=4
handshake_fail count=3
flaky p=0.5 count=3
block count=3
tamper count=3
drop_mid bytes=300 count=2
CONF
"$build/spec/support/farm/scatter-farm" --config "$dir/farm.conf" \
  --ports-out "$dir/ports.json" --log /dev/null > "$dir/farm.out" & pids+=($!)
for _ in $(seq 1 100); do [ -s "$dir/ports.json" ] && break; sleep 0.05; done
grep -o '"port":[0-9]*' "$dir/ports.json" | cut -d: -f2 | sed 's/^/127.0.0.1:/' > "$dir/proxies.txt"
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done

echo "demo: $(wc -l < "$dir/proxies.txt") proxies (6 good, the rest slow or broken), target http://demo.test:$port"
"$build/scatter" run "$here/examples/quickstart.lua" "file://$dir/proxies.txt" "http://demo.test:$port" "$pages"
