-- Hardening (issue 17): each case here was observed on earlier code as a
-- hang, a leak, a wrong blame or a misleading answer; each `it` fails on
-- that code.
--
-- | input                                          | what it gets                                              |
-- |------------------------------------------------|-----------------------------------------------------------|
-- | D1 a full pool, pool:get(u, { timeout = 1 })   | nil, "timeout: waiting for room ..." within the timeout   |
-- | D2 "http://a@b@host/x", a 1 MiB header value   | nil, "invalid_request: ..."; no attempt, no pair charged  |
-- | D3 a 20 KB run of letters/colons in a log line  | redacted in linear time; the line is capped               |
-- | D4 a verdict/error whose __tostring raises     | target_error, counted; the task ends on its timeout       |
-- | D5 pool:get inside a classifier                | refused before anything is submitted                      |
-- | D6/D7 hedge_delay 1e17, max_inflight 2^53,     | error naming the field and its range                      |
-- |   request max_body 1e300                       |                                                           |
-- | D9 pool:metrics() after close()                | pending 0, the closed tasks counted as failed             |
-- | a pool with no proxies                         | warn "no proxies" at once; timeout detail "no_proxies"    |
-- | sources = { "/bare/path.txt" }                 | read like file://                                         |
-- | a URL with a NUL byte                          | "url contains a NUL byte"                                 |
-- | D10 a FIFO as state_file or source, /dev/zero  | refused at once with a warning (never blocks or eats RAM) |
-- | a temp file that cannot be made at save        | "cannot save: create temp file <path>.<pid>-<n>.tmp: ..."  |
-- | a local curl failure (missing ca_file)         | local_error, retried; no pair is charged                  |
-- | a kill -9 within state_save_interval           | saved FIRST_SAVE (10 s) after the first outcomes          |
-- | two processes naming one state_file            | the second warns "in use by another process", never saves |
-- | a real 404/410, two proxies agree              | delivered as final, no pair charged (consensus_404)       |
-- | ... with no other proxy alive                  | delivered as final at once (no second opinion to wait for)|
-- | a classifier that never returns                | interrupted after classifier_timeout: target_error, counted |
-- | ... in a loop LuaJIT compiled                  | the watchdog says so on stderr with the pool's name       |
-- | a source of a million lines                    | pool{} returns after its first slice; served meanwhile    |
-- | a proxy that worked once, then failed          | failing, not healthy (healthy = a recent success)         |
local env = require("support.env")
local scatter = require("scatter")
local log = require("scatter.log")

