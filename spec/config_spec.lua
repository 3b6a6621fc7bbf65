-- scatter.pool{} configuration: defaults and errors that name the field.
local scatter = require("scatter")
local config = require("scatter.config")

describe("pool configuration", function()
  local function err_of(cfg)
    local ok, err = pcall(scatter.pool, cfg)
    assert.is_false(ok, "expected an error")
    return err
  end

  it("fills every default of DESIGN.md section 4", function()
    local c = config.validate({ proxies = { "127.0.0.1:1" } })
    assert.same({}, c.sources)
    assert.same({ "127.0.0.1:1" }, c.proxies)
    assert.equal(600, c.source_refresh_interval)
    assert.same({ default_interval = 0.5, host_overrides = {} }, c.rate_limit)
    assert.equal(8, c.proxy_timeout)
    assert.equal(3, c.max_concurrent_per_request)
    assert.equal(100, c.max_inflight)
    assert.equal(1000, c.task_pool_capacity)
    assert.equal(30, c.health_window)
    assert.equal(30, c.cooldown_base)
    assert.equal(300, c.cooldown_max)
    assert.equal(3, c.cooldown_consecutive_fails)
    assert.equal(30, c.eviction_min_samples)
    assert.is_nil(c.state_file)
    assert.equal(300, c.state_save_interval)
    assert.equal(30, c.metrics_log_interval)
    assert.is_true(c.prefer_remote_dns)
    assert.is_nil(c.name)
    assert.equal(0, c.hedge_delay)
  end)

  it("rejects an unknown field with a did-you-mean", function()
    assert.equal("scatter.pool: unknown field 'max_inflght' (did you mean 'max_inflight'?)",
      err_of({ proxies = { "127.0.0.1:1" }, max_inflght = 3 }))
    assert.equal("scatter.pool: unknown field 'rate_limit.default_intrval' (did you mean 'default_interval'?)",
      err_of({ proxies = { "127.0.0.1:1" }, rate_limit = { default_intrval = 1 } }))
  end)

  it("rejects wrong types, negative durations and K < 1, naming the field", function()
    local p = { "127.0.0.1:1" }
    assert.truthy(err_of({ proxies = p, proxy_timeout = "8" }):find("'proxy_timeout' must be a number of seconds", 1, true))
    assert.truthy(err_of({ proxies = p, proxy_timeout = 0 }):find("'proxy_timeout' must be a duration > 0", 1, true))
    assert.truthy(err_of({ proxies = p, cooldown_base = -1 }):find("'cooldown_base' must be a duration >= 0", 1, true))
    assert.truthy(err_of({ proxies = p, max_concurrent_per_request = 0 })
      :find("'max_concurrent_per_request' must be an integer from 1", 1, true))
    assert.truthy(err_of({ proxies = p, max_inflight = 2.5 }):find("'max_inflight' must be an integer", 1, true))
    assert.truthy(err_of({ proxies = p, prefer_remote_dns = "yes" }):find("'prefer_remote_dns' must be a boolean", 1, true))
    assert.truthy(err_of({ proxies = p, classifier = 3 }):find("'classifier' must be a function", 1, true))
    assert.truthy(err_of({ proxies = p, hedge_delay = "soon" }):find("'hedge_delay' must be", 1, true))
    assert.truthy(err_of({ proxies = p, cooldown_base = 100, cooldown_max = 50 }):find("'cooldown_max' must be >= cooldown_base", 1, true))
    assert.truthy(err_of({ proxies = { 3 } }):find("'proxies' must be a list of strings", 1, true))
    assert.truthy(err_of({ proxies = p, rate_limit = { host_overrides = { ["a.com"] = -1 } } })
      :find("rate_limit.host_overrides[\"a.com\"]", 1, true))
  end)

  it("rejects a bad inline proxy, naming it", function()
    assert.equal('scatter.pool: proxies[2]: bad port: "127.0.0.1:99999"',
      err_of({ proxies = { "127.0.0.1:1080", "127.0.0.1:99999" } }))
    assert.equal('scatter.pool: proxies[1]: unknown scheme (socks5, socks5h, socks4, socks4a, http, https): "socks6://127.0.0.1:8080"',
      err_of({ proxies = { "socks6://127.0.0.1:8080" } }))
  end)

  it("falls back to the built-in free lists when given neither sources nor proxies", function()
    local c = config.validate({})
    assert.same(config.DEFAULT_SOURCES, c.sources)
    assert.is_true(#c.sources > 0)
    for _, u in ipairs(c.sources) do assert.truthy(u:match("^https://"), u) end
    assert.same({}, config.validate({ sources = { "file:///x" } }).proxies)
    assert.same({ "file:///x" }, config.validate({ sources = { "file:///x" } }).sources)
  end)

  it("rejects a wrong type for every field, and zero where a duration must pass", function()
    local p = { "127.0.0.1:1" }
    for field in pairs(config.FIELDS) do
      local cfg = { proxies = p }
      cfg[field] = field == "proxies" and 3 or coroutine.create(print)
      local err = err_of(cfg)
      assert.truthy(err:find("field '" .. field .. "' must be", 1, true), err)
    end
    for _, field in ipairs({ "proxy_timeout", "source_refresh_interval", "state_save_interval" }) do
      local cfg = { proxies = p }
      cfg[field] = 0
      assert.truthy(err_of(cfg):find("field '" .. field .. "' must be a duration > 0", 1, true), field)
      cfg[field] = -1
      assert.truthy(err_of(cfg):find("field '" .. field .. "' must be a duration > 0", 1, true), field)
    end
    for _, field in ipairs({ "cooldown_base", "cooldown_max", "metrics_log_interval" }) do
      local cfg = { proxies = p, cooldown_base = 0 }
      cfg[field] = 0
      assert.truthy(config.validate(cfg)) -- 0 means "none" or "off" here
      cfg[field] = -0.5
      assert.truthy(err_of(cfg):find("field '" .. field .. "' must be a duration >= 0", 1, true), field)
    end
    assert.truthy(err_of({ proxies = p, rate_limit = { default_interval = -1 } })
      :find("'rate_limit.default_interval' must be a duration >= 0", 1, true))
    assert.truthy(err_of({ proxies = p, max_concurrent_per_request = -3 })
      :find("'max_concurrent_per_request' must be an integer from 1", 1, true))
    assert.truthy(err_of({ proxies = p, [1] = true }):find("configuration keys must be field names", 1, true))
  end)

  it("reads file:// sources, merging duplicates and counting bad lines", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write("# a list\r\n127.0.0.1:1080\r\n  socks5://127.0.0.1:1080  \n\nsocks5h://u:p@[::1]:1081\nnot a proxy\nftp://x:1\n")
    f:close()
    local logged = {}
    local log = require("scatter.log")
    local sink = log.sink
    log.sink = function(line) logged[#logged + 1] = line end
    local pool = scatter.pool({ sources = { "file://" .. path }, metrics_log_interval = 0 })
    log.sink = sink
    os.remove(path)
    local keys = {}
    for _, p in ipairs(pool:proxies()) do keys[#keys + 1] = p.key end
    assert.same({ "127.0.0.1:1080", "u:p@[::1]:1081" }, keys)
    assert.equal(1, #logged)
    assert.truthy(logged[1]:find('skipped 2 bad line(s), first: "not a proxy"', 1, true), logged[1])
    pool:close()
  end)
end)
