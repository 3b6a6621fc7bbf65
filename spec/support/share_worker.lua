-- A worker for the share specs and the politeness bench, run with
-- `scatter run`:
--   scatter run share_worker.lua REDIS_URL PROXIES TARGET N INTERVAL [HOLD]
-- PROXIES: comma-separated. Makes N GETs of TARGET?i=<i> through a pool
-- named "fleet" that shares through REDIS_URL, one path per request, then
-- keeps the pool open HOLD seconds (default 0) and prints
-- "ok <count> mine <proxies this worker used last> workers <n> dead <n>".
-- NO_SHARE=1 in the environment: the same pool without share.
local scatter = require("scatter")

local url, proxies, target, n, iv, hold = ...
local list = {}
for p in proxies:gmatch("[^,]+") do list[#list + 1] = p end
local pool = scatter.pool({
  name = "fleet", share = os.getenv("NO_SHARE") == nil and url or nil, share_interval = tonumber(os.getenv("SHARE_INTERVAL") or "0.5"),
  proxies = list, rate_limit = { default_interval = tonumber(iv) },
  max_concurrent_per_request = 1, metrics_log_interval = 0,
  eviction_min_samples = 2, cooldown_consecutive_fails = 5,
})
local ths = {}
local tag = ("%x"):format(math.floor((scatter.now() % 1) * 2 ^ 24))
for i = 1, tonumber(n) do
  ths[i] = scatter.spawn(function() return pool:get(target .. "?i=" .. i .. "&w=" .. tag, { timeout = 60 }) end)
end
local ok = 0
for _, r in ipairs(scatter.wait_all(unpack(ths))) do
  if r[1] and r[2] and r[2].status == 200 then ok = ok + 1 end
end
if tonumber(hold or "0") > 0 then scatter.sleep(tonumber(hold)) end
local dead = 0
for _, p in ipairs(pool:proxies()) do if p.dead then dead = dead + 1 end end
local sh = pool.share or { workers = 1 }
print(("ok %d mine %d workers %d dead %d"):format(ok, sh.mine or -1, sh.workers, dead))
io.stdout:flush()
pool:close()
