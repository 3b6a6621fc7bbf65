-- scatter.crawl through real libcurl, a real SOCKS5 proxy (microsocks) and a
-- real nginx: a link-following crawl, retries and max_tries, priorities,
-- handlers that raise, yield forever or return what JSON cannot hold, an
-- unwritable output, and a real `scatter run` child killed -9 mid-crawl.
local env = require("support.env")
local scatter = require("scatter")
local cjson = require("cjson")

local PAGES = 400

-- A binary tree of pages: p<i> links to p<2i+1> and p<2i+2> (with fragments
-- and a mailto: link, which must not become items) and to the root.
local function site()
  local files = {}
  for i = 0, PAGES - 1 do
    local links = {}
    for _, j in ipairs({ 2 * i + 1, 2 * i + 2 }) do
      if j < PAGES then links[#links + 1] = ('<a href="p%d.html#frag">p%d</a>'):format(j, j) end
    end
    files["p" .. i .. ".html"] = ('<html><head><title>page %d</title></head><body>%s'
      .. '<a href="/p0.html">home</a> <a href="mailto:a@b.test">mail</a></body></html>'):format(i, table.concat(links))
  end
  return files
end

local function lines_of(path)
  local out = {}
  for line in ((env.read_file(path) or "")):gmatch("[^\n]+") do out[#out + 1] = line end
  return out
end

describe("scatter.crawl", function()
  local ng, ms, dir

  setup(function()
    ng = env.nginx({ files = site() })
    ms = env.microsocks()
  end)
  teardown(function() env.cleanup() end)
  before_each(function() dir = env.tmpdir() end)

  local function new_pool()
    return scatter.pool({ proxies = { ms.url }, metrics_log_interval = 0, rate_limit = { default_interval = 0 } })
  end

  it("follows links through the frontier: every page done once, one output line each", function()
    scatter.run(function()
      local pool = new_pool()
      local q = assert(scatter.queue({ path = dir .. "/q.db" }))
      q:push(ng.url("/p0.html"), { meta = { depth = 0 } })
      local summary = scatter.crawl({
        queue = q, pool = pool, concurrency = 8, output = dir .. "/out.jsonl",
        handle = function(resp, item)
          for _, u in ipairs(scatter.links(resp, { same_host = true })) do
            item:push(u, { meta = { depth = item.meta.depth + 1 } })
          end
          return { url = item.url, title = resp.body:match("<title>(.-)</title>"), depth = item.meta.depth,
            id = 1234567890123456 + #item.url, share = 1 / (#item.url) }
        end,
      })
      assert.equal(PAGES, summary.done)
      assert.equal(0, summary.failed)
      assert.equal(PAGES - 1, summary.pushed)
      assert.same({ queued = 0, leased = 0, done = PAGES, failed = 0, seen = PAGES }, q:stats())
      q:close()
      pool:close()
    end)
    local seen = {}
    local lines = lines_of(dir .. "/out.jsonl")
    assert.equal(PAGES, #lines)
    for _, l in ipairs(lines) do
      local r = cjson.decode(l)
      local n = tonumber(r.url:match("/p(%d+)%.html$"))
      assert.is_nil(seen[n])
      seen[n] = true
      assert.equal("page " .. n, r.title)
      assert.equal(math.floor(math.log(n + 1) / math.log(2)), r.depth)
      -- every number exact (cjson alone writes 14 digits: 1.2345678901235e+15)
      assert.equal(1234567890123456 + #r.url, r.id)
      assert.equal(1 / #r.url, r.share)
    end
  end)

  it("puts the queue's counts and an ETA on `scatter run`'s progress line", function()
    local line
    scatter.run(function()
      local pool = new_pool()
      local q = assert(scatter.queue({}))
      for i = 30, 39 do q:push(ng.url("/p" .. i .. ".html")) end
      local render = require("scatter.progress").pools_renderer(require("scatter.pool"), scatter.now)
      scatter.crawl({ queue = q, pool = pool, concurrency = 1, handle = function(_, item)
        if item.url:find("p35") then line = render() end
        scatter.sleep(0.12)
      end })
      assert.is_nil(render():match("queue ")) -- gone once the crawl is over
      q:close()
      pool:close()
    end)
    assert.matches("| queue 4 queued, 5 done, 0 failed | ETA 0:00:0%d$", line)
  end)

  it("retries failed tries with backoff, fails an item after max_tries with its last error", function()
    scatter.run(function()
      local pool = new_pool()
      local q = assert(scatter.queue({}))
      q:push(ng.url("/p1.html"))
      q:push(ng.url("/p2.html"))
      q:push(ng.url("/p3.html"))
      -- the request itself fails (another host: the proxy's health on
      -- 127.0.0.1 must not suffer from it)
      q:push("http://localhost:1/refused")
      local tries, failed = {}, {}
      local summary = scatter.crawl({
        queue = q, pool = pool, concurrency = 4, max_tries = 3, backoff = 0.01, timeout = 2,
        handle = function(_, item)
          tries[item.url] = item.tries
          if item.url:find("p1") then error("no price on the page") end
          if item.url:find("p2") and item.tries < 2 then error("flaky") end
          return { ok = true }
        end,
        on_failed = function(item, err) failed[#failed + 1] = item.url .. " | " .. err end,
      })
      assert.equal(2, summary.done)
      assert.equal(2, summary.failed)
      assert.equal(3, tries[ng.url("/p1.html")])
      assert.equal(2, tries[ng.url("/p2.html")])
      assert.equal(1, tries[ng.url("/p3.html")])
      table.sort(failed)
      assert.equal(2, #failed)
      assert.matches("/p1.html | handle raised: .*no price on the page", failed[1])
      assert.matches("^http://localhost:1/refused | ", failed[2])
      local kept = {}
      for it in q:failed() do kept[#kept + 1] = it end
      assert.equal(2, #kept)
      assert.equal(3, kept[1].tries)
      assert.equal(2, q:retry_failed())
      assert.same({ queued = 2, leased = 0, done = 2, failed = 0, seen = 4 }, q:stats())
      q:close()
      pool:close()
    end)
  end)

  it("takes higher priorities first, equal ones in push order", function()
    scatter.run(function()
      local pool = new_pool()
      local q = assert(scatter.queue({}))
      q:push(ng.url("/p10.html"))
      q:push(ng.url("/p11.html"), { priority = 5 })
      q:push(ng.url("/p12.html"))
      q:push(ng.url("/p13.html"), { priority = -2 })
      q:push(ng.url("/p14.html"), { priority = 5 })
      local order = {}
      scatter.crawl({ queue = q, pool = pool, concurrency = 1, handle = function(_, item)
        order[#order + 1] = tonumber(item.url:match("p(%d+)"))
      end })
      assert.same({ 11, 14, 10, 12, 13 }, order)
      q:close()
      pool:close()
    end)
  end)

  it("fails the try of a handler that yields forever or returns what JSON cannot hold", function()
    scatter.run(function()
      local pool = new_pool()
      local q = assert(scatter.queue({}))
      q:push(ng.url("/p20.html"))
      q:push(ng.url("/p21.html"))
      q:push(ng.url("/p22.html"))
      q:push(ng.url("/p24.html"))
      local errs = {}
      local summary = scatter.crawl({
        queue = q, pool = pool, concurrency = 4, max_tries = 1, handle_timeout = 0.3,
        output = dir .. "/out.jsonl",
        handle = function(_, item)
          if item.url:find("p20") then
            local w = require("scatter.runtime").waiter()
            require("scatter.runtime").block(w) -- nothing ever wakes it
          elseif item.url:find("p21") then
            return { f = print }
          elseif item.url:find("p24") then
            return { url = item.url, body = "\255\216\255" } -- (a JPEG's first bytes)
          end
          -- a push from a try that fails is dropped with it
          item:push(ng.url("/p23.html"))
          return { url = item.url }
        end,
        on_failed = function(item, err) errs[item.url:match("p%d+")] = err end,
      })
      assert.equal(2, summary.done) -- p22 and the p23 it pushed
      assert.equal(3, summary.failed)
      assert.equal(1, summary.pushed)
      assert.equal("handle did not return within 0.3s (handle_timeout)", errs.p20)
      assert.matches("handle returned a value cjson cannot encode", errs.p21)
      assert.equal("handle returned a value cjson cannot encode: a string that is not UTF-8 (body, byte 1): "
        .. "JSON holds text; encode binary data first (as base64 or hex)", errs.p24)
      assert.equal(2, #lines_of(dir .. "/out.jsonl"))
      q:close()
      pool:close()
    end)
  end)

  it("refuses bad configuration and an unwritable output, naming it", function()
    local pool = new_pool()
    local q = assert(scatter.queue({}))
    assert.has_error(function() scatter.crawl({ queue = q, pool = pool }) end,
      "scatter.crawl: handle must be a function(resp, item)")
    assert.has_error(function() scatter.crawl({ queue = {}, pool = pool, handle = print }) end,
      "scatter.crawl: queue must be a scatter.queue")
    assert.has_error(function() scatter.crawl({ queue = q, pool = pool, handle = print, concurency = 3 }) end,
      "scatter.crawl: unknown option 'concurency'")
    local ok, err = pcall(scatter.crawl, { queue = q, pool = pool, handle = print, output = dir .. "/none/out.jsonl" })
    assert.is_false(ok)
    assert.matches("scatter.crawl: output .*/none/out.jsonl: No such file or directory", err)
    q:close()
    pool:close()
  end)

  it("stops with a clear error on a full disk, losing nothing", function()
    local path = dir .. "/q.db"
    local err
    scatter.run(function()
      local pool = new_pool()
      local q = assert(scatter.queue({ path = path }))
      for i = 40, 49 do q:push(ng.url("/p" .. i .. ".html")) end
      local ok
      ok, err = pcall(scatter.crawl, { queue = q, pool = pool, concurrency = 4, output = "/dev/full",
        handle = function(_, item) return { url = item.url } end })
      assert.is_false(ok)
      pcall(q.close, q)
      pool:close()
    end)
    assert.matches("scatter.crawl: output /dev/full: No space left on device", err)
    local q = assert(scatter.queue({ path = path }))
    local s = q:stats()
    assert.equal(10, s.queued + s.done)
    assert.equal(0, s.leased)
    assert.truthy(s.queued > 0)
    q:close()
  end)

  it("runs examples/crawl.lua, and a second run resumes with nothing left to do", function()
    local function abs(path) return path:match("^/") and path or (os.getenv("PWD") .. "/" .. path) end
    local example = abs(debug.getinfo(1, "S").source:match("^@(.*/)") .. "../examples/crawl.lua")
    env.write_file(dir .. "/proxies.txt", ms.url .. "\n")
    -- the example keeps crawl.db and crawl.jsonl in the current directory
    local cmd = "cd " .. env.shell_quote(dir) .. " && " .. env.shell_quote(abs(env.build_dir()) .. "/scatter")
      .. " run " .. env.shell_quote(example) .. " proxies.txt " .. ng.url("/p0.html") .. " 2 4 2>&1"
    local p = io.popen(cmd)
    local first = p:read("*a")
    p:close()
    assert.matches("crawled 7 pages %(0 failed, 6 new links%)", first)
    local depths = {}
    for _, l in ipairs(lines_of(dir .. "/crawl.jsonl")) do
      local r = cjson.decode(l)
      depths[#depths + 1] = r.depth
      assert.matches("^page %d+$", r.title)
    end
    table.sort(depths)
    assert.same({ 0, 1, 1, 2, 2, 2, 2 }, depths)
    p = io.popen(cmd)
    local second = p:read("*a")
    p:close()
    assert.matches("crawled 0 pages %(0 failed, 0 new links%) in [%d.]+s; 7 done in all", second)
    assert.equal(7, #lines_of(dir .. "/crawl.jsonl"))
  end)

  it("resumes after kill -9 of `scatter run`: every page done once, its line exactly once", function()
    local db, out = dir .. "/q.db", dir .. "/out.jsonl"
    local script = env.script("crawl_kill.lua", [[
      local scatter = require("scatter")
      local db, out, proxy, start = ...
      -- every response handed to handle and every request, unbuffered:
      -- what a kill made redo
      local h = assert(io.open(db .. ".handled", "a"))
      h:setvbuf("no")
      h:write("# run\n") -- (env.redone tells the runs apart)
      local r = assert(io.open(db .. ".requests", "a"))
      r:setvbuf("no")
      r:write("# run\n")
      local pool = scatter.pool{ proxies = { proxy }, metrics_log_interval = 0, rate_limit = { default_interval = 0 } }
      local request = pool.request
      pool.request = function(self, req)
        r:write(req.url .. "\n")
        return request(self, req)
      end
      local q = assert(scatter.queue{ path = db, commit_ms = 20 })
      q:push(start)
      local s = scatter.crawl{ queue = q, pool = pool, concurrency = 8, output = out,
        handle = function(resp, item)
          h:write(item.url .. "\n") -- (one write(2): a kill cannot split it)
          for _, u in ipairs(scatter.links(resp)) do item:push(u) end
          scatter.sleep(0.03 * math.random()) -- long enough to be killed mid-crawl
          return { url = item.url, tries = item.tries }
        end }
      print("summary", s.done, s.failed)
      q:close()
    ]])
    local args = { env.build_dir() .. "/scatter", "run", script, db, out, ms.url, ng.url("/p0.html") }
    math.randomseed(os.time())
    local kills, tails = 0, {}
    for _ = 1, 4 do
      local child = env.spawn(args)
      env.sleep(0.1 + 0.2 * math.random())
      if child:alive() then
        assert.equal(0, require("ffi").C.kill(child.pid, 9))
        child:stop(0)
        kills = kills + 1
      else
        tails[#tails + 1] = child:tail(5)
      end
    end
    assert.truthy(kills >= 2, "the crawl ended before it could be killed; make it longer\n"
      .. table.concat(tails, "\n"))
    local rc, stdout, stderr = env.cli(table.concat({ "run", script, db, out, ms.url, ng.url("/p0.html") }, " "))
    assert.equal(0, rc, stderr)
    assert.matches("summary", stdout)
    local seen = {}
    for _, l in ipairs(lines_of(out)) do
      local r = cjson.decode(l) -- a cut line would not decode
      assert.is_nil(seen[r.url], "written twice: " .. r.url)
      seen[r.url] = true
    end
    local n = 0
    for _ in pairs(seen) do n = n + 1 end
    assert.equal(PAGES, n)
    for _, u in ipairs(lines_of(db .. ".handled")) do
      assert.truthy(u == "# run" or seen[u], "handled but never written: " .. u)
    end
    -- lost with a killed process: the items it held leased and the tries
    -- settled in the open commit group, at most `concurrency` (8) together;
    -- counted both by the responses handed to handle and by the requests
    local redone, most, runs = env.redone(db .. ".handled")
    assert.equal(5, runs) -- (4 started to be killed, then the last)
    assert.truthy(most <= 8, "a kill made " .. most .. " handled responses redo (" .. redone .. " in all)")
    local again, rmost = env.redone(db .. ".requests")
    assert.truthy(rmost <= 8, "a kill made " .. rmost .. " requests be made again (" .. again .. " in all)")
    local q = assert(scatter.queue({ path = db, readonly = true }))
    assert.same({ queued = 0, leased = 0, done = PAGES, failed = 0, seen = PAGES }, q:stats())
    q:close()
  end)
  it("stops cleanly on SIGTERM: items in flight go back untried, no failure recorded, the rerun finishes", function()
    local db, out = dir .. "/q.db", dir .. "/out.jsonl"
    local script = env.script("crawl_term.lua", [[
      local scatter = require("scatter")
      local db, out, proxy, start = ...
      -- every response handed to handle, unbuffered: what a kill made redo
      local h = assert(io.open(db .. ".handled", "a"))
      h:setvbuf("no")
      local pool = scatter.pool{ proxies = { proxy }, metrics_log_interval = 0, rate_limit = { default_interval = 0 } }
      local q = assert(scatter.queue{ path = db, commit_ms = 20 })
      q:push(start)
      local s = scatter.crawl{ queue = q, pool = pool, concurrency = 8, output = out,
        on_failed = function(item, err) print("on_failed", item.url, err) end,
        handle = function(resp, item)
          for _, u in ipairs(scatter.links(resp)) do item:push(u) end
          scatter.sleep(0.05 * math.random())
          return { url = item.url, tries = item.tries }
        end }
      print("summary", s.done, s.failed, s.stopped)
      q:close()
    ]])
    local log = dir .. "/term.log"
    local child = env.spawn({ env.build_dir() .. "/scatter", "run", script, db, out, ms.url, ng.url("/p0.html") },
      { log = log })
    env.wait_until(function() return #lines_of(out) >= 20 end, "the crawl to get going", child, 30)
    assert.equal(0, require("ffi").C.kill(child.pid, 15))
    env.wait_until(function() return child:reap() end, "the crawl to stop", nil, 30)
    assert.equal("exit 143", child.status)
    local text = env.read_file(log) or ""
    assert.is_nil(text:find("on_failed", 1, true), text)
    assert.is_nil(text:find("scatter.crawl", 1, true), text)
    assert.is_nil(text:find("error", 1, true), text)
    local q = assert(scatter.queue({ path = db, readonly = true }))
    local st = q:stats()
    q:close()
    assert.equal(0, st.leased)
    assert.equal(0, st.failed)
    assert.truthy(st.queued > 0, "the crawl ended before the signal; make it longer")
    local rc, _, stderr = env.cli(table.concat({ "run", script, db, out, ms.url, ng.url("/p0.html") }, " "))
    assert.equal(0, rc, stderr)
    local n = 0
    for _, l in ipairs(lines_of(out)) do
      local r = cjson.decode(l)
      -- an item the stop interrupted was given back, not charged a try
      assert.equal(1, r.tries, l)
      n = n + 1
    end
    assert.equal(PAGES, n)
  end)
end)
