-- hedging: task latency percentiles and the extra attempts they cost, on a
-- pool with a long latency tail, in the manner of The Tail at Scale's table
-- (Dean and Barroso, 2013: hedged requests after the p95 cut p99.9 for a few
-- per cent more load). Every proxy works; only their speed differs:
--   20 proxies at 50 +- 30 ms, of which, at any moment, 2 picked at random
--   every 0.25 s answer in 1.5 +- 1 s (transient interference: the slowness
--   moves, so health records cannot learn it away)
-- (the farm's slow profile delays the CONNECT reply by latency +- jitter and
-- each body chunk by a tenth of it; the bench switches profiles through the
-- farm's control port). Each request says "Connection: close",
-- so every attempt pays its proxy's CONNECT delay (no warm connection hides
-- it), as with rotating proxies. Configurations, same run:
--   K=1            one path per task (the baseline)
--   K=3            three paths at once, the first answer wins
--   K=3 auto       one path, then one more every "auto" delay (the host's
--                  p95 latency) until one wins
-- Extra attempts = attempts started per task - 1 (the load the racing adds).
-- K is the base K: adaptive K (DESIGN.md section 3) lowers it as the success
-- rate rises, so the table also shows the K each pool ended with.
--
--   luajit bench/hedging.lua [tasks] [repeat]
local B = dofile("bench/lib.lua")
local env = B.env
local scatter = require("scatter")

local N = tonumber(arg[1]) or 3000
local REPEAT = tonumber(arg[2]) or 2
local CONCURRENCY = 20

B.banner(string.format("hedging: %d tasks, %d in flight, %d run(s) each", N, CONCURRENCY, REPEAT))

local FAST, SLOW = "slow latency=0.05 jitter=0.03", "slow latency=1.5 jitter=1"
local web = env.nginx()
local farm = env.farm({
  FAST .. " count=20",
}, { seed = 3 })

local CONFIGS = {
  { name = "K=1", k = 1, hedge = 0 },
  { name = "K=3 all at once", k = 3, hedge = 0 },
  { name = "K=3 hedge auto", k = 3, hedge = "auto" },
}

local function run(c)
  local pool = scatter.pool{
    proxies = farm.proxies, max_concurrent_per_request = c.k, hedge_delay = c.hedge,
    max_inflight = CONCURRENCY * 3, rate_limit = { default_interval = 0 }, proxy_timeout = 10,
    metrics_log_interval = 0,
  }
  local lat, ok
  local t0 = B.now()
  math.randomseed(1)
  scatter.run(function()
    local slow, done = {}, false
    scatter.spawn(function() -- the moving slowness, until the crawl ends
      while not done do
        for _, i in ipairs(slow) do farm:control("profile " .. i .. " " .. FAST) end
        slow = { math.random(0, #farm.proxies - 1), math.random(0, #farm.proxies - 1) }
        for _, i in ipairs(slow) do farm:control("profile " .. i .. " " .. SLOW) end
        scatter.sleep(0.25)
      end
      for _, i in ipairs(slow) do farm:control("profile " .. i .. " " .. FAST) end
    end)
    ok, lat = B.drive(scatter, CONCURRENCY, N, function(i)
      return pool:get(web:url("/small.txt?i=" .. i), { timeout = 60, headers = { connection = "close" } })
    end)
    done = true
  end)
  local wall = B.now() - t0
  local m = pool:metrics()
  pool:close()
  return { lat = lat, ok = ok, wall = wall, attempts = m.attempts_started, k = m.k_current }
end

local res = {}
for _ = 1, REPEAT do
  for _, c in ipairs(CONFIGS) do
    res[c.name] = res[c.name] or {}
    table.insert(res[c.name], run(c))
  end
end

-- "K at end": the adaptive K the pool had reached (DESIGN.md section 3)
local rows = { { "config", "done", "p50 ms", "p99 ms", "p99.9 ms", "extra attempts", "K at end", "wall s" } }
local base999
for _, c in ipairs(CONFIGS) do
  -- the runs' latencies pooled: p99.9 needs every sample it can get
  local lat, ok, att, walls, ks = {}, 0, 0, {}, {}
  for _, r in ipairs(res[c.name]) do
    for _, v in ipairs(r.lat) do lat[#lat + 1] = v end
    ok, att = ok + r.ok, att + r.attempts
    walls[#walls + 1] = string.format("%.1f", r.wall)
    ks[#ks + 1] = tostring(r.k)
  end
  local tasks = N * #res[c.name]
  local p999 = B.quantile(lat, 0.999)
  base999 = base999 or p999
  rows[#rows + 1] = { c.name, string.format("%d/%d", ok, tasks),
    string.format("%.0f", 1000 * B.quantile(lat, 0.5)), string.format("%.0f", 1000 * B.quantile(lat, 0.99)),
    string.format("%.0f (%.2fx)", 1000 * p999, p999 / base999),
    string.format("%+.1f%%", 100 * (att / tasks - 1)), table.concat(ks, ", "), table.concat(walls, ", ") }
end
B.table(rows)
env.cleanup()
