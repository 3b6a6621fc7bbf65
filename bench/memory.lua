-- memory: the resident set (VmRSS) a real pool adds
--   1. with 100,000 pending tasks (one blackholed proxy, max_inflight = 1:
--      one attempt hangs, every other task waits in the ready queue); the
--      baseline of the same run is the RSS of the 100,000 URL strings and
--      request tables the caller builds anyway
--   2. with 10,000 proxies x 10 hosts of health, restored from a state file
--      (every pair with a history: the worst case); the baseline is the
--      same pool with the 10,000 proxies and no health
-- Figures are RSS deltas after a full GC, so they include allocator slack;
-- each part runs in a fresh process of its own (freed memory stays in the
-- allocator, so a second part in the same process would look free).
--
--   luajit bench/memory.lua [tasks] [proxies] [hosts]
local B = dofile("bench/lib.lua")
local env = B.env
local scatter = require("scatter")
local core = require("scatter.core")
local state = require("scatter.state")
local cjson = require("cjson")

local NTASKS = tonumber(arg[1]) or 100000
local NPROXIES = tonumber(arg[2]) or 10000
local NHOSTS = tonumber(arg[3]) or 10

local PART = os.getenv("MEMORY_PART")
if not PART then
  B.banner(string.format("memory: %d pending tasks; %d proxies x %d hosts of health", NTASKS, NPROXIES, NHOSTS))
  local rows = { { "measure", "RSS added", "per item", "baseline (same run)", "ratio" } }
  for _, part in ipairs({ "tasks", "health" }) do
    local ok, out = B.sh(string.format("MEMORY_PART=%s luajit bench/memory.lua %d %d %d", part, NTASKS, NPROXIES, NHOSTS))
    if not ok then error(part .. ": " .. out, 0) end
    for line in out:gmatch("ROW\t([^\n]*)") do
      local row = {}
      for cell in (line .. "\t"):gmatch("([^\t]*)\t") do row[#row + 1] = cell end
      rows[#rows + 1] = row
    end
  end
  B.table(rows)
  os.exit(0)
end
local function row(...) print("ROW\t" .. table.concat({ ... }, "\t")) end

local function rss()
  collectgarbage()
  collectgarbage()
  return B.rss_kib() * 1024
end

local function mib(b) return string.format("%.1f MiB", b / 1048576) end

-- ---- 1. pending tasks ----
if PART == "tasks" then
local farm = env.farm({ "blackhole" })
local r0 = rss()
local reqs = {}
for i = 1, NTASKS do reqs[i] = { url = "http://target.test/item/" .. i } end
local r1 = rss()
local pool = scatter.pool{
  proxies = farm.proxies, max_inflight = 1, task_pool_capacity = NTASKS,
  proxy_timeout = 600, metrics_log_interval = 0,
}
local r2 = rss()
local handles = {}
for i = 1, NTASKS do handles[i] = assert(pool:try_submit(reqs[i])) end
scatter.step() -- one loop pass: the first attempt starts
local r3 = rss()
local m = pool:metrics()
assert(m.pending_tasks + m.inflight >= NTASKS - 1, "tasks were not pending")
pool:close()
assert(#handles == NTASKS) -- held until after the measure, as a caller would
local per_task = (r3 - r2) / NTASKS
local per_req = (r1 - r0) / NTASKS
row(string.format("%d pending tasks", NTASKS), mib(r3 - r2), string.format("%.0f B/task", per_task),
  string.format("%.0f B/request table", per_req), string.format("%.1fx", per_task / per_req))
end

-- ---- 2. health records ----
if PART == "health" then
local dir = env.tmpdir()
local path = dir .. "/state.json"
local wall = core.state_clock()
local proxies, prows, hosts = {}, {}, {}
for i = 1, NPROXIES do
  proxies[i] = string.format("10.%d.%d.%d:1080", math.floor(i / 62500) % 250, math.floor(i / 250) % 250, i % 250 + 1)
  prows[i] = { proxies[i], 40, 25, -1 }
end
for h = 1, NHOSTS do
  local rows = {}
  for i = 1, NPROXIES do
    rows[i] = { i, 30, (i * 7 + h) % 31, i % 4, wall - (i % 3600), 0,
                0.2 + (i % 100) / 1000, 0.18 + (i % 90) / 1000, 0.9 + (i % 50) / 100 }
  end
  hosts["host" .. h .. ".test"] = rows
end
B.write(path, cjson.encode({
  format = state.FORMAT, version = state.VERSION, saved_at = wall,
  proxy_fields = state.PROXY_FIELDS, pair_fields = state.PAIR_FIELDS,
  pools = { default = { proxies = prows, hosts = hosts, sources = {} } },
}))
hosts, prows = nil, nil -- luacheck: ignore

local cfg = { proxies = proxies, metrics_log_interval = 0, state_save_interval = 86400 }
local h0 = rss()
local bare = scatter.pool(cfg)
local h1 = rss()
bare:close()
bare = nil -- luacheck: ignore
local h2 = rss()
cfg.state_file = path
local warm = scatter.pool(cfg)
local h3 = rss()
local wm = warm:metrics()
warm:close()
assert(wm.total_proxies == NPROXIES, "the state file was not restored")
local per_proxy = (h1 - h0) / NPROXIES
local per_pair = ((h3 - h2) - (h1 - h0)) / (NPROXIES * NHOSTS)
row(string.format("%d proxies, no health", NPROXIES), mib(h1 - h0), string.format("%.0f B/proxy", per_proxy), "", "")
row(string.format("+ %d x %d pairs of health", NPROXIES, NHOSTS), mib((h3 - h2) - (h1 - h0)),
  string.format("%.0f B/pair", per_pair), string.format("%.0f B/proxy", per_proxy),
  string.format("%.2fx", per_pair / per_proxy))
end
env.cleanup()