local function logged(fn)
  local lines, sink = {}, log.sink
  log.sink = function(line) lines[#lines + 1] = line end
  local res = { n = 0 }
  local function keep(...) res = { n = select("#", ...), ... } end
  keep(pcall(fn))
  log.sink = sink
  assert(res[1], res[2])
  return lines, unpack(res, 2, res.n)
end

local function grep(lines, pat)
  for _, l in ipairs(lines) do
    if l:find(pat) then return l end
  end
end

describe("hardening", function()
  local ng, farm, dir

  setup(function()
    ng = env.nginx()
    farm = env.farm({ "good count=2", "blackhole" })
    dir = env.tmpdir()
  end)

  teardown(function()
    scatter.close_all()
    env.cleanup()
  end)

  local function pool_of(extra)
    local cfg = { proxies = { farm.proxies[1] }, metrics_log_interval = 0,
      rate_limit = { default_interval = 0 } }
    for k, v in pairs(extra or {}) do cfg[k] = v end
    return scatter.pool(cfg)
  end

  it("D1: a request's timeout covers waiting for room in a full pool", function()
    local pool = scatter.pool({ proxies = { farm.proxies[3] }, task_pool_capacity = 1,
      proxy_timeout = 60, metrics_log_interval = 0 })
    local stuck = assert(pool:submit({ url = ng.url("/small.txt") })) -- on the blackhole
    -- in a thread: the old code blocked here for good
    local t0, took, resp, err = scatter.now(), nil, nil, nil
    local th = scatter.spawn(function()
      resp, err = pool:get(ng.url("/small.txt"), { timeout = 1 })
      took = scatter.now() - t0
    end)
    -- generous bounds: the old code never returned, and a loaded machine
    -- must not turn a slow wake into a failure
    while not took and scatter.now() - t0 < 15 do scatter.sleep(0.05) end
    if not took then pool:close() end
    scatter.wait_all(th)
    assert.truthy(took and took < 10, "pool:get(timeout = 1) still blocked after 15 s")
    assert.is_nil(resp)
    assert.truthy(err:find("^timeout: waiting for room in a full pool"), err)
    assert.is_false(stuck:done())
    pool:close()
  end)

  -- The loop's clock is libuv's, cached at its last pass. A Lua timer's
  -- wait used to be armed against that stale clock, so after a busy stretch
  -- of Lua it was already due when the pass began, fired first, and the
  -- pass then slept until curl's next timer (here the blackhole's 30 s
  -- connect deadline): D1's lost wake on a loaded machine.
  it("a short sleep after busy Lua work ends before curl's long timer", function()
    local pool = scatter.pool({ proxies = { farm.proxies[3] }, proxy_timeout = 30,
      connect_timeout = 30, metrics_log_interval = 0 })
    local h = assert(pool:submit({ url = ng.url("/small.txt") })) -- on the blackhole
    scatter.sleep(0.05) -- the attempt is in flight, curl's timer armed
    for _ = 1, 3 do
      local spin = scatter.now() + 0.1
      while scatter.now() < spin do end -- Lua busy, the loop's clock left behind
      scatter.sleep(0.01)
      local m = pool:metrics()
      -- the old code returned from this sleep only when curl's 30 s
      -- deadline failed the attempt
      assert.are.equal(0, m.attempts_finished)
      assert.is_false(h:done())
    end
    pool:close()
  end)

  it("D2: what curl refuses locally is invalid_request, and no pair is charged", function()
    local pool = pool_of()
    local port = ng.url("/small.txt"):match(":(%d+)/")
    local before = pool:metrics().attempts_started
    local resp, err = pool:get("http://a@b@127.0.0.1:" .. port .. "/small.txt", { timeout = 5 })
    assert.is_nil(resp)
    assert.truthy(err:find("^invalid_request: ") and err:find("@", 1, true), err)
    resp, err = pool:get(ng.url("/small.txt"), { timeout = 5, headers = { ["X-Big"] = ("v"):rep(1024 * 1024) } })
    assert.is_nil(resp)
    assert.truthy(err:find("invalid_request: header 'X-Big' is longer than", 1, true), err)
    resp, err = pool:get(ng.url("/small.txt"), { timeout = 5, max_body = 1e300 })
    assert.is_nil(resp)
    assert.truthy(err:find("^invalid_request: max_body must be"), err)
    assert.equal(before, pool:metrics().attempts_started)
    -- the pair is untouched: the next good request is served at once
    resp, err = pool:get(ng.url("/small.txt"), { timeout = 5 })
    assert.truthy(resp, err)
    assert.equal(1, resp.attempts)
    pool:close()
  end)

  it("D2: a NUL byte in a URL is named as such", function()
    local pool = pool_of()
    local resp, err = pool:get("http://x.test/a\0b", { timeout = 1 })
    assert.is_nil(resp)
    assert.equal("invalid_request: url contains a NUL byte", err)
    pool:close()
    local ok, perr = pcall(scatter.pool, { proxies = { "127.0.0.1:10\0" .. "80" }, metrics_log_interval = 0 })
    assert.is_false(ok)
    assert.truthy(perr:find("proxies[1]: contains a NUL byte", 1, true), perr)
  end)

  it("D3: redaction is linear and a log line is capped", function()
    local t0 = os.clock()
    for _, unit in ipairs({ "a", "1", "a:", "a:1,", "socks5://", ":@/", "http://", "a@" }) do
      local s = unit:rep(math.ceil(20000 / #unit))
      log.redact(s)
    end
    local took = os.clock() - t0
    -- quadratic code needed minutes for one of these
    assert.is_true(took < 1, ("redaction took %.1f s"):format(took))
    assert.equal("socks5://***@h:1 http://***@x/ ***@y:2", log.redact("socks5://u:p@h:1 http://u:p@x/ u:p@y:2"))
    local lines = logged(function() log.emit("error", "p", ("x"):rep(1e6)) end)
    assert.is_true(#lines[1] < log.MAX_MSG + 200, "a line of " .. #lines[1] .. " bytes")
    assert.truthy(lines[1]:find("more bytes)", 1, true))
    -- a cut inside a credential never shows what the cut left of it
    lines = logged(function() log.emit("error", nil, ("a"):rep(5000) .. ":secretpassword@host") end)
    assert.is_nil(lines[1]:find("secret", 1, true))
  end)

  it("D4: a verdict or error whose __tostring raises is target_error; the task ends", function()
    local evil = setmetatable({}, { __tostring = function() error("no string for you") end })
    for _, cls in ipairs({ function() return evil end, function() error(evil) end }) do
      local lines, pool, resp, err, m = logged(function()
        local p = pool_of({ classifier = cls })
        local r, e = p:get(ng.url("/small.txt"), { timeout = 1, race = false })
        return p, r, e, p:metrics()
      end)
      assert.is_nil(resp)
      assert.truthy(err:find("^timeout"), err)
      assert.is_true(m.classifier_errors > 0)
      assert.equal(0, m.pending_tasks)
      assert.equal(0, m.inflight)
      assert.truthy(grep(lines, "__tostring failed"), table.concat(lines, "\n"))
      pool:close()
    end
  end)

  it("D5: pool:get inside a classifier is refused before it submits", function()
    local inner
    local pool
    pool = pool_of({ classifier = function(r)
      if r.url:find("outer", 1, true) then
        inner = { pcall(pool.get, pool, ng.url("/small.txt?inner"), { timeout = 1 }) }
      end
      return "success"
    end })
    local resp, err = pool:get(ng.url("/small.txt?outer"), { timeout = 5, race = false })
    assert.truthy(resp, err)
    assert.is_false(inner[1])
    assert.truthy(tostring(inner[2]):find("must not wait", 1, true), tostring(inner[2]))
    local m = pool:metrics()
    assert.equal(0, m.pending_tasks)
    assert.equal(1, m.attempts_started)
    pool:close()
  end)

  it("D6/D7: numbers beyond what the core takes are refused, naming field and range", function()
    local cases = {
      { "hedge_delay", 1e17, "from 0 to 3600" },
      { "max_inflight", 2 ^ 53, "an integer from 1 to 10000000" },
      { "task_pool_capacity", 1e300, "an integer from 1 to 10000000" },
      { "proxy_timeout", 1e300, "at most 2592000" },
      { "cooldown_max", math.huge, "at most 2592000" },
      { "state_save_interval", 1e20, "at most 2592000" },
      { "seed", 2 ^ 64, "an integer from 0 to" },
    }
    for _, c in ipairs(cases) do
      local cfg = { proxies = { farm.proxies[1] }, metrics_log_interval = 0 }
      cfg[c[1]] = c[2]
      local ok, err = pcall(scatter.pool, cfg)
      if ok then err:close() end
      assert.is_false(ok, c[1] .. " accepted")
      assert.truthy(err:find("field '" .. c[1] .. "'", 1, true) and err:find(c[3], 1, true), err)
    end
  end)

  it("D9: metrics after close count the tasks close ended", function()
    local pool = scatter.pool({ proxies = { farm.proxies[3] }, proxy_timeout = 60, metrics_log_interval = 0 })
    local hs = {}
    for i = 1, 3 do hs[i] = assert(pool:submit({ url = ng.url("/small.txt?i=" .. i) })) end
    scatter.sleep(0.1)
    pool:close()
    for i = 1, 3 do
      local resp, err = hs[i]:wait(1)
      assert.is_nil(resp)
      assert.equal("closed", err)
    end
    local m = pool:metrics()
    assert.equal(0, m.pending_tasks)
    assert.equal(0, m.inflight)
    assert.equal(3, m.failed_tasks)
  end)

  it("no proxies: a warning at once, and no_proxies in the timeout", function()
    local empty = dir .. "/empty.txt"
    assert(io.open(empty, "w")):close()
    local lines, pool = logged(function()
      return scatter.pool({ sources = { "file://" .. empty }, metrics_log_interval = 0 })
    end)
    assert.truthy(grep(lines, "no proxies: every proxy source was empty, missing or failed"), table.concat(lines, "\n"))
    local resp, err = pool:get(ng.url("/small.txt"), { timeout = 0.3 })
    assert.is_nil(resp)
    assert.truthy(err:find("^timeout: no_proxies"), err)
    pool:close()
  end)

  it("a bare path is a source, as file:// is", function()
    local list = dir .. "/list.txt"
    local f = assert(io.open(list, "w"))
    f:write(farm.proxies[1], "\n")
    f:close()
    local pool = scatter.pool({ sources = { list }, metrics_log_interval = 0 })
    local resp, err = pool:get(ng.url("/small.txt"), { timeout = 10 })
    assert.truthy(resp, err)
    assert.equal(farm.proxies[1], resp.proxy)
    pool:close()
  end)

  it("D10: a FIFO as state file or source is refused at once, /dev/zero too", function()
    local fifo = dir .. "/fifo"
    assert.is_true(os.execute("mkfifo " .. fifo) == 0)
    local lines, pool = logged(function()
      return scatter.pool({ proxies = { farm.proxies[1] }, state_file = fifo, sources = { fifo },
        metrics_log_interval = 0, name = "fifo" })
    end)
    assert.truthy(grep(lines, "state file .*fifo: not a regular file"), table.concat(lines, "\n"))
    assert.truthy(grep(lines, "source 1 skipped: .*not a regular file"), table.concat(lines, "\n"))
    pool:close() -- the save fails (rename over a FIFO works: it replaces it)
    lines, pool = logged(function()
      return scatter.pool({ proxies = { farm.proxies[1] }, state_file = "/dev/zero",
        metrics_log_interval = 0, name = "zero" })
    end)
    assert.truthy(grep(lines, "/dev/zero: not a regular file"), table.concat(lines, "\n"))
    pool.state = nil -- never try to replace /dev/zero
    pool:close()
  end)

  it("a save that cannot make its temp file names the temp file", function()
    local lines = logged(function()
      local pool = pool_of({ state_file = "/etc/hostname/state.json" })
      pool:close()
    end)
    assert.truthy(grep(lines, "cannot save: create temp file /etc/hostname/state%.json%.%d+%-%d+%.tmp"),
      table.concat(lines, "\n"))
  end)

  it("a local curl failure (a missing ca_file) is local_error and charges no pair", function()
    local pool = pool_of({ ca_file = dir .. "/no-such-ca.pem" })
    local resp, err = pool:get(ng.tls_url("/small.txt"), { timeout = 1.5, race = false })
    assert.is_nil(resp)
    assert.truthy(err:find("local_error", 1, true), err)
    local p = pool:proxies()[1]
    assert.is_false(p.dead)
    assert.equal(0, pool:metrics().cooldown_proxies)
    pool:close()
  end)

  it("the first save comes soon after the first outcomes, not a whole interval later", function()
    local state = require("scatter.state")
    local path = dir .. "/early.json"
    local first = state.FIRST_SAVE
    state.FIRST_SAVE = 0.3
    local ok, err = pcall(function()
      local pool = pool_of({ state_file = path })
      assert(pool:get(ng.url("/small.txt"), { timeout = 10 }))
      local t0 = scatter.now()
      while not env.read_file(path) and scatter.now() - t0 < 3 do scatter.sleep(0.05) end
      assert.truthy(env.read_file(path), "not saved within 3 s (state_save_interval is 300)")
      pool:close()
    end)
    state.FIRST_SAVE = first
    assert(ok, err)
  end)

  it("a second process naming the same state_file starts warm, read-only, and says so", function()
    local path = dir .. "/owned.json"
    local pool = pool_of({ state_file = path })
    assert(pool:get(ng.url("/small.txt"), { timeout = 10 }))
    assert(require("scatter.state").read(path)) -- (nothing saved yet is fine too)
    local script = env.script("second.lua", ([[
      local scatter = require("scatter")
      local pool = scatter.pool({ proxies = { %q }, state_file = %q, metrics_log_interval = 0 })
      pool:get(%q, { timeout = 10 })
      pool:close()
    ]]):format(farm.proxies[1], path, ng.url("/small.txt")))
    local rc, _, err = env.cli("run " .. script)
    assert.equal(0, rc, err)
    assert.truthy(err:find("in use by another process (pid " .. require("ffi").C.getpid() .. ")", 1, true), err)
    assert.is_nil(env.read_file(path), "the second process wrote the file")
    pool:close()
    assert(require("scatter.state").read(path).default)
  end)

  it("a 404 two different proxies agree on is final, and charges no pair", function()
    local pool = scatter.pool({ proxies = { farm.proxies[1], farm.proxies[2] }, metrics_log_interval = 0,
      rate_limit = { default_interval = 0 } })
    local resp, err = pool:get(ng.url("/status/404"), { timeout = 10 })
    assert.truthy(resp, err)
    assert.equal(404, resp.status)
    assert.is_true(resp.elapsed < 5, "took " .. resp.elapsed .. " s")
    local m = pool:metrics()
    assert.equal(0, m.verdicts.proxy_blocked)
    assert.equal(0, m.cooldown_proxies)
    pool:close()
    -- a pool of one has no second opinion to wait for: its proxy's 404 is
    -- the answer at once (it waited out the caller's timeout, then said
    -- "timeout")
    pool = scatter.pool({ proxies = { farm.proxies[1] }, metrics_log_interval = 0,
      rate_limit = { default_interval = 0 } })
    resp, err = pool:get(ng.url("/status/404"), { timeout = 30 })
    assert.truthy(resp, err)
    assert.equal(404, resp.status)
    assert.equal(1, resp.attempts)
    assert.equal(0, pool:metrics().verdicts.proxy_blocked)
    pool:close()
    -- consensus_404 = false: the old rule, a 404 is the proxy's fault
    pool = scatter.pool({ proxies = { farm.proxies[1], farm.proxies[2] }, metrics_log_interval = 0,
      consensus_404 = false })
    resp, err = pool:get(ng.url("/status/404"), { timeout = 1 })
    assert.is_nil(resp)
    assert.truthy(err:find("proxy_blocked", 1, true), err)
    pool:close()
  end)
  it("the watchdog interrupts a classifier that never returns", function()
    local prom
    local lines, resp, err, m = logged(function()
      local p = pool_of({ classifier = function() while true do debug.getinfo(1, "l") end end,
        classifier_timeout = 0.2, name = "wd", metrics_log_interval = 0.4 })
      local t0 = scatter.now()
      local r, e = p:get(ng.url("/small.txt"), { timeout = 1.5, race = false })
      local mm = p:metrics()
      prom = require("scatter.metrics").render({ p })
      p:close()
      assert.is_true(scatter.now() - t0 < 5)
      return r, e, mm
    end)
    assert.is_nil(resp)
    assert.truthy(err:find("^timeout"), err)
    assert.is_true(m.classifier_timeouts >= 1)
    assert.is_true(m.classifier_errors >= 1)
    assert.truthy(grep(lines, "classifier_timeout"), table.concat(lines, "\n"))
    -- counted where users look: Prometheus and the summary line
    local n = prom:match('\nscatter_classifier_timeouts_total{pool="wd"} (%d+)\n')
    assert.truthy(n, prom)
    assert.is_true(tonumber(n) >= 1, prom)
    assert.truthy(prom:find("# TYPE scatter_classifier_timeouts_total counter", 1, true))
    assert.truthy(grep(lines, "| classifier: %d+ errors, %d+ timeouts"), table.concat(lines, "\n"))
  end)

  it("the watchdog names the pool when LuaJIT cannot interrupt a compiled loop", function()
    local script = env.script("endless.lua", ([[
      local scatter = require("scatter")
      local pool = scatter.pool({ proxies = { %q }, metrics_log_interval = 0, name = "stuckpool",
        classifier_timeout = 0.2, classifier = function() local x = 0 while true do x = x + 1 end end })
      pool:get(%q, { timeout = 5 })
    ]]):format(farm.proxies[1], ng.url("/small.txt")))
    local out = dir .. "/endless.err"
    local proc = env.spawn({ env.build_dir() .. "/scatter", "run", script }, { log = out, name = "endless" })
    env.wait_until(function() return (env.read_file(out) or ""):find("cannot be interrupted", 1, true) end,
      "the watchdog's line", proc, 20)
    assert.truthy(env.read_file(out):find("[stuckpool] classifier running past classifier_timeout", 1, true))
    proc:stop(0.2) -- SIGTERM, then SIGKILL: the loop never turns
  end)
  it("healthy means a recent success: a proxy that worked once and has failed since is failing", function()
    local pool = pool_of({ proxies = { farm.proxies[2] }, health_window = 3, cooldown_consecutive_fails = 1000,
      eviction_min_samples = 1000, rate_limit = { default_interval = 0.02 } })
    assert(pool:get(ng.url("/small.txt"), { timeout = 10 }))
    assert.same({ 1, 0 }, { pool:metrics().healthy_proxies, pool:metrics().failing_proxies })
    assert.truthy(farm.control("down 1"):match("^OK")) -- RST its connections, refuse new ones
    local ok, err = pcall(function()
      scatter.run(function()
        -- failures until the window (3) holds no success; counted, not timed
        while pool:metrics().attempts_finished - pool:metrics().attempts_succeeded < 3 do
          pool:get(ng.url("/small.txt?again"), { timeout = 0.3 })
        end
      end)
      local m = pool:metrics()
      -- before: healthy (it had succeeded once), whatever came after
      assert.same({ 0, 1, 0 }, { m.healthy_proxies, m.failing_proxies, m.cooldown_proxies })
    end)
    assert.truthy(farm.control("up 1"):match("^OK"))
    pool:close()
    assert(ok, err)
  end)

  describe("big lists", function()
    local feed = require("scatter.feed")
    local slice
    -- 256 lines a loop turn, whatever the machine's speed: the order the
    -- specs assert (returned, served, still loading) needs no clock
    before_each(function()
      slice = feed.SLICE
      feed.SLICE = 0
    end)
    after_each(function()
      scatter.close_all()
      feed.SLICE = slice
    end)

    local function refused(i)
      return string.format("127.%d.%d.%d:9", math.floor(i / 65536) % 256 + 1, math.floor(i / 256) % 256, i % 256)
    end

    it("scatter.pool{} returns after the first slice and serves a request while the rest loads", function()
      local lines = {}
      -- the first slice (256 lines): the two good proxies, repeated
      for i = 1, 256 do lines[i] = farm.proxies[i % 2 + 1] end
      for i = 1, 1000000 do lines[#lines + 1] = refused(i) end
      local path = dir .. "/million.txt"
      env.write_file(path, table.concat(lines, "\n") .. "\n")
      local pool = scatter.pool({ sources = { path }, metrics_log_interval = 0,
        rate_limit = { default_interval = 0 } })
      -- before: the whole list was parsed inside scatter.pool{}
      assert.equal(2, pool:metrics().total_proxies)
      local resp, err = pool:get(ng.url("/small.txt"), { timeout = 30 })
      assert(resp, err)
      local n = pool:metrics().total_proxies
      assert.is_true(n > 2, "the list went on loading: " .. n)
      assert.is_true(n < 1000002, "served before the list was in: " .. n)
      pool:close()
    end)

    it("a list read over many slices: every proxy in, duplicates merged, bad lines counted once", function()
      local lines, want = {}, 0
      for i = 1, 5000 do
        if i % 100 == 50 then
          lines[i] = "not a proxy " .. i
        elseif i % 10 == 0 then
          lines[i] = refused(1) -- a duplicate
        else
          lines[i] = refused(i)
          want = want + 1
        end
      end
      local path = dir .. "/slices.txt"
      env.write_file(path, table.concat(lines, "\r\n"))
      local lines_logged = logged(function()
        local pool = scatter.pool({ sources = { path }, metrics_log_interval = 0 })
        assert.is_true(pool:metrics().total_proxies < want)
        scatter.run(function()
          while pool:metrics().total_proxies < want do scatter.sleep(0.001) end
        end)
        assert.equal(want, pool:metrics().total_proxies)
        assert.equal(want, #pool:proxies())
        pool:close()
      end)
      local warn = grep(lines_logged, "skipped 50 bad line")
      assert.truthy(warn, table.concat(lines_logged, "\n"))
      assert.truthy(warn:find('first: "not a proxy 50"', 1, true), warn)
    end)

    it("a refreshed list retires what it lost and revives what came back, across slices", function()
      local path = dir .. "/refresh.txt"
      local function list(from, to)
        local t = {}
        for i = from, to do t[#t + 1] = refused(i) end
        env.write_file(path, table.concat(t, "\n") .. "\n")
      end
      list(1, 2000)
      local sink = log.sink
      log.sink = function() end -- the "sources: ..." lines of each refresh
      local pool = scatter.pool({ sources = { path }, metrics_log_interval = 0, source_refresh_interval = 0.05 })
      local function wait(fn)
        scatter.run(function()
          while not fn(pool:metrics()) do scatter.sleep(0.005) end
        end)
      end
      wait(function(m) return m.total_proxies == 2000 end)
      assert.equal(0, pool:metrics().retired_proxies)
      list(1001, 3000) -- 1..1000 gone, 2001..3000 new
      wait(function(m) return m.total_proxies == 3000 and m.retired_proxies == 1000 end)
      list(1, 3000) -- back
      wait(function(m) return m.retired_proxies == 0 end)
      assert.equal(3000, pool:metrics().total_proxies)
      pool:close()
      log.sink = sink
    end)
  end)
end)
