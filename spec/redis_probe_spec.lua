-- Probes of the Redis queue as a careless user drives it (DESIGN.md
-- section 9): a crawl seeded with many items runs them in parallel, push
-- lists and fan-outs larger than one Redis command can carry, and bad
-- connection options said as errors, not raised.
local RS = require("support.redis")
local env = require("support.env")
local scatter = require("scatter")
local QR = require("scatter.queue_redis")
local runtime = require("scatter.runtime")

describe("the Redis queue, probed", function()
  local srv

  setup(function() srv = RS.start() end)
  teardown(env.cleanup)

  it("runs a seeded crawl's items side by side, not one after another", function()
    local q = assert(scatter.queue({ redis = srv.url, name = "par", lease = 5 }))
    local list = {}
    for i = 1, 6 do list[i] = "http://site.test/p/" .. i end
    assert.equal(6, q:push_many(list))
    local pool = { request = function() return { status = 200 } end }
    local running, most, gate = 0, 0, {}
    local s = scatter.crawl({ queue = q, pool = pool, concurrency = 6,
      handle = function(_, item)
        running = running + 1
        most = math.max(most, running)
        -- the first handler waits for a second one to start, or for 2 s
        -- (a crawl that runs one item at a time must still end)
        if running == 1 then
          local w = runtime.waiter()
          gate[#gate + 1] = w
          runtime.after(2, runtime.wake, w)
          runtime.block(w)
        else
          for _, w in ipairs(gate) do runtime.wake(w) end
          gate = {}
        end
        running = running - 1
        return { url = item.url }
      end })
    assert.equal(6, s.done)
    assert.truthy(most >= 2, "at most " .. most .. " handler(s) ran at once")
    q:close()
  end)

  it("takes a push_many longer than one Redis command carries", function()
    local q = assert(scatter.queue({ redis = srv.url, name = "many" }))
    local list = {}
    for i = 1, 40000 do list[i] = "http://site.test/m/" .. i end
    assert.equal(40000, q:push_many(list))
    assert.equal(0, q:push_many(list))
    assert.same({ queued = 40000, leased = 0, done = 0, failed = 0, seen = 40000 }, q:stats())
    q:close()
  end)

  it("completes pages whose pushes together exceed one Redis command", function()
    local q = assert(scatter.queue({ redis = srv.url, name = "fan" }))
    q:push("http://site.test/root")
    local pool = { request = function() return { status = 200 } end }
    local ok, s = pcall(scatter.crawl, { queue = q, pool = pool, concurrency = 4, output = "unused",
      handle = function(_, item)
        if item.url:find("root", 1, true) then -- a sitemap: more links than one command carries
          for i = 1, 5000 do item:push("http://site.test/leaf/" .. i) end
        end
        return { url = item.url }
      end })
    assert(ok, s)
    assert.equal(5001, s.done)
    assert.same({ queued = 0, leased = 0, done = 5001, failed = 0, seen = 5001 }, q:stats())
    q:close()
    -- three completions queued for one step, together beyond a command
    local b = assert(QR.open({ redis = srv.url, name = "fan3" }))
    local function rec(u) return { key = "GET " .. u, url = u, method = "GET", priority = 0, meta = "{}" } end
    assert.equal(3, b:push({ rec("http://a.test/1"), rec("http://a.test/2"), rec("http://a.test/3") }))
    local items = assert(b:lease(3))
    assert.equal(3, #items)
    local got = {}
    for k, it in ipairs(items) do
      local kids = {}
      for i = 1, 1500 do kids[i] = rec("http://a.test/" .. k .. "/" .. i) end
      assert.equal(0, b:complete(it, kids, '{"k":' .. k .. "}", function(n, lost) got[k] = { n, lost } end))
    end
    assert.is_true(b:flush())
    assert.same({ { 1500, false }, { 1500, false }, { 1500, false } }, got)
    assert.same({ queued = 4500, leased = 0, done = 3, failed = 0, seen = 4503 }, b:stats())
    b:close()
  end)

  it("keeps a crawl's records without an output name (they are Redis's to keep)", function()
    local q = assert(scatter.queue({ redis = srv.url, name = "noout" }))
    q:push_many({ "http://site.test/a", "http://site.test/b" })
    local pool = { request = function() return { status = 200 } end }
    local s = scatter.crawl({ queue = q, pool = pool, handle = function(_, item) return { u = item.url } end })
    assert.equal(2, s.done)
    local path = os.tmpname()
    local fh = io.open(path, "w")
    assert.equal(2, q:export(fh))
    fh:close()
    local got = {}
    for l in io.lines(path) do got[#got + 1] = l end
    os.remove(path)
    q:close()
    assert.equal(2, #got)
    local urls = {}
    for i, l in ipairs(got) do urls[i] = require("cjson").decode(l).u end
    table.sort(urls)
    assert.same({ "http://site.test/a", "http://site.test/b" }, urls)
  end)

  it("gives back what a crawl ending on an error held, so the next crawl here finishes", function()
    local q = assert(scatter.queue({ redis = srv.url, name = "errend", lease = 5 }))
    local list = {}
    for i = 1, 8 do list[i] = "http://site.test/e/" .. i end
    q:push_many(list)
    local closed = false
    local pool = { request = function()
      if closed then return nil, "closed" end
      return { status = 200 }
    end }
    pool.closed = false
    local n = 0
    local ok, err = pcall(scatter.crawl, { queue = q, pool = pool, concurrency = 4,
      handle = function(_, item)
        n = n + 1
        if n == 2 then closed, pool.closed = true, true end
        return { u = item.url }
      end })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("the pool was closed during the crawl", 1, true), tostring(err))
    closed, pool.closed = false, false
    -- a crawl after it takes every item left at once (they waited for the
    -- first crawl's leases for ever: held and renewed by this process)
    local done = q:stats().done
    local s = scatter.crawl({ queue = q, pool = pool, concurrency = 4, handle = function(_, item) return { u = item.url } end })
    assert.equal(8, done + s.done)
    assert.same({ queued = 0, leased = 0, done = 8, failed = 0, seen = 8 }, q:stats())
    q:close()
  end)

  it("says which connection option is wrong instead of raising or reconnecting forever", function()
    for _, o in ipairs({ { redis_timeout = "x" }, { redis_timeout = -1 }, { redis_timeout = 0 },
      { redis_timeout = 0 / 0 }, { retry_for = "abc" }, { retry_for = -5 } }) do
      local k = next(o)
      o.redis, o.name = srv.url, "opts"
      local ok, b, err = pcall(QR.open, o)
      assert.is_true(ok, tostring(b))
      assert.is_nil(b)
      assert.truthy(err:find("scatter.queue: " .. k .. " must be", 1, true), err)
    end
  end)
end)
