-- scatter check on refused proxies (issue 17: "~430 refused proxies/s at
-- concurrency 256"): lists of N loopback addresses whose port 9 refuses at
-- once, checked at --concurrency 256; prints proxies probed per second for
-- each N. A refused connect costs microseconds, so the rate should not
-- fall as the list grows. It did: curl caches every proxy address (IP
-- literals too) for 60 s in the multi's DNS cache and walks the whole
-- cache to prune it on every resolve, so a list of N cost O(N^2).
--
-- Then the same for a pool: N refused proxies as its source, 32 requests
-- that can never succeed (timeout 8 s, K = 8, 256 in flight, no rate
-- limit): attempts started per second, which the same cache walk paced.
--
--   luajit bench/check_pacing.lua [N ...]        (default 5000 20000 50000)
--   a baseline: from another checkout's root, with its build
--   (SCATTER_BUILD_DIR=/other/build sets both the binary and the module)
local lib = dofile("bench/lib.lua")

local sizes = {}
for i = 1, #(arg or {}) do sizes[i] = tonumber(arg[i]) end
if #sizes == 0 then sizes = { 5000, 20000, 50000 } end
local bin = (os.getenv("SCATTER_BUILD_DIR") or "build") .. "/scatter"
local dir = lib.env.tmpdir()

lib.banner("scatter check, refused proxies, --concurrency 256 (" .. bin .. ")")
local rows = { { "proxies", "seconds", "proxies/s" } }
for _, n in ipairs(sizes) do
  local lines = {}
  for i = 0, n - 1 do
    -- 127.a.b.c: one address per proxy, as in a real list
    lines[#lines + 1] = string.format("127.%d.%d.%d:9", math.floor(i / 62500) + 1,
      math.floor(i / 250) % 250, i % 250 + 1)
  end
  local path = dir .. "/refused" .. n .. ".txt"
  lib.write(path, table.concat(lines, "\n") .. "\n")
  local t0 = lib.now()
  local _, out = lib.sh(bin .. " check " .. path .. " --url http://example.com/ --concurrency 256 --quiet")
  local secs = lib.now() - t0
  assert(out:find(n .. " proxies checked", 1, true), out:sub(-300))
  rows[#rows + 1] = { tostring(n), ("%.2f"):format(secs), ("%.0f"):format(n / secs) }
end
lib.table(rows)

local scatter = require("scatter")
local ng = lib.env.nginx()
rows = { { "pool over N refused", "attempts", "seconds", "attempts/s" } }
for _, n in ipairs(sizes) do
  local pool = scatter.pool({ sources = { dir .. "/refused" .. n .. ".txt" }, metrics_log_interval = 0,
    max_inflight = 256, max_concurrent_per_request = 8, rate_limit = { default_interval = 0 } })
  local secs
  scatter.run(function()
    while pool:metrics().total_proxies < n do scatter.sleep(0.01) end
    local t0 = lib.now()
    local ths = {}
    for w = 1, 32 do ths[w] = scatter.spawn(function() pool:get(ng.url("/never" .. w), { timeout = 8 }) end) end
    scatter.wait_all(unpack(ths))
    secs = lib.now() - t0
  end)
  local m = pool:metrics()
  pool:close()
  rows[#rows + 1] = { tostring(n), tostring(m.attempts_started), ("%.1f"):format(secs),
                      ("%.0f"):format(m.attempts_started / secs) }
end
lib.table(rows)
lib.env.cleanup()
