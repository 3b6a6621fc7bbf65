-- overhead: what scatter's scheduling, Lua and classification cost on a
-- healthy pool, against two baselines measured in the same run:
--   curl-cli  curl --parallel --parallel-max N, one proxy per URL (round
--             robin, through the config file's `next` groups)
--   c-multi   bench/curl_multi_driver.c: libcurl multi, N in flight, proxies
--             round robin, no scheduling at all
--   scatter   a pool with K = 1 and max_inflight = N, N threads calling
--             pool:get in a loop (the default classifier judges every body)
-- through two proxy sets: the farm's `good` profile (10 proxies) and Debian's
-- microsocks (one). Each contender runs REPEAT times, interleaved; the table
-- shows the best wall time and the range, and scatter's ratio to the faster
-- baseline (the issue's target: <= 1.1x).
--
--   luajit bench/overhead.lua [requests] [inflight] [repeat]
local B = dofile("bench/lib.lua")
local env = B.env
local scatter = require("scatter")

local N = tonumber(arg[1]) or 20000
local INFLIGHT = tonumber(arg[2]) or 200
local REPEAT = tonumber(arg[3]) or 3

B.banner(string.format("overhead: %d small responses, %d in flight, best of %d", N, INFLIGHT, REPEAT))

local dir = env.tmpdir()
local driver = B.build_driver(dir)
local web = env.nginx()
local farm = env.farm({ "good count=10" })
local ms = env.microsocks()

local urls = {}
for i = 1, N do urls[i] = web:url("/small.txt?i=" .. i) end
B.write(dir .. "/urls.txt", table.concat(urls, "\n") .. "\n")

local function curl_cli(proxies)
  local cfg = {}
  for i, u in ipairs(urls) do
    cfg[#cfg + 1] = string.format('url = "%s"\noutput = "/dev/null"\nsocks5-hostname = "%s"\nsilent\nwrite-out = "%%{http_code}\\n"\n',
      u, proxies[(i - 1) % #proxies + 1])
    if i < #urls then cfg[#cfg + 1] = "next\n" end
  end
  local path = dir .. "/curl.cfg"
  B.write(path, table.concat(cfg))
  local t0 = B.now()
  local ok, out = B.sh(string.format("curl --parallel --parallel-max %d -K %s",
    INFLIGHT, path))
  local wall = B.now() - t0
  local n200 = select(2, out:gsub("200\n", ""))
  if not ok or n200 ~= N then error("curl: " .. n200 .. " of " .. N .. " answered 200\n" .. out:sub(1, 400), 0) end
  return wall
end

local function c_multi(proxies)
  B.write(dir .. "/proxies.txt", table.concat(proxies, "\n") .. "\n")
  local ok, out = B.sh(string.format("%s %s/urls.txt %s/proxies.txt %d", driver, dir, dir, INFLIGHT))
  local okn, wall = out:match("ok=(%d+) failed=%d+ wall=([%d.]+)")
  if not ok or tonumber(okn) ~= N then error("c driver: " .. out, 0) end
  return tonumber(wall)
end

local last_attempts
local function scatter_run(proxies)
  local pool = scatter.pool{
    proxies = proxies, max_concurrent_per_request = 1, max_inflight = INFLIGHT,
    rate_limit = { default_interval = 0 }, proxy_timeout = 30, metrics_log_interval = 0,
  }
  local ok
  local t0 = B.now()
  scatter.run(function()
    ok = B.drive(scatter, INFLIGHT, N, function(i) return pool:get(urls[i], { timeout = 60 }) end, true)
  end)
  local wall = B.now() - t0
  last_attempts = pool:metrics().attempts_started
  pool:close()
  if ok ~= N then error("scatter: " .. ok .. " of " .. N .. " answered 200", 0) end
  return wall
end

local CONTENDERS = {
  { name = "curl-cli", run = curl_cli },
  { name = "c-multi", run = c_multi },
  { name = "scatter K=1", run = scatter_run },
}
local SETS = {
  { name = "farm good x10", proxies = farm.proxies },
  { name = "microsocks x1", proxies = { ms.addr } },
}

-- Keeps the entries whose name starts with the environment variable's
-- value: OVERHEAD_ONLY=scatter runs one contender (e.g. under perf),
-- OVERHEAD_SET=farm|microsocks one proxy set.
local function only(list, var)
  local prefix = os.getenv(var)
  if not prefix then return end
  for i = #list, 1, -1 do
    if list[i].name:sub(1, #prefix) ~= prefix then table.remove(list, i) end
  end
end
only(CONTENDERS, "OVERHEAD_ONLY")
only(SETS, "OVERHEAD_SET")

local rows = { { "proxies", "contender", "best wall s", "range s", "req/s", "attempts/task", "vs faster baseline" } }
local summary = {}
for _, set in ipairs(SETS) do
  local walls = {}
  for _ = 1, REPEAT do
    for _, c in ipairs(CONTENDERS) do
      walls[c.name] = walls[c.name] or {}
      table.insert(walls[c.name], c.run(set.proxies))
      collectgarbage()
    end
  end
  local best = {}
  for _, c in ipairs(CONTENDERS) do best[c.name] = (B.range(walls[c.name])) end
  local base = math.min(best["curl-cli"] or math.huge, best["c-multi"] or math.huge)
  for _, c in ipairs(CONTENDERS) do
    local lo, hi = B.range(walls[c.name])
    rows[#rows + 1] = { set.name, c.name, string.format("%.3f", lo), string.format("%.3f-%.3f", lo, hi),
      string.format("%.0f", N / lo),
      c.name:find("scatter") and string.format("%.3f", last_attempts / N) or "1",
      base < math.huge and string.format("%.2fx", lo / base) or "-" }
  end
  if base < math.huge and best["scatter K=1"] then
    summary[#summary + 1] = string.format("%s: scatter %.2fx of the faster baseline (target <= 1.10x)",
      set.name, best["scatter K=1"] / base)
  end
end
B.table(rows)
for _, s in ipairs(summary) do print(s) end
env.cleanup()
