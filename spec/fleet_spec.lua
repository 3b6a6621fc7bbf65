-- scatter.crawl on a Redis queue shared by worker processes (DESIGN.md
-- section 9): a worker killed -9 mid-crawl loses nothing (its leases come
-- back after `lease` seconds), every page's output is kept exactly once;
-- the queue's front (scatter.queue{ redis = ... }) and its bad input.
local env = require("support.env")
local RS = require("support.redis")
local scatter = require("scatter")

local CRAWL = "spec/support/fleet_crawl.lua"

local function worker(srv, name, proxy, base, pages, hold)
  return env.spawn({ env.build_dir() .. "/scatter", "run", CRAWL, srv.url, name, proxy, base, pages, hold or "0.02" },
    { name = "crawl-worker" })
end

local function finish(p)
  local ok, err = pcall(env.wait_until, function() return not p:alive() end, "worker to end", nil, 50)
  local out = env.read_file(p.log) or ""
  assert(ok, tostring(err) .. "\n" .. out)
  return out
end

describe("a crawl on a shared Redis queue", function()
  local srv, ng, proxy

  setup(function()
    srv = RS.start()
    ng = env.nginx()
    proxy = env.microsocks().url
  end)
  teardown(env.cleanup)

  it("survives a worker killed -9 while it holds leases: every page done, its output kept once", function()
    local base, pages = ng.url("/small.txt"), 300
    -- the victim's handlers are slow: it holds leases whenever it is killed
    local ws = { worker(srv, "kill9", proxy, base, pages, "0.5"), worker(srv, "kill9", proxy, base, pages) }
    local q = assert(scatter.queue({ redis = srv.url, name = "kill9" }))
    -- the victim holds leases (its consumer name carries its pid)
    local pat = ":" .. ws[1].pid .. ':%x+"%s+%d+%) "pending"%s+%d+%) %(integer%) (%d+)'
    env.wait_until(function()
      local held = srv:cli("XINFO", "CONSUMERS", "scatter:{kill9}:q:0", "g"):match(pat)
      return held and tonumber(held) > 0
    end, "the victim to hold leases", ws[1], 30)
    local s = q:stats()
    assert.truthy(s.done < pages, "mid-crawl: " .. s.done .. " done")
    require("ffi").C.kill(ws[1].pid, 9)
    ws[1]:stop()
    ws[3] = worker(srv, "kill9", proxy, base, pages) -- a restart
    for i = 2, 3 do
      local okf, out = pcall(finish, ws[i])
      assert(okf, tostring(out) .. "\n" .. require("cjson").encode(q:stats()) .. "\n"
        .. srv:cli("XINFO", "CONSUMERS", "scatter:{kill9}:q:0", "g"))
      assert.truthy(out:find("done %d+"), out)
    end
    assert.same({ queued = 0, leased = 0, done = pages, failed = 0, seen = pages }, q:stats())
    local path = os.tmpname()
    local fh = io.open(path, "w")
    assert.equal(pages, q:export(fh))
    fh:close()
    local seen, n, reclaimed = {}, 0, 0
    for line in io.lines(path) do
      local k = assert(tonumber(line:match('"k":(%d+)')), line)
      assert.is_nil(seen[k], "page " .. k .. " twice")
      seen[k] = true
      n = n + 1
      if tonumber(line:match('"tries":(%d+)')) > 1 then reclaimed = reclaimed + 1 end
    end
    os.remove(path)
    assert.equal(pages, n)
    assert.truthy(reclaimed > 0, "the killed worker's leases were retried")
    q:close()
  end)

  it("finishes across a Redis restart mid-crawl, every page once", function()
    local base, pages = ng.url("/small.txt"), 200
    local ws = { worker(srv, "restart", proxy, base, pages), worker(srv, "restart", proxy, base, pages) }
    local q = assert(scatter.queue({ redis = srv.url, name = "restart" }))
    env.wait_until(function() return q:stats().done >= 30 end, "progress", nil, 30)
    assert.truthy(q:stats().done < pages - 20)
    srv:restart(0.5) -- SIGTERM: Redis writes its AOF out and stops
    for i = 1, 2 do assert.truthy(finish(ws[i]):find("done %d+")) end
    assert.same({ queued = 0, leased = 0, done = pages, failed = 0, seen = pages }, q:stats())
    local path = os.tmpname()
    local fh = io.open(path, "w")
    assert.equal(pages, q:export(fh))
    fh:close()
    local seen = {}
    for line in io.lines(path) do
      local k = tonumber(line:match('"k":(%d+)'))
      assert.is_nil(seen[k], "page " .. tostring(k) .. " twice")
      seen[k] = true
    end
    os.remove(path)
    q:close()
  end)

  it("is shown, retried and exported by `scatter queue` with a Redis URL and --name", function()
    local q = assert(scatter.queue({ redis = srv.url, name = "cli" }))
    q:push("http://a.test/1")
    q:push("http://a.test/2")
    local b = q.b
    local items = assert(b:lease(2))
    assert(b:complete(items[1], {}, '{"page":1}'))
    assert(b:fail(items[2], "HTTP 503", nil))
    assert(b:flush()) -- (a completion without pushes goes with the next step)
    local rc, out, err = env.cli("queue stats " .. srv.url .. " --name cli --json")
    assert.equal(0, rc, err)
    assert.same({ queued = 0, leased = 0, done = 1, failed = 1, seen = 2 }, require("cjson").decode(out))
    rc, out, err = env.cli("queue failed " .. srv.url .. " --name cli")
    assert.equal(0, rc, err)
    assert.equal("1\thttp://a.test/2\tHTTP 503\n", out)
    rc, out, err = env.cli("queue export " .. srv.url .. " - --name cli")
    assert.equal(0, rc, err)
    assert.equal('{"page":1}\n', out)
    rc, out, err = env.cli("queue retry " .. srv.url .. " --name cli")
    assert.equal(0, rc, err)
    assert.equal("1 failed items queued again\n", out)
    assert.equal(1, q:stats().queued)
    local _
    rc, _, err = env.cli("queue stats " .. srv.url)
    assert.equal(1, rc)
    assert.truthy(err:find("needs --name NAME", 1, true), err)
    q:close()
  end)

  it("has the queue API of section 8 on Redis, and names bad input", function()
    local q = assert(scatter.queue({ redis = srv.url, name = "front", lease = 5 }))
    assert.is_true(q:push("http://a.test/1", { meta = { depth = 1 } }))
    assert.is_false(q:push("HTTP://A.test:80/1#x"))
    assert.equal(2, q:push_many({ "http://a.test/2", { url = "http://a.test/3", priority = 2 }, "http://a.test/1" }))
    assert.same({ queued = 3, leased = 0, done = 0, failed = 0, seen = 3 }, q:stats())
    local ok, err = pcall(q.push, q, "ftp://x/")
    assert.is_false(ok)
    assert.truthy(tostring(err):find("queue:push", 1, true), tostring(err))
    q:close()
    local bad, berr = scatter.queue({ redis = srv.url, name = "a\nb" })
    assert.is_nil(bad)
    assert.truthy(berr:find("name", 1, true), berr)
    bad, berr = scatter.queue({ redis = "redis://127.0.0.1:" .. env.free_port(), name = "x" })
    assert.is_nil(bad)
    assert.truthy(berr:find("cannot connect", 1, true), berr)
  end)
end)
