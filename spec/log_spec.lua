-- Logging (DESIGN.md section 6): levels, text and JSON lines, the pool
-- prefix, scatter.log for crawl scripts, and proxy credentials masked in
-- logs, errors, metrics and responses.
local env = require("support.env")
local cjson = require("cjson")
local scatter = require("scatter")
local log = require("scatter.log")

local q = env.shell_quote

local script = env.script

-- Runs the CLI with an environment prefix; returns exit code, stdout, stderr.
local function scatter_cli(envs, args) return env.cli(args, { env = envs }) end

local function lines(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

-- Captures log lines while fn runs, at the given level and format.
local function capture(level, format, fn)
  local got, old = {}, log.sink
  log.sink = function(line) got[#got + 1] = line end
  assert(log.set_level(level))
  assert(log.set_format(format))
  local ok, err = pcall(fn)
  log.sink = old
  log.set_level("info")
  log.set_format("text")
  assert(ok, err)
  return got
end

local SCRIPT = [[
local scatter = require("scatter")
scatter.log.error("e-line", { n = 1 })
scatter.log.warn("w-line")
scatter.log.info("i-line", { who = "me", space = "a b" })
scatter.log.debug("d-line")
scatter.log.trace("t-line")
]]

describe("logging", function()
  teardown(function()
    scatter.close_all()
    env.cleanup()
  end)

  it("filters by level and writes text lines with fields and the pool prefix", function()
    local got = capture("warn", "text", function()
      log.info("hidden")
      log.warn("shown", { b = 2, a = "x y" })
      log.emit("error", "a.test", "pool line")
      log.emit("info", "a.test", "hidden too")
    end)
    assert.equal(2, #got)
    assert.truthy(got[1]:match('^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d WARN shown a="x y" b=2$'), got[1])
    assert.truthy(got[2]:match("^%S+ ERROR %[a%.test%] pool line$"), got[2])
  end)

  it("writes one JSON object a line with ts, level, pool, msg and the fields", function()
    local got = capture("debug", "json", function()
      log.emit("debug", "b.test", "hello", { n = 3, ok = true, f = print })
      log.info("no pool")
    end)
    assert.equal(2, #got)
    local o = cjson.decode(got[1])
    assert.equal("debug", o.level)
    assert.equal("b.test", o.pool)
    assert.equal("hello", o.msg)
    assert.equal(3, o.n)
    assert.equal(true, o.ok)
    assert.equal("string", type(o.f)) -- a function is written as text, not an error
    assert.is_true(math.abs(o.ts - os.time()) < 3600)
    local o2 = cjson.decode(got[2])
    assert.equal(cjson.null, o2.pool)
    assert.equal("no pool", o2.msg)
  end)

  it("rejects unknown levels and formats", function()
    assert.is_nil((log.set_level("loud")))
    assert.is_nil((log.set_format("xml")))
  end)

  it("takes the level and format from SCATTER_LOG / SCATTER_LOG_FORMAT and from run's options", function()
    local path = script("levels.lua", SCRIPT)
    local rc, _, err = scatter_cli("", "run " .. q(path))
    assert.equal(0, rc, err)
    local l = lines(err)
    assert.equal(3, #l, err)
    assert.truthy(l[1]:find(" ERROR e-line n=1", 1, true), err)
    assert.truthy(l[3]:find(' INFO i-line space="a b" who=me', 1, true), err)

    rc, _, err = scatter_cli("SCATTER_LOG=trace", "run " .. q(path))
    assert.equal(0, rc, err)
    assert.equal(5, #lines(err), err)

    rc, _, err = scatter_cli("SCATTER_LOG=error SCATTER_LOG_FORMAT=json", "run " .. q(path))
    assert.equal(0, rc, err)
    l = lines(err)
    assert.equal(1, #l, err)
    local o = cjson.decode(l[1])
    assert.same({ "e-line", "error", 1 }, { o.msg, o.level, o.n })

    -- the options win over the environment
    rc, _, err = scatter_cli("SCATTER_LOG=error", "run --log-level debug --log-format json " .. q(path))
    assert.equal(0, rc, err)
    l = lines(err)
    assert.equal(4, #l, err)
    for _, line in ipairs(l) do assert.is_table(cjson.decode(line)) end
    assert.equal("d-line", cjson.decode(l[4]).msg)

    rc, _, err = scatter_cli("", "run --log-level loud " .. q(path))
    assert.equal(2, rc)
    assert.truthy(err:find("unknown log level", 1, true), err)
  end)

  describe("credentials", function()
    local ng, farm, secret_proxy, wrong_proxy
    local SECRET, WRONG = "s3cr3tPW", "wr0ngPW"

    setup(function()
      ng = env.nginx()
      farm = env.farm({ "good user=alice pass=" .. SECRET, "refuse" })
      secret_proxy = "socks5h://alice:" .. SECRET .. "@" .. farm.proxies[1]
      wrong_proxy = "socks5h://alice:" .. WRONG .. "@" .. farm.proxies[1]
    end)

    local function clean(s, what)
      assert.is_nil(s:find(SECRET, 1, true), what .. " leaks the password: " .. s)
      assert.is_nil(s:find(WRONG, 1, true), what .. " leaks the password: " .. s)
    end

    it("never appear in responses, errors, log lines, metrics or proxy lists", function()
      local got = capture("trace", "text", function()
        local pool = scatter.pool({
          name = "cred.test", proxies = { secret_proxy }, metrics_log_interval = 0.05,
          rate_limit = { default_interval = 0 },
        })
        local resp, err = pool:get(ng.url("/small.txt"), { timeout = 20 })
        assert(resp, err)
        assert.equal(ng.small_text, resp.body)
        assert.equal("***@" .. farm.proxies[1], resp.proxy)
        for _, p in ipairs(pool:proxies()) do clean(p.redacted, "pool:proxies() redacted") end
        clean(require("scatter.metrics").render({ pool }), "the Prometheus text")
        scatter.sleep(0.2) -- a few summary lines
        pool:close()

        local bad = scatter.pool({
          name = "wrong.test", proxies = { wrong_proxy }, proxy_timeout = 2,
          rate_limit = { default_interval = 0 }, metrics_log_interval = 0.05,
        })
        local r2, err2 = bad:get(ng.url("/small.txt"), { timeout = 1 })
        assert.is_nil(r2)
        assert.truthy(err2:find("***@" .. farm.proxies[1], 1, true), err2)
        clean(err2, "the timeout error")
        bad:close()

        -- a crawl script logging a proxy URL by mistake
        log.info("using " .. secret_proxy, { proxy = wrong_proxy })
      end)
      assert.is_true(#got >= 3)
      clean(table.concat(got, "\n"), "the log")
      assert.truthy(table.concat(got, "\n"):find("using socks5h://***@", 1, true))
    end)

    it("are masked in configuration errors and source warnings", function()
      local ok, err = pcall(scatter.pool, { proxies = { "socks5://alice:" .. SECRET .. "@127.0.0.1:99999" } })
      assert.is_false(ok)
      assert.truthy(err:find("proxies[1]", 1, true), err)
      clean(err, "the configuration error")

      local list = script("creds.txt", farm.proxies[2] .. "\nalice:" .. SECRET .. "@nohost\n")
      local got = capture("info", "json", function()
        local pool = scatter.pool({ sources = { "file://" .. list }, metrics_log_interval = 0 })
        pool:close()
      end)
      assert.equal(1, #got)
      assert.truthy(got[1]:find("skipped 1 bad line", 1, true), got[1])
      clean(got[1], "the source warning")
    end)
  end)
end)
