-- scatter.crawl and item:push given what a user gets wrong (found by
-- probing as one): options without bounds, an output that is the queue's
-- own file or a FIFO, a second crawl on one queue, a request field that
-- would fail every item, an error value whose tostring raises, an
-- on_failed that never returns, a pool closed under the crawl. Each gets
-- an error naming it, and no item is lost or left leased. Real libcurl
-- through microsocks to nginx.
local env = require("support.env")
local scatter = require("scatter")

describe("scatter.crawl, misuse", function()
  local ng, ms, dir

  setup(function()
    local files = {}
    for i = 1, 8 do files["p" .. i .. ".html"] = "page " .. i end
    ng = env.nginx({ files = files })
    ms = env.microsocks()
  end)
  teardown(function() env.cleanup() end)
  before_each(function() dir = env.tmpdir() end)

  local function new_pool()
    return scatter.pool({ proxies = { ms.url }, metrics_log_interval = 0, rate_limit = { default_interval = 0 } })
  end

  local function filled(n, path)
    local q = assert(scatter.queue({ path = path or (dir .. "/q.db") }))
    for i = 1, n do q:push(ng.url("/p" .. i .. ".html")) end
    return q
  end

  -- every item accounted for: done + failed + queued = seen, none leased
  local function whole(q, done, failed)
    local s = q:stats()
    assert.equal(0, s.leased)
    assert.equal(s.seen, s.done + s.failed + s.queued)
    if done then assert.equal(done, s.done) end
    if failed then assert.equal(failed, s.failed) end
  end

  it("refuses unbounded options, naming them at the caller's line", function()
    scatter.run(function()
      local pool = new_pool()
      local q = filled(2)
      local function try(cfg)
        cfg.queue, cfg.pool, cfg.handle = q, pool, cfg.handle or function() end
        -- (through a Lua function: the error's position is its line)
        local ok, err = pcall(function()
          local s = scatter.crawl(cfg)
          return s
        end)
        assert.is_false(ok)
        return err
      end
      local err = try({ concurrency = math.huge })
      assert.matches("concurrency must be an integer from 1 to 100000, got inf", err)
      assert.matches("^[^\n]*crawl_misuse_spec.lua:%d+: scatter.crawl:", err)
      assert.matches("concurrency must be .*got '8' %(a string%)", try({ concurrency = "8" }))
      assert.matches("backoff must be a number from 0 to 2592000", try({ backoff = math.huge }))
      assert.matches("max_backoff must be", try({ max_backoff = math.huge }))
      assert.matches("timeout must be a number from 0.001 to 2592000", try({ timeout = 1e12 }))
      assert.matches("handle_timeout must be", try({ handle_timeout = math.huge }))
      -- a request field every item would fail on: said once, before any try
      assert.matches("scatter.crawl: request: max_body must be", try({ request = { max_body = -1 } }))
      assert.matches("scatter.crawl: request: unknown field 'colour'", try({ request = { colour = 1 } }))
      whole(q)
      assert.equal(2, q:stats().queued)
      pool:close()
      assert.matches("the pool is closed", try({}))
      q:close()
    end)
  end)

  it("refuses an output that is the queue's own file, or a FIFO, and the queue stays whole", function()
    scatter.run(function()
      local pool = new_pool()
      local q = filled(3)
      for _, out in ipairs({ dir .. "/q.db", dir .. "/q.db-wal", dir .. "/./q.db-lock" }) do
        local ok, err = pcall(scatter.crawl, { queue = q, pool = pool, output = out, handle = function() return 1 end })
        assert.is_false(ok)
        assert.matches("that is the queue's own file", err)
      end
      os.execute("mkfifo " .. dir .. "/fifo")
      local ok, err = pcall(scatter.crawl, { queue = q, pool = pool, output = dir .. "/fifo",
        handle = function() return 1 end })
      assert.is_false(ok)
      assert.matches("not a regular file %(a FIFO or socket%)", err)
      local s = scatter.crawl({ queue = q, pool = pool, output = dir .. "/out.jsonl", handle = function() return 1 end })
      assert.equal(3, s.done)
      q:close()
      pool:close()
    end)
    -- the file reopens: nothing was written over it
    local q = assert(scatter.queue({ path = dir .. "/q.db" }))
    whole(q, 3, 0)
    q:close()
    local q2, err = scatter.queue({ path = dir .. "/fifo" })
    assert.is_nil(q2)
    assert.matches("not a regular file", err)
  end)

  it("refuses a second crawl on a queue while one runs, also from inside a handler", function()
    scatter.run(function()
      local pool = new_pool()
      local q = filled(4)
      local inner
      local s = scatter.crawl({ queue = q, pool = pool, output = dir .. "/a.jsonl",
        handle = function(_, item)
          if not inner then
            local ok, err = pcall(scatter.crawl, { queue = q, pool = pool, output = dir .. "/b.jsonl",
              handle = function() end })
            inner = ok and "ran" or err
          end
          return { url = item.url }
        end })
      assert.equal(4, s.done)
      assert.matches("the queue has a crawl running already", inner)
      -- the first crawl's lines all went to its own output
      local n = 0
      for _ in (env.read_file(dir .. "/a.jsonl") or ""):gmatch("[^\n]+") do n = n + 1 end
      assert.equal(4, n)
      assert.is_nil(io.open(dir .. "/b.jsonl"))
      -- and once it is over, the queue takes another
      q:push(ng.url("/p5.html"))
      assert.equal(1, scatter.crawl({ queue = q, pool = pool, handle = function() end }).done)
      whole(q, 5, 0)
      q:close()
      pool:close()
    end)
  end)

  it("fails the try of an error whose tostring raises, and ends an on_failed that never returns", function()
    local reported = {}
    local runtime = require("scatter.runtime")
    local report = runtime.report
    runtime.report = function(msg) reported[#reported + 1] = msg end
    local ok, err = pcall(scatter.run, function()
      local pool = new_pool()
      local q = filled(4)
      local evil = setmetatable({}, { __tostring = function() error("tostring exploded") end })
      local s = scatter.crawl({ queue = q, pool = pool, max_tries = 1, handle_timeout = 0.5,
        handle = function() error(evil) end,
        on_failed = function(it)
          if it.url:match("p1%.html") then scatter.sleep(1e6) end
        end })
      assert.equal(0, s.done)
      assert.equal(4, s.failed)
      for it in q:failed() do assert.matches("handle raised: %(an error value tostring cannot show", it.err) end
      whole(q, 0, 4)
      q:close()
      pool:close()
    end)
    runtime.report = report
    assert(ok, err)
    assert.matches("on_failed did not return within 0.5s", table.concat(reported, "\n"))
  end)

  it("ends with one error when the pool closes under it; the items in flight go back untried", function()
    scatter.run(function()
      local pool = new_pool()
      local q = filled(8)
      local ok, err = pcall(scatter.crawl, { queue = q, pool = pool, concurrency = 2,
        handle = function() pool:close() end })
      assert.is_false(ok)
      assert.matches("the pool was closed during the crawl", err)
      q:close()
    end)
    local q = assert(scatter.queue({ path = dir .. "/q.db" }))
    local s = q:stats()
    assert.equal(0, s.failed)
    assert.equal(8, s.done + s.queued)
    whole(q)
    q:close()
  end)

  it("refuses at push what no request could send", function()
    local q = assert(scatter.queue({}))
    local function bad(url, o) return (select(2, pcall(q.push, q, url, o))) end
    assert.matches("url longer than 65536 bytes", bad("http://a.test/" .. ("x"):rep(70000)))
    assert.matches("bad header name \"X A:\"", bad("http://a.test/", { headers = { ["X A:"] = "v" } }))
    assert.matches("header 'A' contains CR, LF or NUL", bad("http://a.test/", { headers = { A = "v\r\nB: c" } }))
    assert.matches("unknown option 'prority'", bad("http://a.test/", { prority = 3 }))
    assert.equal(0, q:stats().seen)
    q:close()
  end)
end)
