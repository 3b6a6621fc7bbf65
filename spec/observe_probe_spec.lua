-- What an operator running long crawls watches and configures, probed as a
-- user (2026-12-04): the Prometheus endpoint, the progress line of
-- `scatter run`, the configuration's checks. Each case failed before its fix.
local env = require("support.env")
local scatter = require("scatter")

local slurp = env.read_file

local function promtool(dir, text)
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

describe("observability probe", function()
  local dir, ng, ms

  setup(function()
    dir = env.tmpdir()
    ng = env.nginx()
    ms = env.microsocks()
  end)
  teardown(function()
    scatter.close_all()
    env.cleanup()
  end)

  -- curl as a child: the endpoint answers from this process's loop
  local n = 0
  local function scrape(url)
    n = n + 1
    local out = dir .. "/scrape" .. n
    local proc = env.spawn({ "curl", "-sS", "--max-time", "20", "-o", out, url }, { name = "curl" })
    while proc:alive() do scatter.sleep(0.02) end
    return slurp(out) or ""
  end

  local function batch(pool, count)
    scatter.run(function()
      local ths = {}
      for i = 1, count do
        ths[i] = scatter.spawn(function()
          return assert(pool:get(ng.url("/small.txt?i=" .. i), { timeout = 30 }))
        end)
      end
      scatter.wait_all(unpack(ths))
    end)
  end

  describe("the Prometheus endpoint", function()
    it("stays valid for a pool name that is not UTF-8 or holds quotes, backslashes and newlines", function()
      local port = env.free_port()
      local a = scatter.pool({
        name = "caf\233 \255", proxies = { ms.addr }, metrics_log_interval = 0,
        metrics_listen = "127.0.0.1:" .. port,
      })
      local b = scatter.pool({
        name = 'a"b\\c\nd', proxies = { ms.addr }, metrics_log_interval = 0,
        metrics_listen = "127.0.0.1:" .. port,
      })
      local body = scrape("http://127.0.0.1:" .. port .. "/metrics")
      a:close()
      b:close()
      local ok, out = promtool(dir, body)
      assert.is_true(ok, out .. "\n" .. body)
      -- the bad bytes are replaced, the rest of the name kept
      assert.equal(1, value(body, 'scatter_proxies{pool="caf\239\191\189 \239\191\189",state="untested"}'), body)
      assert.equal(1, value(body, 'scatter_proxies{pool="a\\"b\\\\c\\nd",state="untested"}'), body)
    end)

    it("counters of a pool closed and opened again under its name go on, never back to 0", function()
      local port = env.free_port()
      local metrics = require("scatter.metrics")
      local tok = assert(metrics.serve("127.0.0.1:" .. port, function()
        local list = {}
        for p in pairs(require("scatter.pool").open) do list[#list + 1] = p end
        return list
      end))
      local url = "http://127.0.0.1:" .. port .. "/metrics"
      local cfg = { name = "shop", proxies = { ms.addr }, metrics_log_interval = 0,
        rate_limit = { default_interval = 0 } }
      local p = scatter.pool(cfg)
      batch(p, 6)
      local first = scrape(url)
      assert.equal(6, value(first, 'scatter_tasks_completed_total{pool="shop"}'), first)
      local started = p:metrics().attempts_started
      assert.equal(started, value(first, 'scatter_attempts_started_total{pool="shop"}'), first)
      p:close()
      p = scatter.pool(cfg)
      batch(p, 2)
      local second = scrape(url)
      local ok, out = promtool(dir, second)
      assert.is_true(ok, out)
      assert.equal(8, value(second, 'scatter_tasks_completed_total{pool="shop"}'), second)
      assert.equal(started + p:metrics().attempts_started,
        value(second, 'scatter_attempts_started_total{pool="shop"}'), second)
      -- gauges are the open pool's own
      assert.equal(1, value(second, 'scatter_proxies{pool="shop",state="healthy"}'), second)
      -- every counter sample of the first scrape is <= the second's
      for series, v in first:gmatch("\n(scatter_[%w_]+_total{[^}]*}) ([^\n]+)") do
        local w = value(second, series)
        assert.truthy(w and w >= tonumber(v), series .. ": " .. v .. " then " .. tostring(w))
      end
      p:close()
      metrics.unserve(tok)
    end)
  end)

  describe("the progress line of scatter run", function()
    it("shows the rate tasks are done at, also in a pool's first 10 seconds", function()
      local core = require("scatter.core")
      local progress = require("scatter.progress")
      local pool = scatter.pool({ name = "rate", proxies = { ms.addr }, metrics_log_interval = 0,
        rate_limit = { default_interval = 0 } })
      local render = progress.pools_renderer(require("scatter.pool"), core.now)
      local t0, t1, line = core.now(), nil, nil
      local count = 80
      scatter.run(function()
        local stop = false
        -- redrawn as the display does, a few times a second
        scatter.spawn(function()
          while not stop do
            render()
            scatter.sleep(0.25)
          end
        end)
        local ths = {}
        for i = 1, count do
          ths[i] = scatter.spawn(function()
            return assert(pool:get(ng.url("/small.txt?r=" .. i), { timeout = 30 }))
          end)
        end
        scatter.wait_all(unpack(ths))
        line, t1 = render(), core.now()
        stop = true
      end)
      local real = count / (t1 - t0)
      pool:close()
      local shown = tonumber(line:match(" | ([%d.]+)/s | "))
      assert.truthy(shown, line)
      assert.truthy(line:find("tasks " .. count .. " done", 1, true), line)
      -- the run took well under 10 s here: the old figure was a tenth of
      -- what it had done, whatever the rate
      assert.truthy(shown >= real / 2 and shown <= real * 2,
        ("shown %s/s, done at %.1f/s: %s"):format(shown, real, line))
    end)
  end)

  describe("configuration", function()
    it("refuses a state_file that is empty, holds a NUL or names a directory, at scatter.pool{}", function()
      for _, bad in ipairs({ "", dir .. "/a\0b.json", dir .. "/" }) do
        local ok, err = pcall(scatter.pool, { proxies = { ms.addr }, metrics_log_interval = 0, state_file = bad })
        if ok then err:close() end
        assert.is_false(ok, ("%q accepted"):format(bad))
        assert.truthy(tostring(err):find("field 'state_file' must be a file path", 1, true), err)
      end
      -- nothing was written under the path cut at the NUL
      assert.is_nil(io.open(dir .. "/a", "r"))
    end)
  end)

  describe("logging", function()
    it("says when SCATTER_LOG or SCATTER_LOG_FORMAT holds a word it does not know", function()
      local script = env.script("logword.lua", [[require("scatter.log").warn("hello")]])
      local rc, _, err = env.cli("run '" .. script .. "'", { env = "SCATTER_LOG=verbose" })
      assert.equal(0, rc, err)
      assert.truthy(err:find('SCATTER_LOG="verbose" is not one of debug, error, info, trace, warn; using info',
        1, true), err)
      assert.truthy(err:find("WARN hello", 1, true), err)
      rc, _, err = env.cli("run '" .. script .. "'", { env = "SCATTER_LOG_FORMAT=jsn" })
      assert.equal(0, rc, err)
      assert.truthy(err:find('SCATTER_LOG_FORMAT="jsn" is not one of json, text; using text', 1, true), err)
      -- known words, in any case, say nothing more
      rc, _, err = env.cli("run '" .. script .. "'", { env = "SCATTER_LOG=WARN SCATTER_LOG_FORMAT=JSON" })
      assert.equal(0, rc, err)
      assert.equal("hello", require("cjson").decode(err).msg, err)
    end)
  end)
end)
