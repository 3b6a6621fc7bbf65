#!/usr/bin/env bash
# Smoke test for scatter-farm: every profile, the hostname map, auth, the log
# and the control port, checked with the curl CLI against a private nginx.
# Usage: smoke.sh /path/to/scatter-farm      (builds nothing)
# Exits non-zero on any failure; kills only the processes it started.
set -u
FARM=${1:?usage: smoke.sh /path/to/scatter-farm}
[ -x "$FARM" ] || { echo "not executable: $FARM" >&2; exit 2; }
command -v nginx >/dev/null || { echo "nginx not found" >&2; exit 2; }
command -v curl >/dev/null || { echo "curl not found" >&2; exit 2; }

T=$(mktemp -d /tmp/farm-smoke.XXXXXX)
FARM_PID= NGINX_PID= FAILS=0 CHECKS=0
cleanup() {
  [ -n "$FARM_PID" ] && kill "$FARM_PID" 2>/dev/null && wait "$FARM_PID" 2>/dev/null
  [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
  if [ -n "${SMOKE_KEEP:-}" ]; then echo "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT

ok()   { CHECKS=$((CHECKS + 1)); echo "ok   $*"; : > "$T/curl.err"; }
fail() {
  CHECKS=$((CHECKS + 1)); FAILS=$((FAILS + 1)); echo "FAIL $*"
  [ -s "$T/curl.err" ] && sed 's/^/     curl: /' "$T/curl.err"
}
check() { local what=$1; shift; if "$@"; then ok "$what"; else fail "$what"; fi; }
has()   { grep -qE -- "$2" <<<"$1"; }   # has TEXT REGEX

# A free port for nginx: bind-and-release through python is not available
# everywhere, so try a few in a high range until nginx starts.
mkdir -p "$T/www" "$T/logs"
chmod 755 "$T" "$T/www"   # nginx workers run unprivileged
printf 'banana bandana alpaca\n' > "$T/www/small.txt"
head -c $((5 * 1024 * 1024)) /dev/urandom > "$T/www/big.bin"
SMALL_SHA=$(sha256sum < "$T/www/small.txt" | cut -d' ' -f1)
BIG_SHA=$(sha256sum < "$T/www/big.bin" | cut -d' ' -f1)
for try in 1 2 3 4 5 6 7 8; do
  NPORT=$((20000 + RANDOM % 20000))
  cat > "$T/nginx.conf" <<EOF
daemon off;
pid $T/nginx.pid;
error_log $T/logs/error.log;
events {}
http {
  access_log off;
  server {
    listen 127.0.0.1:$NPORT backlog=1024;
    location / { root $T/www; }
  }
}
EOF
  nginx -p "$T" -c "$T/nginx.conf" 2>>"$T/logs/start.log" &
  NGINX_PID=$!
  for _ in $(seq 50); do
    curl -s -o /dev/null "http://127.0.0.1:$NPORT/small.txt" && break 2
    kill -0 "$NGINX_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill "$NGINX_PID" 2>/dev/null; wait "$NGINX_PID" 2>/dev/null; NGINX_PID=
done
[ -n "$NGINX_PID" ] || { echo "cannot start nginx" >&2; cat "$T/logs/"* >&2; exit 2; }
URL=http://127.0.0.1:$NPORT

# One proxy per profile (index in comments); order matters below.
cat > "$T/farm.conf" <<'EOF'
# scatter-farm smoke config
good                       # 0
slow latency=0.3 jitter=0  # 1
refuse                     # 2
blackhole                  # 3
handshake_fail             # 4
flaky p=1                  # 5
block                      # 6
tamper                     # 7
die_after n=2              # 8
drop_mid bytes=4096        # 9
good user=alice pass=s3cret  # 10
good count=2               # 11, 12
EOF
"$FARM" --config "$T/farm.conf" --ports-out "$T/ports.json" --log "$T/farm.log" \
  --control-port 0 --seed 7 --map 'other.example=127.0.0.1' > "$T/farm.out" 2> "$T/farm.err" &
FARM_PID=$!
for _ in $(seq 100); do grep -q '^READY' "$T/farm.out" && break; sleep 0.05; done
grep -q '^READY 13$' "$T/farm.out" || { echo "farm not ready"; cat "$T/farm.out" "$T/farm.err"; exit 1; }
CPORT=$(sed -n 's/^CONTROL //p' "$T/farm.out")
# ports.json is one object per line: {"index":N,"port":P,"profile":"..."}
port() { sed -n "s/.*{\"index\":$1,\"port\":\([0-9]*\),.*/\1/p" "$T/ports.json"; }
check "ports.json lists 13 proxies in order" \
  test "$(grep -o '"index":[0-9]*' "$T/ports.json" | tr '\n' ' ')" = \
  '"index":0 "index":1 "index":2 "index":3 "index":4 "index":5 "index":6 "index":7 "index":8 "index":9 "index":10 "index":11 "index":12 '
check "CONTROL line precedes READY" test "$(head -1 "$T/farm.out")" = "CONTROL $CPORT"

# curl through proxy index $1 (socks5h unless SOCKS=--socks5); sets RC, BODY.
SOCKS=--socks5-hostname
via() {
  local idx=$1; shift
  BODY=$(curl -sS --max-time 5 "$SOCKS" "127.0.0.1:$(port "$idx")" "$@" 2>"$T/curl.err")
  RC=$?
}
sha_via() {
  local idx=$1; shift
  curl -sS --max-time 20 --socks5-hostname "127.0.0.1:$(port "$idx")" "$@" 2>"$T/curl.err" \
    | sha256sum | cut -d' ' -f1
}
# The log line for the latest request through proxy $1.
lastlog() { grep "^port=$(port "$1") " "$T/farm.log" | tail -1; }
# curl 7.88: 97 = CURLE_PROXY (SOCKS handshake/reply errors); older: 7.
is_proxy_err() { [ "$1" = 97 ] || [ "$1" = 7 ]; }

# ---- good
check "good: small file sha256" test "$(sha_via 0 "$URL/small.txt")" = "$SMALL_SHA"
check "good: 5 MiB file sha256" test "$(sha_via 0 "$URL/big.bin")" = "$BIG_SHA"
check "good: second pool member works" test "$(sha_via 12 "$URL/big.bin")" = "$BIG_SHA"
check "log: IPv4 literal via socks5h is atyp=1" \
  has "$(lastlog 12)" "atyp=1 host=127.0.0.1 dstport=$NPORT action=ok"
via 0 "http://foo.test:$NPORT/small.txt"
check "good: foo.test resolves via map (rc=$RC)" test "$RC" = 0 -a "$BODY" = "$(cat "$T/www/small.txt")"
check "log: foo.test is atyp=3" test "$(lastlog 0)" = \
  "port=$(port 0) atyp=3 host=foo.test dstport=$NPORT action=ok"
via 0 "http://localhost:$NPORT/small.txt"
check "good: localhost is mapped (rc=$RC)" test "$RC" = 0
via 0 "http://Other.Example:$NPORT/small.txt"
check "good: --map other.example (rc=$RC)" test "$RC" = 0
SOCKS=--socks5 via 0 "$URL/small.txt"
check "good: --socks5 local resolve (rc=$RC)" test "$RC" = 0
check "log: --socks5 is atyp=1" test "$(lastlog 0)" = \
  "port=$(port 0) atyp=1 host=127.0.0.1 dstport=$NPORT action=ok"
via 0 "http://example.invalid:$NPORT/small.txt"
check "good: example.invalid fails with proxy error (rc=$RC)" is_proxy_err "$RC"
check "log: example.invalid unresolved" test "$(lastlog 0)" = \
  "port=$(port 0) atyp=3 host=example.invalid dstport=$NPORT action=unresolved"
via 0 "http://127.0.0.1:1/"
check "good: closed target port gives proxy error (rc=$RC)" is_proxy_err "$RC"
check "log: closed target port is action=failed" has "$(lastlog 0)" 'dstport=1 action=failed$' 

# ---- slow: ~0.3 s CONNECT delay
START=$(date +%s%N)
check "slow: body intact" test "$(sha_via 1 "$URL/big.bin")" = "$BIG_SHA"
MS=$(( ($(date +%s%N) - START) / 1000000 ))
check "slow: took >= 300 ms (${MS} ms)" test "$MS" -ge 300

# ---- refuse / blackhole / handshake_fail / flaky
via 2 "$URL/small.txt"
check "refuse: curl exit 7 (rc=$RC)" test "$RC" = 7
RC=0; BODY=$(curl -sS --max-time 2 --socks5-hostname "127.0.0.1:$(port 3)" "$URL/small.txt" 2>/dev/null) || RC=$?
check "blackhole: curl exit 28 (rc=$RC)" test "$RC" = 28
via 4 "$URL/small.txt"
check "handshake_fail: proxy error (rc=$RC)" is_proxy_err "$RC"
via 5 "$URL/small.txt"
check "flaky p=1: proxy error (rc=$RC)" is_proxy_err "$RC"
check "log: flaky logged" has "$(lastlog 5)" 'action=flaky$' 

# ---- block
BODY=$(curl -sS --max-time 5 --socks5-hostname "127.0.0.1:$(port 6)" -i "$URL/small.txt" 2>"$T/curl.err"); RC=$?
check "block: 403 (rc=$RC)" has "$BODY" '^HTTP/1.1 403 Forbidden'
check "block: Content-Type text/html" has "$BODY" '^Content-Type: text/html'
check "block: Attention Required title" has "$BODY" '<title>Attention Required</title>'
check "block: mentions captcha" has "$BODY" 'captcha' 
LEN=$(sed -n 's/^Content-Length: \([0-9]*\)\r$/\1/p' <<<"$BODY")
BLEN=$(curl -s --max-time 5 --socks5-hostname "127.0.0.1:$(port 6)" "$URL/small.txt" | wc -c)
check "block: Content-Length matches body ($LEN vs $BLEN)" test "$LEN" = "$BLEN"

# ---- tamper: a -> 4 in the body only
via 7 -i "$URL/small.txt"
check "tamper: body altered" has "$BODY" '^b4n4n4 b4nd4n4 4lp4c4$'
check "tamper: headers untouched" has "$BODY" '^Content-Type: text/plain' 

# ---- die_after n=2
via 8 "$URL/small.txt"; R1=$RC
via 8 "$URL/small.txt"; R2=$RC
via 8 "$URL/small.txt"; R3=$RC
check "die_after: 2 served then refused ($R1 $R2 $R3)" test "$R1 $R2 $R3" = "0 0 7"

# ---- drop_mid
RC=0; curl -sS --max-time 10 --socks5-hostname "127.0.0.1:$(port 9)" "$URL/big.bin" -o "$T/drop.out" 2>/dev/null || RC=$?
check "drop_mid: transfer fails with 18 or 56 (rc=$RC)" test "$RC" = 18 -o "$RC" = 56
GOT=$(stat -c %s "$T/drop.out" 2>/dev/null || echo 0)
# 4096 bytes relayed = response head + the start of the body.
check "drop_mid: got part of the body ($GOT bytes)" test "$GOT" -gt 0 -a "$GOT" -lt 4096

# ---- auth
via 10 -U alice:s3cret "$URL/small.txt"
check "auth: right credentials (rc=$RC)" test "$RC" = 0 -a "$BODY" = "$(cat "$T/www/small.txt")"
via 10 -U alice:wrong "$URL/small.txt"
check "auth: wrong password fails (rc=$RC)" is_proxy_err "$RC"
via 10 "$URL/small.txt"
check "auth: no credentials fails (rc=$RC)" is_proxy_err "$RC"
via 0 -U alice:s3cret "$URL/small.txt"
check "auth: no-auth proxy still works when client offers creds (rc=$RC)" test "$RC" = 0

# ---- control port
ctl() {
  exec 3<>"/dev/tcp/127.0.0.1/$CPORT" || return 1
  printf '%s\n' "$1" >&3
  IFS= read -r -t 5 REPLY_LINE <&3
  exec 3>&- 3<&-
}
ctl stats
check "control: stats" has "$REPLY_LINE" '^OK \{"accepted":[0-9]+,"active":[0-9]+,"per_proxy":\[\{"index":0,"accepted":[0-9]+,"active":[0-9]+' 
ctl "profile 2 good"
check "control: profile 2 good ($REPLY_LINE)" test "$REPLY_LINE" = "OK profile 2 good listening"
via 2 "$URL/small.txt"
check "control: former refuse port now serves (rc=$RC)" test "$RC" = 0
ctl "profile 0 refuse"
check "control: profile 0 refuse ($REPLY_LINE)" test "$REPLY_LINE" = "OK profile 0 refuse refusing"
via 0 "$URL/small.txt"
check "control: port 0 now refuses (rc=$RC)" test "$RC" = 7
ctl "profile 0 tamper"; via 0 "$URL/small.txt"
check "control: port 0 back, as tamper (rc=$RC)" test "$RC" = 0 -a "$BODY" = "b4n4n4 b4nd4n4 4lp4c4"
ctl "profile 8 die_after n=1"; via 8 "$URL/small.txt"; R1=$RC; via 8 "$URL/small.txt"
check "control: die_after re-armed ($R1 $RC)" test "$R1 $RC" = "0 7"
# down while a transfer is stuck in a blackhole: the connection is cut.
curl -s --max-time 10 --socks5-hostname "127.0.0.1:$(port 3)" "$URL/small.txt" >/dev/null 2>&1 &
CURL_PID=$!
sleep 0.3
ctl "down 3"
check "control: down 3 ($REPLY_LINE)" test "$REPLY_LINE" = "OK down 3 blackhole down"
RC=0; wait "$CURL_PID" || RC=$?
check "control: down cut the blackholed client (rc=$RC, not 28)" test "$RC" != 28 -a "$RC" != 0
via 3 "$URL/small.txt"
check "control: down port refuses (rc=$RC)" test "$RC" = 7
ctl "profile 3 good"; via 3 "$URL/small.txt"
check "control: profile while down stays down (rc=$RC)" test "$RC" = 7
ctl "up 3"
check "control: up 3 ($REPLY_LINE)" test "$REPLY_LINE" = "OK up 3 good listening"
via 3 "$URL/small.txt"
check "control: up restores (rc=$RC)" test "$RC" = 0
ctl "profile 99 good"
check "control: bad index is ERR" has "$REPLY_LINE" '^ERR ' 
ctl "profile 1 slow bogus=1"
check "control: bad key is ERR" has "$REPLY_LINE" '^ERR ' 
ctl "stats"
check "control: active back to 0" has "$REPLY_LINE" '^OK \{"accepted":[0-9]+,"active":0,' 

# ---- config errors are fatal with the line number, exit 2
printf 'good\n\nslow latency=x\n' > "$T/bad.conf"
"$FARM" --config "$T/bad.conf" > /dev/null 2> "$T/bad.err"; RC=$?
check "bad config: exit 2 naming line 3 (rc=$RC)" \
  has "$RC $(cat "$T/bad.err")" '^2 .*line 3: bad value for latency' 

# ---- quit exits 0
ctl quit
check "control: quit replies" test "$REPLY_LINE" = "OK bye"
RC=0; wait "$FARM_PID" || RC=$?
FARM_PID=
check "farm exited 0 after quit (rc=$RC)" test "$RC" = 0

# ---- SIGTERM exits 0 too
printf 'good\n' > "$T/one.conf"
"$FARM" --config "$T/one.conf" > "$T/farm2.out" 2>>"$T/farm.err" &
FARM_PID=$!
for _ in $(seq 100); do grep -q '^READY 1$' "$T/farm2.out" && break; sleep 0.05; done
kill -TERM "$FARM_PID"
RC=0; wait "$FARM_PID" || RC=$?
FARM_PID=
check "farm exited 0 after SIGTERM (rc=$RC)" test "$RC" = 0

if [ -s "$T/farm.err" ]; then echo "--- farm stderr:"; cat "$T/farm.err"; fi
if grep -q 'Sanitizer\|runtime error' "$T/farm.err"; then fail "sanitizer reports"; fi
echo "$((CHECKS - FAILS))/$CHECKS checks passed"
[ "$FAILS" = 0 ]
