-- retry_after: how many requests reach proxies inside the Retry-After
-- windows they asked for. A farm of 10 `ratelimit wait=1.5` proxies (every
-- second connection answered 429 + Retry-After: 1.5), N tasks, 50 in
-- flight, rate limit off; the farm counts accepts that arrive from 250 ms
-- after a 429 to the end of its window. Run it from a checkout's root
-- with that checkout's build (SCATTER_BUILD_DIR) to compare versions.
--
--   luajit bench/retry_after.lua [tasks]
local B = dofile("bench/lib.lua")
local env = B.env
local scatter = require("scatter")
local cjson = require("cjson")

local N = tonumber(arg[1]) or 300
B.banner(string.format("retry_after: %d tasks through 10 ratelimit proxies, 50 in flight", N))
local ng = env.nginx()
local farm = env.farm({ "ratelimit wait=1.5 count=10" })
local pool = scatter.pool({ proxies = farm.proxies, metrics_log_interval = 0,
  rate_limit = { default_interval = 0 }, max_inflight = 50 })
local ok
local t0 = B.now()
scatter.run(function()
  ok = B.drive(scatter, 50, N, function(i) return pool:get(ng.url("/small.txt?ra" .. i), { timeout = 60 }) end)
end)
local wall = B.now() - t0
local m = pool:metrics()
pool:close()
local st = cjson.decode(assert(farm.control("stats")):sub(4))
local inside = 0
for _, p in ipairs(st.per_proxy) do inside = inside + p.in_retry_window end
B.table({ { "delivered", "wall s", "farm accepts", "inside Retry-After windows", "dead proxies" },
  { ok .. "/" .. N, string.format("%.1f", wall), st.accepted, inside, m.dead_proxies } })
env.cleanup()
