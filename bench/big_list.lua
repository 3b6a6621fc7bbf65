-- A 3.18M-line proxy list as a pool's source (issue 17: "blocks
-- scatter.pool{} for 13.7 s at 1.1 GB RSS"). The list is generated once:
-- one good proxy of the farm first, then N-1 loopback addresses whose port
-- refuses (never a blackhole: an attempt through one ends at once), with a
-- duplicate every 100 lines and a comment every 1000. Printed: how long
-- scatter.pool{} took to return, the time to the first dispatch of a
-- request made right after it, the time until the whole list is in the pool
-- (total_proxies), the longest loop stall meanwhile (a 10 ms repeating timer,
-- how late it fired), and the RSS added per proxy once the list is in and
-- one host has been asked (a host keeps a 64-byte health record per proxy),
-- and the process's peak RSS (VmHWM).
--
--   luajit bench/big_list.lua [lines, default 3180000]
--   SCATTER_BUILD_DIR=/other/build luajit bench/big_list.lua  (a baseline)
local lib = dofile("bench/lib.lua")
local env = lib.env
local scatter = require("scatter")

local N = tonumber(arg and arg[1]) or 3180000
local ng = env.nginx()
local farm = env.farm({ "good count=1" })
local dir = env.tmpdir()
local path = dir .. "/big.txt"

do
  local f = assert(io.open(path, "wb"))
  f:write(farm.proxies[1], "\n")
  local buf = {}
  for i = 2, N do
    if i % 1000 == 0 then
      buf[#buf + 1] = "# a comment"
    elseif i % 100 == 0 then
      buf[#buf + 1] = "127.1.0.1:9" -- a duplicate
    else
      local k = i + 256
      buf[#buf + 1] = string.format("127.%d.%d.%d:9", math.floor(k / 65536) % 256, math.floor(k / 256) % 256, k % 256)
    end
    if #buf == 10000 then
      f:write(table.concat(buf, "\n"), "\n")
      buf = {}
    end
  end
  if #buf > 0 then f:write(table.concat(buf, "\n"), "\n") end
  f:close()
end

collectgarbage()
collectgarbage()
local rss0 = lib.rss_kib()
local t0 = lib.now()
local pool = scatter.pool({ sources = { path }, metrics_log_interval = 0, max_concurrent_per_request = 1,
                            rate_limit = { default_interval = 0 }, proxy_timeout = 2 })
local t_pool = lib.now() - t0
local total_at_return = pool:metrics().total_proxies
local t_first, t_loaded, stall = nil, nil, 0
scatter.run(function()
  local last = lib.now()
  local tick
  tick = function()
    local n = lib.now()
    stall = math.max(stall, n - last - 0.01)
    last = n
    if not t_loaded then require("scatter.runtime").after(0.01, tick) end
  end
  require("scatter.runtime").after(0.01, tick)
  -- the first dispatch: one request (its answer does not matter: the one
  -- good proxy is a needle in the list), watched through the metrics
  scatter.spawn(function() pool:get(ng.url("/small.txt"), { timeout = 1 }) end)
  while pool:metrics().attempts_started == 0 do scatter.sleep(0.001) end
  t_first = lib.now() - t0
  local prev, same = -1, 0
  while true do
    local m = pool:metrics()
    if m.total_proxies == prev then same = same + 1 else same = 0 end
    prev = m.total_proxies
    if same >= 4 then break end -- unchanged for 0.2 s: the load has ended
    scatter.sleep(0.05) -- (metrics() walks every proxy: not too often)
  end
  t_loaded = lib.now() - t0 - 0.2
end)
local total = pool:metrics().total_proxies
collectgarbage()
collectgarbage()
local rss1 = lib.rss_kib()
local function peak_kib()
  local f = io.open("/proc/self/status")
  local kib = f and f:read("*a"):match("VmHWM:%s*(%d+)")
  if f then f:close() end
  return tonumber(kib) or 0
end
local peak = peak_kib()

lib.banner(string.format("big list: %d lines, %d proxies", tonumber(arg and arg[1]) or 3180000, total))
lib.table({
  { "scatter.pool{} s", "proxies at return", "first dispatch s", "list loaded s", "max stall ms", "RSS MiB",
    "bytes/proxy", "peak RSS MiB" },
  { ("%.2f"):format(t_pool), tostring(total_at_return), ("%.2f"):format(t_first), ("%.2f"):format(t_loaded),
    ("%.0f"):format(stall * 1000), ("%.0f"):format((rss1 - rss0) / 1024),
    ("%.0f"):format((rss1 - rss0) * 1024 / total), ("%.0f"):format(peak / 1024) },
})
pool:close()
env.cleanup()
