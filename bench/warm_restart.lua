-- Warm restart against a cold start (issue 17): 10 good and 10 refusing
-- proxies of the farm, K = 1 (max_concurrent_per_request), 300 tasks 100 at
-- a time, default rate limit. The cold run starts without a state file and
-- writes one; the warm run starts from it. Printed per pair of runs:
-- attempts started per delivered task, race losers cancelled, and the
-- warm/cold ratio (the issue's target: <= 0.8). Counts, not times, so the
-- machine's load moves them little.
--
--   luajit bench/warm_restart.lua [pairs of runs, default 3] [tasks, default 300]
local lib = dofile("bench/lib.lua")
local env = lib.env
local scatter = require("scatter")

local RUNS = tonumber(arg and arg[1]) or 3
local TASKS = tonumber(arg and arg[2]) or 300

local ng = env.nginx()
local farm = env.farm({ "good count=10", "refuse count=10" })
local dir = env.tmpdir()
local path = dir .. "/warm.json"

local function run(seed)
  local pool = scatter.pool({ proxies = farm.proxies, state_file = path, metrics_log_interval = 0,
                              max_concurrent_per_request = 1, seed = seed })
  scatter.run(function()
    lib.drive(scatter, 100, TASKS, function(i)
      return pool:get(ng.url("/small.txt?i=" .. i), { timeout = 60 })
    end)
  end)
  local m = pool:metrics()
  pool:close()
  assert(m.completed_tasks == TASKS, "not every task delivered")
  return m.attempts_started / m.completed_tasks, m.attempts_cancelled
end

lib.banner(string.format("warm restart: 10 good + 10 refusing proxies, K = 1, %d tasks", TASKS))
local rows = { { "run", "cold att/task", "cold losers", "warm att/task", "warm losers", "warm/cold" } }
for r = 1, RUNS do
  os.remove(path)
  local cold, cl = run(2 * r - 1)
  local warm, wl = run(2 * r)
  rows[#rows + 1] = { tostring(r), ("%.2f"):format(cold), tostring(cl), ("%.2f"):format(warm), tostring(wl),
                      ("%.2f"):format(warm / cold) }
end
lib.table(rows)
env.cleanup()
