-- The Redis queue backend (DESIGN.md sections 8 and 9) against a real
-- redis-server of the spec's own: atomic dedup across processes, a killed
-- worker's leases reclaimed as a try, renewal of a slow handler, a late
-- completion done once, a Redis killed and restarted mid-crawl, bad input.
local env = require("support.env")
local RS = require("support.redis")
local scatter = require("scatter")
local QR = require("scatter.queue_redis")
local core = require("scatter.core")

local WORKER = "spec/support/redis_worker.lua"

local function rec(k, o)
  local u = "http://site.test/p/" .. k
  local r = { key = "GET " .. u, url = u, method = "GET", priority = 0, meta = "{}" }
  for a, v in pairs(o or {}) do r[a] = v end
  return r
end

local function worker(srv, name, ...)
  local argv = { env.build_dir() .. "/scatter", "run", WORKER, ... }
  table.insert(argv, 5, srv.url)
  table.insert(argv, 6, name)
  return env.spawn(argv, { name = "worker" })
end

local function out_of(p)
  local ok, err = pcall(env.wait_until, function() return not p:alive() end, "worker to end", nil, 40)
  local out = env.read_file(p.log) or ""
  assert(ok, tostring(err) .. "\n" .. out)
  return out
end

local function export(b)
  local path = os.tmpname()
  local fh = io.open(path, "w")
  local n = assert(b:export(fh))
  fh:close()
  local lines = {}
  for l in io.lines(path) do lines[#lines + 1] = l end
  os.remove(path)
  assert.equal(n, #lines)
  return lines
end

describe("the Redis queue", function()
  local srv

  setup(function() srv = RS.start() end)
  teardown(env.cleanup)

  it("keeps priority, then push order; counts states; keeps failed items with their error", function()
    local b = assert(QR.open({ redis = srv.url, name = "order" }))
    assert.equal(3, (b:push({ rec(1), rec(2), rec(3, { priority = 7, meta = '{"d":1}', method = "POST",
      body = "x\0y", headers = '{"A":"b"}', key = "custom" }) })))
    local n, flags = b:push({ rec(1), rec(4) })
    assert.equal(1, n)
    assert.same({ false, true }, flags)
    local items = assert(b:lease(10))
    assert.equal(4, #items)
    assert.same({ "http://site.test/p/3", "http://site.test/p/1", "http://site.test/p/2", "http://site.test/p/4" },
      { items[1].url, items[2].url, items[3].url, items[4].url })
    local it = items[1]
    assert.same({ 7, '{"d":1}', "POST", "x\0y", '{"A":"b"}', "custom", 1 },
      { it.priority, it.meta, it.method, it.body, it.headers, it.key, it.tries })
    assert.same({ queued = 0, leased = 4, done = 0, failed = 0, seen = 4 }, b:stats())
    assert.equal(1, b:complete(items[2], { rec(1), rec(5) }, '{"ok":1}'))
    assert.is_true(b:fail(items[3], "HTTP 500", nil))
    assert.is_true(b:fail(items[4], "timeout", core.now() + 0.3))
    assert.is_true(b:fail(it, "later", core.now() + 0.3))
    -- the completion's step leased p/5 for this worker, who is busy leasing
    assert.same({ queued = 2, leased = 1, done = 1, failed = 1, seen = 5 }, b:stats())
    local failed = {}
    for f in b:failed() do failed[#failed + 1] = f end
    assert.equal(1, #failed)
    assert.same({ "http://site.test/p/2", "HTTP 500", 1 }, { failed[1].url, failed[1].err, failed[1].tries })
    -- the retries are not due yet
    local now = assert(b:lease(10))
    assert.equal(1, #now)
    assert.equal("http://site.test/p/5", now[1].url)
    local due = b:next_due()
    assert.truthy(due > 0 and due <= 0.3, tostring(due))
    scatter.sleep(0.35)
    local later = assert(b:lease(10))
    assert.equal(2, #later)
    assert.same({ "http://site.test/p/3", 2 }, { later[1].url, later[1].tries })
    assert.equal(1, b:retry_failed())
    assert.same({ queued = 1, leased = 3, done = 1, failed = 0, seen = 5 }, b:stats())
    local back = assert(b:lease(10))
    assert.equal("http://site.test/p/2", back[1].url)
    assert.equal(1, back[1].tries) -- tries reset by retry
    assert.same({ '{"ok":1}' }, export(b))
    -- close gives the leases back: queued again, tries unchanged
    assert.is_true(b:close())
    local b2 = assert(QR.open({ redis = srv.url, name = "order" }))
    assert.same({ queued = 4, leased = 0, done = 1, failed = 0, seen = 5 }, b2:stats())
    local again = assert(b2:lease(10))
    table.sort(again, function(x, y) return x.url < y.url end)
    assert.same({ 1, 2, 2, 1 }, { again[1].tries, again[2].tries, again[3].tries, again[4].tries })
    b2:close()
  end)

  it("deduplicates atomically under concurrent pushes from two processes", function()
    -- both push keys 1..3000 in their own shuffled order, at the same time
    local a = worker(srv, "dedup", "push", "3000", "1")
    local b = worker(srv, "dedup", "push", "3000", "1")
    local c = worker(srv, "dedup", "push", "1000", "2501")
    local na = tonumber(out_of(a):match("new (%d+)"))
    local nb = tonumber(out_of(b):match("new (%d+)"))
    local nc = tonumber(out_of(c):match("new (%d+)"))
    assert.equal(3500, na + nb + nc)
    local q = assert(QR.open({ redis = srv.url, name = "dedup" }))
    assert.same({ queued = 3500, leased = 0, done = 0, failed = 0, seen = 3500 }, q:stats())
    q:close()
  end)

  it("gives a killed worker's leases to another after `lease` seconds, counted as a try", function()
    local b = assert(QR.open({ redis = srv.url, name = "kill", lease = 1 }))
    local recs = {}
    for k = 1, 30 do recs[k] = rec(k) end
    b:push(recs)
    local holder = worker(srv, "kill", "hold", "20")
    env.wait_until(function() return (env.read_file(holder.log) or ""):find("held 20") end, "leases", holder)
    require("ffi").C.kill(holder.pid, 9)
    holder:stop()
    local first = assert(b:lease(30))
    assert.equal(10, #first) -- the held ones are not free yet
    assert.same({ queued = 0, leased = 30, done = 0, failed = 0, seen = 30 }, b:stats())
    scatter.sleep(1.2)
    local got = {}
    env.wait_until(function()
      for _, it in ipairs(assert(b:lease(30))) do got[#got + 1] = it end
      scatter.sleep(0.05)
      return #got >= 20
    end, "the killed worker's leases", nil, 10)
    assert.equal(20, #got)
    for _, it in ipairs(got) do assert.equal(2, it.tries) end
    for _, it in ipairs(first) do assert.equal(0, b:complete(it, {}, it.url)) end
    for _, it in ipairs(got) do assert.equal(0, b:complete(it, {}, it.url)) end
    assert.same({ queued = 0, leased = 0, done = 30, failed = 0, seen = 30 }, b:stats())
    local lines = export(b)
    table.sort(lines)
    assert.equal(30, #lines)
    for i = 2, #lines do assert.are_not.equal(lines[i - 1], lines[i]) end
    b:close()
  end)

  it("renews the lease of a slow handler; a late completion after a reclaim is done once", function()
    local a = assert(QR.open({ redis = srv.url, name = "slow", lease = 0.6 }))
    local b = assert(QR.open({ redis = srv.url, name = "slow", lease = 0.6 }))
    a:push({ rec(1) })
    local it = assert(a:lease(1))[1]
    local stolen = {}
    local poller = scatter.spawn(function()
      for _ = 1, 20 do
        for _, x in ipairs(assert(b:lease(1))) do stolen[#stolen + 1] = x end
        scatter.sleep(0.1)
      end
    end)
    scatter.wait_any(poller) -- 2 s: three lease periods
    assert.same({}, stolen)
    assert.equal(1, a:complete(it, { rec(2) }, "first"))
    -- (leased: the completion's step took p/2 along for a's next lease)
    assert.same({ queued = 0, leased = 1, done = 1, failed = 0, seen = 2 }, a:stats())
    -- a stalled worker (no renewal) loses its lease; its late result is dropped
    local x = assert(a:lease(1))[1]
    a.closed = true -- stops a's renewal
    scatter.sleep(0.9)
    local y
    env.wait_until(function()
      y = assert(b:lease(1))[1]
      scatter.sleep(0.05)
      return y
    end, "the reclaim", nil, 5)
    assert.equal(x.id, y.id)
    assert.equal(2, y.tries)
    assert.equal(0, b:complete(y, {}, "second"))
    assert.is_true(b:flush()) -- (a completion without pushes goes with the next step)
    -- its push is dropped too, and later hears that the try was lost
    local told
    assert.equal(0, a:complete(x, { rec(3) }, "late", function(n, lost) told = { n, lost } end))
    assert.is_true(a:flush())
    assert.same({ 0, true }, told)
    assert.same({ "first", "second" }, export(b))
    assert.same({ queued = 0, leased = 0, done = 2, failed = 0, seen = 2 }, b:stats())
    a.closed = false
    a:close()
    b:close()
  end)

  it("finishes a crawl across a Redis kill -9 and restart with nothing lost or done twice", function()
    local b = assert(QR.open({ redis = srv.url, name = "restart", lease = 2 }))
    b:push({ rec(0) })
    local ws = {}
    for i = 1, 2 do ws[i] = worker(srv, "restart", "crawl", "3", "400", "0.01") end
    env.wait_until(function() return b:stats().done > 50 end, "progress", nil, 30)
    local before = b:stats().done
    srv:kill()
    assert.truthy(before < 350, "the crawl ended before the kill: " .. before)
    env.sleep(1)
    srv:restart()
    local done = 0
    for i = 1, 2 do done = done + tonumber(out_of(ws[i]):match("done (%d+)")) end
    assert.truthy(done >= 400, tostring(done))
    assert.same({ queued = 0, leased = 0, done = 400, failed = 0, seen = 400 }, b:stats())
    local lines = export(b)
    local seen = {}
    for _, l in ipairs(lines) do
      local k = assert(tonumber(l:match('"k":(%d+)')), l)
      assert.is_nil(seen[k], "twice: " .. k)
      seen[k] = true
    end
    assert.equal(400, #lines)
    b:close()
  end)

  it("names what is wrong: a bad URL, no Redis, a server that is not Redis, a bad name or lease", function()
    local function err_of(opts)
      local b, err = QR.open(opts)
      assert.is_nil(b)
      return err
    end
    assert.truthy(err_of({ redis = "http://x", name = "q" }):find("not a Redis URL", 1, true))
    local port = env.free_port()
    assert.truthy(err_of({ redis = "redis://127.0.0.1:" .. port, name = "q" })
      :find("scatter.queue: redis://127.0.0.1:" .. port .. "/0: cannot connect: Connection refused", 1, true))
    local ng = env.nginx()
    assert.truthy(err_of({ redis = "redis://127.0.0.1:" .. ng.port, name = "q" }):find("Protocol error", 1, true))
    for _, name in ipairs({ "", "a\0b", "a\nb", "a{b}", ("x"):rep(201) }) do
      local e = err_of({ redis = srv.url, name = name })
      assert.truthy(e:find("name", 1, true), e)
    end
    assert.truthy(err_of({ redis = srv.url }):find("needs name", 1, true))
    assert.truthy(err_of({ redis = srv.url, name = "q", lease = -1 }):find("lease must be", 1, true))
    -- odd but printable names work, and are queues of their own
    local odd = assert(QR.open({ redis = srv.url, name = "shop:1 /*?é" }))
    local plain = assert(QR.open({ redis = srv.url, name = "shop" }))
    odd:push({ rec(1), rec(2) })
    plain:push({ rec(1) })
    assert.equal(2, odd:stats().queued)
    assert.equal(1, plain:stats().queued)
    odd:close()
    plain:close()
  end)
end)
