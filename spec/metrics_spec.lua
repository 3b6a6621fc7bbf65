-- Metrics (DESIGN.md section 6): pool:metrics() agrees with what happened
-- at the farm and at the caller, the periodic summary line, and the
-- Prometheus endpoint (validated by promtool).
local env = require("support.env")
local scatter = require("scatter")
local log = require("scatter.log")

local FIELDS = {
  "total_proxies", "healthy_proxies", "cooldown_proxies", "dead_proxies", "pending_tasks",
  "delayed_tasks", "completed_tasks", "failed_tasks", "throughput_1s", "throughput_10s",
  "throughput_60s", "success_rate_1m", "avg_latency_ms", "inflight", "requeued_tasks",
  "zero_available_events", "skipped_no_permit", "skipped_rate_limit", "skipped_cooldown",
  "dispatch_count", "k_current", "classifier_errors", "attempts_started", "attempts_cancelled",
}

local function count(list, pred)
  local n = 0
  for _, x in ipairs(list) do if pred(x) then n = n + 1 end end
  return n
end

local slurp = env.read_file

describe("metrics", function()
  local ng

  setup(function() ng = env.nginx() end)
  teardown(function()
    scatter.close_all()
    env.cleanup()
  end)

  it("has every field of DESIGN.md as a number", function()
    local pool = scatter.pool({ proxies = { "127.0.0.1:1" }, metrics_log_interval = 0 })
    local m = pool:metrics()
    for _, f in ipairs(FIELDS) do assert.equal("number", type(m[f]), f) end
    pool:close()
    -- a closed pool keeps its last figures
    assert.equal("number", type(pool:metrics().completed_tasks))
  end)

  it("counts what happened: delivered tasks, and one attempt per SOCKS session at the farm", function()
    local farm = env.farm({ "good count=3", "block count=2", "flaky p=0.5 count=2" }, { seed = 7 })
    local pool = scatter.pool({
      proxies = farm.proxies, rate_limit = { default_interval = 0 }, metrics_log_interval = 0,
      cooldown_base = 0, eviction_min_samples = 1000, proxy_timeout = 5,
    })
    -- POST is not raced: one path at a time, so no attempt is cancelled
    -- before its SOCKS request reaches the farm, and "Connection: close"
    -- makes every attempt a new SOCKS session (no keep-alive reuse)
    local n, delivered = 40, 0
    scatter.run(function()
      local ths = {}
      for i = 1, n do
        ths[i] = scatter.spawn(function()
          local resp, err = pool:request({
            method = "POST", url = ng.url("/echo"), body = "task " .. i,
            headers = { connection = "close" }, timeout = 60,
          })
          assert(resp, err)
          assert(resp.body:find("body=task " .. i .. "$"), resp.body)
          delivered = delivered + 1
        end)
      end
      scatter.wait_all(unpack(ths))
    end)
    assert.equal(n, delivered)
    local m = pool:metrics()
    assert.equal(delivered, m.completed_tasks)
    assert.equal(0, m.failed_tasks)
    assert.equal(0, m.pending_tasks)
    assert.equal(0, m.inflight)
    assert.equal(0, m.attempts_cancelled)
    local sessions = env.wait_until(function()
      local l = farm.log_lines()
      return #l == m.attempts_started and l
    end, "one farm log line per attempt (" .. m.attempts_started .. ")", farm.proc, 10)
    assert.equal(m.attempts_started, #sessions)
    local blocked = count(sessions, function(e) return e.action == "blocked" end)
    local flaky = count(sessions, function(e) return e.action == "flaky" end)
    assert.equal(n, m.verdicts.success)
    assert.equal(blocked, m.verdicts.proxy_blocked)
    assert.equal(flaky, m.verdicts.transport)
    assert.equal(m.attempts_started, m.verdicts.success + blocked + flaky)
    assert.is_true(blocked + flaky > 0, "the fault mix never bit")
    pool:close()
  end)

  it("counts cooling proxies, and sends them nothing while they rest", function()
    -- slow good proxies: every refusal lands before a winner could cancel it
    local farm = env.farm({ "slow latency=0.3 count=2", "refuse count=3" })
    local pool = scatter.pool({
      proxies = farm.proxies, rate_limit = { default_interval = 0 }, metrics_log_interval = 0,
      cooldown_consecutive_fails = 2, cooldown_base = 600, cooldown_max = 600,
      eviction_min_samples = 1000,
    })
    local m
    for _ = 1, 60 do
      assert(pool:get(ng.url("/small.txt"), { timeout = 30 }))
      m = pool:metrics()
      if m.cooldown_proxies == 3 then break end
    end
    -- the two good ones: healthy once they have succeeded, untested until tried
    assert.same({ 5, 2, 3, 0 }, { m.total_proxies, m.healthy_proxies + m.untested_proxies, m.cooldown_proxies,
      m.dead_proxies })
    assert.equal(0, m.failing_proxies)
    local failures = m.verdicts.transport
    for _ = 1, 5 do assert(pool:get(ng.url("/small.txt"), { timeout = 30 })) end
    m = pool:metrics()
    assert.equal(failures, m.verdicts.transport)
    assert.equal(3, m.cooldown_proxies)
    pool:close()
  end)

  it("counts dead proxies and leaves them alone", function()
    -- slow good proxies: every failure lands before a winner could cancel it
    local farm = env.farm({ "slow latency=0.3 count=2", "handshake_fail count=2", "flaky p=1" })
    local pool = scatter.pool({
      proxies = farm.proxies, rate_limit = { default_interval = 0 }, metrics_log_interval = 0,
      cooldown_base = 0, eviction_min_samples = 4,
    })
    local m
    for _ = 1, 80 do
      assert(pool:get(ng.url("/small.txt"), { timeout = 30 }))
      m = pool:metrics()
      if m.dead_proxies == 3 then break end
    end
    assert.same({ 5, 2, 0, 3 }, { m.total_proxies, m.healthy_proxies + m.untested_proxies, m.cooldown_proxies,
      m.dead_proxies })
    local dead = {}
    for _, p in ipairs(pool:proxies()) do dead[p.key] = p.dead end
    for i, addr in ipairs(farm.proxies) do
      assert.equal(farm.profiles[i] ~= "slow", dead[addr], addr .. " (" .. farm.profiles[i] .. ")")
    end
    local failures = m.verdicts.transport + m.verdicts.proxy_blocked
    for _ = 1, 5 do assert(pool:get(ng.url("/small.txt"), { timeout = 30 })) end
    m = pool:metrics()
    assert.equal(failures, m.verdicts.transport + m.verdicts.proxy_blocked)
    pool:close()
  end)

  describe("summary line", function()
    local farm
    setup(function() farm = env.farm({ "good count=2" }) end)

    local function capture(fn)
      local got, old = {}, log.sink
      log.sink = function(line) got[#got + 1] = line end
      local ok, err = pcall(fn)
      log.sink = old
      assert(ok, err)
      return got
    end

    it("is logged every metrics_log_interval with the pool's name", function()
      local got = capture(function()
        local pool = scatter.pool({
          name = "sum.test", proxies = farm.proxies, metrics_log_interval = 0.1,
          rate_limit = { default_interval = 0 },
        })
        for _ = 1, 3 do assert(pool:get(ng.url("/small.txt"), { timeout = 30 })) end
        scatter.sleep(0.5)
        pool:close()
      end)
      local n = 0
      for _, line in ipairs(got) do
        if line:find("throughput=", 1, true) then
          n = n + 1
          assert.truthy(line:match("^%S+ INFO %[sum%.test%] throughput=%d+%.%d/s | success=%d+%% | "
            .. "pool: %d healthy, %d untested, 0 failing, 0 cooldown, 0 dead | tasks: %d+ pending, %d+ delayed, "
            .. "%d+ inflight | K=%d+$"), line)
          local h, u = line:match("pool: (%d) healthy, (%d) untested")
          assert.equal(2, tonumber(h) + tonumber(u), line)
        end
      end
      assert.is_true(n >= 2, "summary lines: " .. n)
    end)

    it("is off with metrics_log_interval = 0", function()
      local got = capture(function()
        local pool = scatter.pool({ name = "quiet.test", proxies = farm.proxies, metrics_log_interval = 0 })
        assert(pool:get(ng.url("/small.txt"), { timeout = 30 }))
        scatter.sleep(0.3)
        pool:close()
      end)
      for _, line in ipairs(got) do assert.is_nil(line:find("throughput=", 1, true), line) end
    end)
  end)

  describe("Prometheus endpoint", function()
    local farm, dir
    setup(function()
      farm = env.farm({ "good count=2", "refuse" })
      dir = env.tmpdir()
    end)

    -- curl in a child process, while this process runs the loop that serves it
    local n = 0
    local function scrape(url, extra)
      n = n + 1
      local out = dir .. "/scrape" .. n
      local argv = { "curl", "-sS", "-i", "--max-time", "20", "-o", out }
      for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
      argv[#argv + 1] = url
      local proc = env.spawn(argv, { name = "curl" })
      -- outside a thread, sleep drives the loop itself: no wait for other threads
      while proc:alive() do scatter.sleep(0.02) end
      local text = slurp(out) or ""
      local head, body = text:match("^(.-)\r\n\r\n(.*)$")
      assert(head, "no HTTP answer from " .. url .. ": " .. proc:tail())
      return tonumber(head:match("^HTTP/1%.1 (%d+)")), head, body
    end

    local function promtool(text)
      local path = dir .. "/metrics.txt"
      local f = assert(io.open(path, "w"))
      f:write(text)
      f:close()
      local p = io.popen("promtool check metrics < '" .. path .. "' 2>&1; echo rc=$?")
      local out = p:read("*a")
      p:close()
      return out:match("rc=(%d+)") == "0", out
    end

    local function value(body, series)
      local v = body:match("\n" .. series:gsub("[%[%]%(%)%.%+%-%*%?%^%$%%]", "%%%0") .. " ([^\n]+)")
      return tonumber(v)
    end

    it("serves every pool on one address, one pool label each, valid for promtool", function()
      local port = env.free_port()
      local addr = "127.0.0.1:" .. port
      local a = scatter.pool({
        name = "a.test", proxies = farm.proxies, metrics_listen = addr, metrics_log_interval = 0,
        rate_limit = { default_interval = 0 },
      })
      local b = scatter.pool({
        name = "b.test", proxies = { farm.proxies[3] }, metrics_listen = addr, metrics_log_interval = 0,
      })
      for _ = 1, 5 do assert(a:get(ng.url("/small.txt"), { timeout = 30 })) end
      local status, head, body = scrape("http://" .. addr .. "/metrics")
      assert.equal(200, status)
      assert.truthy(head:lower():find("content-type: text/plain; version=0.0.4", 1, true), head)
      local ok, out = promtool(body)
      assert.is_true(ok, out .. "\n" .. body)
      local m = a:metrics()
      assert.equal(m.completed_tasks, value(body, 'scatter_tasks_completed_total{pool="a.test"}'))
      assert.equal(m.attempts_started, value(body, 'scatter_attempts_started_total{pool="a.test"}'))
      assert.equal(m.healthy_proxies, value(body, 'scatter_proxies{pool="a.test",state="healthy"}'))
      -- b.test's proxy was never tried: untested, not healthy
      assert.equal(0, value(body, 'scatter_proxies{pool="b.test",state="healthy"}'))
      assert.equal(1, value(body, 'scatter_proxies{pool="b.test",state="untested"}'))
      assert.equal(0, value(body, 'scatter_tasks_completed_total{pool="b.test"}'))

      assert.equal(404, (scrape("http://" .. addr .. "/other")))
      assert.equal(405, (scrape("http://" .. addr .. "/metrics", { "-X", "POST", "-d", "x" })))

      -- the server lives while one of its pools does
      a:close()
      local status2, _, body2 = scrape("http://" .. addr .. "/metrics")
      assert.equal(200, status2)
      body = body2
      assert.is_nil(body:find('pool="a.test"', 1, true))
      b:close()
      assert.is_false(env.port_open(port))
    end)

    it("serves a router's pools labelled by host", function()
      local port = env.free_port()
      local addr = "127.0.0.1:" .. port
      local r = scatter.router({
        ["a.test"] = { proxies = farm.proxies, metrics_listen = addr, metrics_log_interval = 0 },
        ["b.test"] = { proxies = farm.proxies, metrics_listen = addr, metrics_log_interval = 0 },
      })
      assert(r:get(ng.host_url("a.test", "/small.txt"), { timeout = 30 }))
      local status, _, body = scrape("http://" .. addr .. "/metrics")
      assert.equal(200, status)
      local ok, out = promtool(body)
      assert.is_true(ok, out)
      assert.equal(1, value(body, 'scatter_tasks_completed_total{pool="a.test"}'))
      assert.equal(0, value(body, 'scatter_tasks_completed_total{pool="b.test"}'))
      r:close()
      assert.is_false(env.port_open(port))
    end)

    it("rejects a bad or busy address at scatter.pool{}", function()
      local ok, err = pcall(scatter.pool, { proxies = farm.proxies, metrics_listen = "localhost" })
      assert.is_false(ok)
      assert.truthy(err:find("metrics_listen", 1, true), err)
      local port = env.free_port()
      local socket = require("socket")
      local busy = assert(socket.bind("127.0.0.1", port))
      ok, err = pcall(scatter.pool, { proxies = farm.proxies, metrics_listen = "127.0.0.1:" .. port })
      busy:close()
      assert.is_false(ok)
      assert.truthy(err:find("metrics_listen: cannot listen", 1, true), err)
    end)

    it("is served by `scatter run --metrics` and does not keep the run alive", function()
      local port = env.free_port()
      local path = dir .. "/crawl.lua"
      local f = assert(io.open(path, "w"))
      f:write(string.format([[
        local scatter = require("scatter")
        local pool = scatter.pool({ name = "run.test", proxies = { %q }, metrics_log_interval = 0 })
        assert(pool:get(%q, { timeout = 30 }))
        local out = io.open(%q, "w")
        local core, runtime = require("scatter.core"), require("scatter.runtime")
        local res = runtime.await(core.fetch({ url = "http://127.0.0.1:%d/metrics" }))
        assert(res.status == 200, res.err)
        out:write(res.body)
        out:close()
      ]], farm.proxies[1], ng.url("/small.txt"), dir .. "/self.txt", port))
      f:close()
      local p = io.popen("timeout 60 " .. env.build_dir() .. "/scatter run --metrics 127.0.0.1:" .. port
        .. " '" .. path .. "' 2>&1; echo rc=$?")
      local out = p:read("*a")
      p:close()
      assert.equal("0", out:match("rc=(%d+)"), out)
      local body = assert(slurp(dir .. "/self.txt"))
      local ok, perr = promtool(body)
      assert.is_true(ok, perr)
      assert.equal(1, value(body, 'scatter_tasks_completed_total{pool="run.test"}'))
    end)
  end)
end)
