-- Idle crawl workers on a Redis queue (DESIGN.md section 9): while the
-- queue holds nothing for them they wait in a blocking read and send no
-- commands; a push wakes them at once (long before any lease could run
-- out); they still notice the fleet's last lease ending, a Redis restart,
-- a stop signal and a dead worker's lease. Commands are counted with INFO
-- commandstats; no assertion depends on how long anything took.
local env = require("support.env")
local RS = require("support.redis")
local QR = require("scatter.queue_redis")

local WORKER = "spec/support/redis_worker.lua"

local function rec(k)
  local u = "http://site.test/idle/" .. k
  return { key = "GET " .. u, url = u, method = "GET", priority = 0, meta = "{}" }
end

-- calls per command (INFO commandstats), without the spec's own INFO
local function calls(srv)
  local out, t = srv:cli("INFO", "commandstats"), {}
  for cmd, n in out:gmatch("cmdstat_([%w|_]+):calls=(%d+)") do
    if cmd ~= "info" then t[cmd] = tonumber(n) end
  end
  return t
end

local function total(t)
  local n = 0
  for _, v in pairs(t) do n = n + v end
  return n
end

-- a worker running scatter.crawl on queue `name`
local function crawler(srv, name, lease)
  return env.spawn({ "env", "LEASE=" .. lease, env.build_dir() .. "/scatter", "run", WORKER, "scrawl", srv.url, name },
    { name = "crawler" })
end

-- item k leased by a consumer "other" that never renews (a stalled worker)
local function held_elsewhere(srv, name, k)
  local b = assert(QR.open({ redis = srv.url, name = name }))
  assert(b:push({ rec(k) }))
  b:close()
  srv:cli("XREADGROUP", "GROUP", "g", "other", "COUNT", "1", "STREAMS", "scatter:{" .. name .. "}:q:0", ">")
end

local function blocked(srv)
  env.wait_until(function() return (calls(srv)["xread"] or 0) >= 1 end, "the worker's blocking read", nil, 20)
end

local function done_of(p)
  env.wait_until(function() return not p:alive() end, "the worker to end", p, 20)
  return tonumber((env.read_file(p.log) or ""):match("done (%d+)"))
end

describe("an idle crawl worker on a Redis queue", function()
  local srv

  before_each(function() srv = RS.start() end)
  after_each(function() srv:stop() end)
  teardown(env.cleanup)

  it("sends nothing while it waits and wakes when work is pushed", function()
    held_elsewhere(srv, "idle", 1)
    local w = crawler(srv, "idle", 30)
    -- (a worker that polls instead issues dozens of commands meanwhile)
    env.wait_until(function() local c = calls(srv) return c.xread or total(c) > 60 end, "the worker idle", w, 20)
    assert.truthy(calls(srv).xread, "no blocking read: the idle worker polls")
    local before = calls(srv)
    env.sleep(1)
    local after = calls(srv)
    assert.equal(total(before), total(after)) -- not one command in an idle second
    -- a push wakes it: its item is done while item 1's lease (30 s) is far
    -- from running out, and item 1 stays with its holder
    local b = assert(QR.open({ redis = srv.url, name = "idle" }))
    assert(b:push({ rec(2) }))
    env.wait_until(function() return b:stats().done == 1 end, "the pushed item done", w, 10)
    assert.same({ queued = 0, leased = 1, done = 1, failed = 0, seen = 2 }, b:stats())
    assert.truthy(w:alive())
    w:stop()
    b:close()
  end)

  it("ends when the fleet's last lease ends, and waits across a Redis restart", function()
    local b = assert(QR.open({ redis = srv.url, name = "end", lease = 30 }))
    assert(b:push({ rec(1) }))
    local it = assert(b:lease(1))[1]
    local w = crawler(srv, "end", 30)
    blocked(srv)
    srv:restart() -- AOF: the queue and the lease survive; the read is lost
    blocked(srv)
    assert(b:push({ rec(2) }))
    env.wait_until(function() return b:stats().done == 1 end, "the pushed item done", w, 10)
    assert.truthy(w:alive()) -- item 1 is still leased here: the crawl is not over
    assert.equal(0, b:complete(it, {}, '{"k":1}'))
    assert.is_true(b:flush())
    assert.equal(1, done_of(w))
    assert.same({ queued = 0, leased = 0, done = 2, failed = 0, seen = 2 }, b:stats())
    b:close()
  end)

  it("takes over a stalled worker's lease and stops on a signal, giving back what it holds", function()
    held_elsewhere(srv, "stall", 1)
    -- item 2: held by a live worker that renews it (while this spec waits)
    local b = assert(QR.open({ redis = srv.url, name = "stall", lease = 1 }))
    assert(b:push({ rec(2) }))
    local held = assert(b:lease(1))
    assert.equal(1, #held)
    local function renewing(fn) return function() assert(b:renew(held)) return fn() end end
    local w = crawler(srv, "stall", 1)
    -- its read ends when a lease can run out: item 1 is reclaimed, a try
    env.wait_until(renewing(function() return b:stats().done == 1 end), "the reclaim", w, 10)
    local line = srv:cli("XRANGE", "scatter:{stall}:o", "-", "+")
    assert.truthy(line:find([[idle\\/1\"]], 1, true), line) -- (redis-cli doubles the backslash)
    -- idle again while item 2 is renewed; a stop ends the wait
    local reads = calls(srv)["xread"]
    env.wait_until(renewing(function() return calls(srv)["xread"] > reads end), "a new blocking read", w, 10)
    require("ffi").C.kill(w.pid, 15)
    env.wait_until(function() return not w:alive() end, "the stop", nil, 10)
    -- (the crawl may end before the stop's own exit, 143: then it says so)
    local out = env.read_file(w.log) or ""
    assert.truthy(w.status == "exit 143" or (w.status == "exit 0" and out:find("done 1 stopped", 1, true)),
      w.status .. "\n" .. out)
    assert.same({ queued = 0, leased = 1, done = 1, failed = 0, seen = 2 }, b:stats())
    assert.falsy(srv:cli("XINFO", "CONSUMERS", "scatter:{stall}:q:0", "g"):find(":" .. w.pid .. ":", 1, true))
    b:close()
  end)
end)
