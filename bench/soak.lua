-- Soak: 200,000 tasks through a mixed scatter-farm (good, slow, flaky,
-- refusing, blackholed, tampering proxies) with max_inflight = 500.
--
--   LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;;" LUA_CPATH="build/lib/?.so;;" \
--     luajit bench/soak.lua [tasks]
--
-- Prints RSS and the Lua heap every tenth of the run, then the ratios the
-- issue asks about, each against a baseline measured in this run: RSS at the
-- end / RSS after warm-up (the first tenth), and the descriptor count after
-- pool:close() against the count before the pool was opened. Exits 1 when a
-- task was lost or a body was wrong.
local env = require("support.env")
local scatter = require("scatter")

local TASKS = tonumber(arg[1]) or 200000
local WORKERS = 1000
local FILES = 32

local function body_of(i)
  return ("soak %d\n"):format(i) .. ("abcdefgh"):rep(20 + i * 5) .. "\n"
end

local function fd_count() return (env.open_fds()) end
local rss_kib = env.rss_kib

local files = {}
for i = 1, FILES do files["s" .. i .. ".txt"] = body_of(i) end
local ng = env.nginx({ files = files })
local farm = env.farm({ "good count=20", "slow latency=0.05 count=5", "flaky p=0.3 count=5",
  "refuse count=5", "blackhole count=3", "tamper count=2" }, { seed = 3 })

local function new_pool()
  return scatter.pool({
    proxies = farm.proxies, name = "soak", metrics_log_interval = 0,
    max_inflight = 500, max_concurrent_per_request = 3, task_pool_capacity = WORKERS,
    proxy_timeout = 2, rate_limit = { default_interval = 0 },
    classifier = function(resp)
      local i = tonumber(resp.url:match("/s(%d+)%.txt"))
      if resp.status == 200 and i and resp.body == body_of(i) then return "success" end
      return "proxy_blocked"
    end,
  })
end

local ok, err = pcall(function()
  -- the first pool also opens what lives as long as the process (the
  -- loop's descriptors, curl's): the baseline is taken after one has closed
  local warm = new_pool()
  scatter.run(function()
    for i = 1, 50 do assert(warm:get(ng.url("/s" .. (i % FILES + 1) .. ".txt"), { timeout = 60 })) end
  end)
  warm:close()
  collectgarbage()
  local fds0 = fd_count()
  local pool = new_pool()
  local seq, good, lost, first_err = 0, 0, 0, nil
  local marks = {}
  local t0 = scatter.now()
  scatter.run(function()
    local workers = {}
    for w = 1, WORKERS do
      workers[w] = scatter.spawn(function()
        while seq < TASKS do
          seq = seq + 1
          local i = seq % FILES + 1
          local resp, e = pool:get(ng.url("/s" .. i .. ".txt?n=" .. seq), { timeout = 120 })
          if resp and resp.status == 200 and resp.body == body_of(i) then
            good = good + 1
          else
            lost = lost + 1
            first_err = first_err or e or ("status " .. tostring(resp and resp.status))
          end
          local done = good + lost
          if done % (TASKS / 10) == 0 then
            -- twice: the first cycle only runs the finalisers of userdata
            collectgarbage()
            collectgarbage()
            marks[#marks + 1] = { done = done, t = scatter.now() - t0, rss = rss_kib(),
              lua = collectgarbage("count") }
            print(("%7d tasks %7.1f s  rss %7d KiB  lua heap %6d KiB  fds %d")
              :format(done, marks[#marks].t, marks[#marks].rss, marks[#marks].lua, fd_count()))
          end
        end
      end)
    end
    scatter.wait_all(unpack(workers))
  end)
  local elapsed = scatter.now() - t0
  local m = pool:metrics()
  pool:close()
  collectgarbage()
  local fds1 = fd_count()
  print(("tasks %d, correct %d, lost or wrong %d%s"):format(TASKS, good, lost,
    first_err and (" (first: " .. first_err .. ")") or ""))
  print(("throughput %.0f tasks/s over %.1f s; attempts started %s"):format(TASKS / elapsed, elapsed,
    tostring(m.attempts_started)))
  local first, last = marks[1], marks[#marks]
  print(("RSS end / after warm-up: %.3f (%d / %d KiB); Lua heap %.3f"):format(
    last.rss / first.rss, last.rss, first.rss, last.lua / first.lua))
  print(("fds after close / before open (after a warm-up pool): %d / %d"):format(fds1, fds0))
  if lost > 0 then os.exit(1) end
end)
env.cleanup()
if not ok then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end
