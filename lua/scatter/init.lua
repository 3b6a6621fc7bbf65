-- scatter: requests raced across unreliable SOCKS5 proxies.
-- The public face; see DESIGN.md section 2.
local core = require("scatter.core")
local runtime = require("scatter.runtime")
local pool = require("scatter.pool")
local log = require("scatter.log")
local router = require("scatter.router")

local M = {
  _VERSION = "0.1.0",
  log = log,
}

M.now = core.now
M.spawn = runtime.spawn
M.sleep = runtime.sleep
M.wait_any = runtime.wait_any
M.wait_all = runtime.wait_all
M.channel = require("scatter.sync").channel
M.semaphore = require("scatter.sync").semaphore
M.stopping = require("scatter.signals").stopping
M.on_signal = require("scatter.signals").on_signal

function M.pool(cfg)
  if cfg ~= nil and type(cfg) ~= "table" then
    error("scatter.pool: bad argument #1 (configuration table expected, got " .. type(cfg) .. ")", 2)
  end
  return pool.new(cfg, "scatter.pool")
end

function M.router(hosts)
  if type(hosts) ~= "table" then
    error("scatter.router: bad argument #1 (table of host = configuration expected, got " .. type(hosts) .. ")", 2)
  end
  return router.new(hosts, "scatter.router")
end

-- Runs fn as a thread, then the loop until every thread has ended. An error
-- in fn is raised again here, with its traceback.
function M.run(fn, ...)
  if type(fn) ~= "function" then
    error("scatter.run: bad argument #1 (function expected, got " .. type(fn) .. ")", 2)
  end
  -- inside a thread (a script under `scatter run`) the loop already runs:
  -- call fn in place, and the outer loop finishes what it spawns
  if runtime.current() then return fn(...) end
  -- refused before fn is spawned: from inside a classifier the loop
  -- below would run every other handler re-entrantly, and a refusal
  -- after the spawn would leave fn to run later, outside it
  if runtime.no_wait then
    error("scatter.run: " .. runtime.no_wait .. " must not run the loop (it runs inside it)", 2)
  end
  local main = runtime.spawn(fn, ...)
  main.on_error = false -- raised below instead of reported
  runtime.loop()
  local r = main.result
  if not r[1] then error(main.traceback, 0) end
  return unpack(r, 2, r.n)
end

-- Embedding in another event loop: poll scatter.fd() for readability, wake
-- after scatter.timeout() seconds at most, then call scatter.step().
function M.fd() return core.fd() end

-- Seconds until step() is due even if fd() stays quiet; 0: call it now;
-- nil: no deadline (nothing is timed or in flight).
function M.timeout()
  if runtime.runnable() then return 0 end
  local t = core.backend_timeout()
  local nt = runtime.next_timer and runtime.next_timer()
  if nt then
    local d = math.max(0, nt - core.now())
    t = t and math.min(t, d) or d
  end
  return t
end

-- One pass that never blocks; false once nothing is left that could ever
-- make progress (no thread, timer or transfer).
function M.step() return runtime.step(false) end

-- Closes every open pool, then every open queue (the CLI does this at exit).
function M.close_all()
  local ps = {}
  for p in pairs(pool.open) do ps[#ps + 1] = p end
  for _, p in ipairs(ps) do p:close() end
  -- then the queues (after the pools: what was in flight is given back)
  local qmod = package.loaded["scatter.queue"]
  if qmod then
    local qs = {}
    for q in pairs(qmod.open) do qs[#qs + 1] = q end
    for _, q in ipairs(qs) do pcall(q.close, q) end
  end
end

-- The crawl frontier (DESIGN.md section 8).
function M.queue(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("scatter.queue: bad argument #1 (options table expected, got " .. type(opts) .. ")", 2)
  end
  return require("scatter.queue").new(opts)
end
M.crawl = require("scatter.crawl").crawl
M.links = require("scatter.links").links
M.url = require("scatter.links").url

M.simulate = require("scatter.simulate").run
M.parse_url = pool.parse_url
M.versions = core.versions

return M
