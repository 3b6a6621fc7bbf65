-- Redis memory of the Redis queue (DESIGN.md section 9): bytes per queued
-- item and per seen key at 1,000,000 keys, from INFO memory before and
-- after, with MEMORY USAGE of the stream and of the seen buckets apart.
--   luajit bench/redis_memory.lua [N]      (default 1000000)
-- Targets: <= 160 bytes per queued item, <= 32 bytes per seen key.
local lib = dofile("bench/lib.lua")
local RS = require("support.redis")
local QR = require("scatter.queue_redis")

local N = tonumber(arg[1] or "1000000")
local srv = RS.start()
local function used()
  srv:cli("MEMORY", "PURGE")
  return tonumber(srv:cli("INFO", "memory"):match("used_memory:(%d+)"))
end

local b = assert(QR.open({ redis = srv.url, name = "mem" }))
local before = used()
local t0 = lib.now()
local batch = {}
for i = 1, N do
  -- a typical product URL: 40 bytes
  local u = ("https://shop.example.com/product/%08d"):format(i)
  batch[#batch + 1] = { key = "GET " .. u, url = u, method = "GET", priority = 0, meta = "{}" }
  if #batch == 1000 or i == N then
    assert(b:push(batch))
    batch = {}
  end
end
local secs = lib.now() - t0
local after = used()
local total = after - before
local stream = srv:int("MEMORY", "USAGE", "scatter:{mem}:q:0", "SAMPLES", "0")
-- the seen set: every bucket, via redis-cli --scan and a pipe of MEMORY USAGE
local ok, out = lib.sh("redis-cli -p " .. srv.port .. " --scan --pattern 'scatter:{mem}:s:*' | "
  .. "sed 's/^/MEMORY USAGE /' | redis-cli -p " .. srv.port .. " | awk '{s+=$1; n++} END {print s, n}'")
assert(ok, out)
local seen, buckets = out:match("(%d+) (%d+)")
seen, buckets = tonumber(seen), tonumber(buckets)
local enc = srv:cli("OBJECT", "ENCODING", "scatter:{mem}:s:0000")
assert(b:stats().queued == N)
b:close()
lib.banner(("Redis queue memory, %d keys pushed in %.1fs (%d/s)"):format(N, secs, math.floor(N / secs)))
lib.table({
  { "what", "bytes", "per key", "target" },
  { "INFO used_memory delta (all)", tostring(total), ("%.1f"):format(total / N), "<= 192" },
  { "queued items (the stream)", tostring(stream), ("%.1f"):format(stream / N), "<= 160" },
  { ("seen set (%d buckets, %s)"):format(buckets, enc), tostring(seen), ("%.1f"):format(seen / N), "<= 32" },
})
lib.env.cleanup()
