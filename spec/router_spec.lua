-- scatter.router: one pool per host, routed by the URL's host; a host whose
-- proxies are all blocked or cooling down holds up no other host.
local env = require("support.env")
local log = require("scatter.log")
local scatter = require("scatter")

describe("router", function()
  local ng, farm, good

  setup(function()
    ng = env.nginx()
    farm = env.farm({ "good count=4" })
    good = farm.by_profile.good
  end)

  teardown(function()
    scatter.close_all()
    env.cleanup()
  end)

  local function host_cfg(extra)
    local cfg = { proxies = good, metrics_log_interval = 0, rate_limit = { default_interval = 0 } }
    for k, v in pairs(extra or {}) do cfg[k] = v end
    return cfg
  end

  local function raises(fn)
    local ok, err = pcall(fn)
    assert.is_false(ok, "expected an error")
    return tostring(err)
  end

  -- Polls cond() on the scatter loop; the deadline only bounds a hang.
  local function wait_for(cond, what)
    for _ = 1, 600 do
      if cond() then return end
      scatter.sleep(0.05)
    end
    error("gave up waiting for " .. what)
  end

  it("routes by the URL's host, case-insensitively, ignoring the port", function()
    local r = scatter.router({ ["A.test"] = host_cfg(), ["b.test."] = host_cfg() })
    assert.same({ "a.test", "b.test" }, r:hosts())
    local resp, err = r:get(ng.host_url("a.TEST", "/small.txt"), { timeout = 10 })
    assert.is_nil(err)
    assert.equal(ng.small_text, resp.body)
    assert.truthy(r:request({ url = "http://B.Test:" .. ng.port .. "/small.txt", timeout = 10 }))
    local h = assert(r:submit({ url = ng.host_url("b.test", "/small.txt") }))
    assert.equal(ng.small_text, h:wait(10).body)
    h = assert(r:try_submit({ url = ng.host_url("b.test.", "/small.txt") }))
    assert.equal(ng.small_text, h:wait(10).body)
    -- the same host on another port is the same pool
    local _, err2 = r:get("http://a.test:1/small.txt", { timeout = 0.2 })
    assert.truthy(err2:match("^timeout"), err2)
    assert.equal(1, r:metrics("a.test").completed_tasks)
    assert.equal(3, r:metrics("B.TEST").completed_tasks)
    assert.equal(r:pool("a.test"), r:pool("A.Test"))
    assert.equal("a.test", r:pool("a.test").name)
    r:close()
  end)

  it("answers unknown_host for a host it has no pool for, invalid_request for a bad URL", function()
    local r = scatter.router({ ["a.test"] = host_cfg() })
    assert.same({ nil, "unknown_host: c.test" }, { r:get("http://C.test/x") })
    assert.same({ nil, "unknown_host: c.test" }, { r:request({ url = "https://c.test:8443/" }) })
    assert.same({ nil, "unknown_host: c.test" }, { r:submit({ url = "http://c.test/" }) })
    assert.same({ nil, "unknown_host: c.test" }, { r:try_submit({ url = "http://c.test/" }) })
    assert.same({ nil, "unknown_host: sub.a.test" }, { r:get("http://sub.a.test/") })
    assert.same({ nil, "unknown_host: c.test" }, { r:metrics("c.test") })
    assert.same({ nil, "unknown_host: c.test" }, { r:pool("c.test") })
    for _, u in ipairs({ "ftp://a.test/", "a.test/x", "http://", "http://a.test:99999/" }) do
      local resp, err = r:get(u)
      assert.is_nil(resp)
      assert.truthy(err:match("^invalid_request: "), u .. ": " .. err)
    end
    local _, err = r:request({ url = "http://a.test/", bogus = 1 })
    assert.equal("invalid_request: unknown field 'bogus'", err)
    r:close()
  end)

  it("rejects a bad router table, naming the host", function()
    assert.equal([[scatter.router["a.test"]: unknown field 'max_inflght' (did you mean 'max_inflight'?)]],
      raises(function() scatter.router({ ["a.test"] = host_cfg({ max_inflght = 3 }) }) end))
    assert.equal([[scatter.router["b.test"]: field 'proxy_timeout' must be a duration > 0 (seconds, at most 2592000), got 0]],
      raises(function() scatter.router({ ["a.test"] = host_cfg(), ["b.test"] = host_cfg({ proxy_timeout = 0 }) }) end))
    assert.truthy(raises(function() scatter.router({ ["a.test:8080"] = host_cfg() }) end)
      :find('key "a.test:8080" is a host with a port', 1, true))
    assert.truthy(raises(function() scatter.router({ ["http://a.test/"] = host_cfg() }) end)
      :find('key "http://a.test/" is a URL', 1, true))
    assert.truthy(raises(function() scatter.router({ ["::1"] = host_cfg() }) end):find("without brackets", 1, true))
    assert.truthy(raises(function() scatter.router({ ["a b"] = host_cfg() }) end):find('key "a b" is', 1, true))
    assert.equal([[scatter.router: keys "A.test" and "a.test" name the same host]],
      raises(function() scatter.router({ ["a.test"] = host_cfg(), ["A.test"] = host_cfg() }) end))
    assert.equal([[scatter.router["a.test"]: configuration must be a table, got number]],
      raises(function() scatter.router({ ["a.test"] = 3 }) end))
    assert.truthy(raises(function() scatter.router({ host_cfg() }) end):find("keys must be host names", 1, true))
    assert.truthy(raises(function() scatter.router({}) end):find("no hosts", 1, true))
    -- a failed router leaves no pool open behind it
    local open = 0
    for _ in pairs(require("scatter.pool").open) do open = open + 1 end
    assert.equal(0, open)
  end)

  it("gives each host its own pool, config and [host] log prefix", function()
    local lines = {}
    local sink = log.sink
    log.sink = function(line) lines[#lines + 1] = line end
    local ok, err = pcall(function()
      local r = scatter.router({
        ["a.test"] = host_cfg({ metrics_log_interval = 0.1, max_inflight = 7 }),
        ["b.test"] = host_cfg({ metrics_log_interval = 0.1, name = "bee" }),
      })
      assert.equal(7, r:pool("a.test").cfg.max_inflight)
      assert.equal(100, r:pool("b.test").cfg.max_inflight)
      assert.is_not.equal(r:pool("a.test"), r:pool("b.test"))
      wait_for(function()
        local a, b = false, false
        for _, l in ipairs(lines) do
          a = a or l:find("INFO [a.test] throughput=", 1, true) ~= nil
          b = b or l:find("INFO [bee] throughput=", 1, true) ~= nil
        end
        return a and b
      end, "a metrics line from each host")
      r:close()
    end)
    log.sink = sink
    assert(ok, err)
  end)

  it("reports metrics for one host or a table of all hosts", function()
    local r = scatter.router({ ["a.test"] = host_cfg(), ["b.test"] = host_cfg() })
    assert.truthy(r:get(ng.host_url("a.test", "/small.txt"), { timeout = 10 }))
    local all = r:metrics()
    assert.same({ "a.test", "b.test" }, (function()
      local ks = {}
      for k in pairs(all) do ks[#ks + 1] = k end
      table.sort(ks)
      return ks
    end)())
    assert.equal(1, all["a.test"].completed_tasks)
    assert.equal(0, all["b.test"].completed_tasks)
    assert.equal(4, all["b.test"].total_proxies)
    r:close()
    -- after close: the final figures, and every call says closed
    assert.equal(1, r:metrics("a.test").completed_tasks)
    assert.same({ nil, "closed" }, { r:get(ng.host_url("a.test", "/small.txt")) })
    assert.same({ nil, "closed" }, { r:try_submit({ url = ng.host_url("b.test", "/") }) })
  end)

  it("ends every host's pending tasks with closed on close", function()
    local r = scatter.router({ ["a.test"] = host_cfg(), ["b.test"] = host_cfg() })
    local ha = assert(r:submit({ url = ng.host_url("a.test", "/status/403") }))
    local hb = assert(r:submit({ url = ng.host_url("b.test", "/status/403") }))
    r:close()
    assert.same({ nil, "closed" }, { ha:wait(1) })
    assert.same({ nil, "closed" }, { hb:wait(1) })
  end)

  it("isolates hosts: one answering only 403 does not hold up another crawled through the same proxies", function()
    local n_blocked, n_open = 40, 300
    local r = scatter.router({
      -- every pair of this host cools down after two 403s
      ["cooling.test"] = host_cfg({ cooldown_consecutive_fails = 2, cooldown_base = 120, cooldown_max = 120,
        eviction_min_samples = 1000, task_pool_capacity = n_blocked }),
      -- this host evicts every proxy after four 403s
      ["dead.test"] = host_cfg({ eviction_min_samples = 4, cooldown_consecutive_fails = 1000,
        task_pool_capacity = n_blocked }),
      ["open.test"] = host_cfg({ max_inflight = 40, proxy_timeout = 20, task_pool_capacity = n_open }),
    })
    local blocked = {}
    for _, host in ipairs({ "cooling.test", "dead.test" }) do
      for i = 1, n_blocked do
        blocked[#blocked + 1] = assert(r:try_submit({ url = ng.host_url(host, "/status/403?i=" .. i) }))
      end
      -- its queue is full: only that host's submitters wait
      assert.same({ nil, "pool_full" }, { r:try_submit({ url = ng.host_url(host, "/status/403") }) })
    end
    wait_for(function()
      return r:metrics("cooling.test").cooldown_proxies == 4 and r:metrics("dead.test").dead_proxies == 4
    end, "every proxy cooling down for cooling.test and dead for dead.test")
    local before = {
      cooling = r:metrics("cooling.test").attempts_started,
      dead = r:metrics("dead.test").attempts_started,
    }

    local ok = 0
    scatter.run(function()
      local ths = {}
      for i = 1, n_open do
        ths[i] = scatter.spawn(function()
          local resp, err = r:get(ng.host_url("open.test", "/small.txt?i=" .. i), { timeout = 60 })
          assert(resp, err)
          assert(resp.body == ng.small_text)
          return true
        end)
      end
      for _, res in ipairs(scatter.wait_all(unpack(ths))) do
        if res[1] == true and res[2] == true then ok = ok + 1 end
      end
    end)
    assert.equal(n_open, ok)

    local m = r:metrics()
    local open, cooling, dead = m["open.test"], m["cooling.test"], m["dead.test"]
    assert.equal(n_open, open.completed_tasks)
    -- the open host never lacked a proxy, though the same proxies are
    -- cooling down or dead for the other two hosts
    assert.equal(0, open.zero_available_events)
    assert.equal(0, open.skipped_cooldown)
    assert.equal(0, open.cooldown_proxies)
    assert.equal(0, open.dead_proxies)
    assert.equal(4, open.healthy_proxies)
    -- while the blocked hosts' tasks all wait, none delivered, none dropped
    assert.equal(0, cooling.completed_tasks)
    assert.equal(0, dead.completed_tasks)
    assert.equal(n_blocked, cooling.pending_tasks)
    assert.equal(n_blocked, dead.pending_tasks)
    assert.equal(4, cooling.cooldown_proxies)
    assert.equal(4, dead.dead_proxies)
    assert.is_true(cooling.zero_available_events > 0)
    for _, h in ipairs(blocked) do assert.falsy(h:done()) end
    -- and no cooldown ran out meanwhile: the crawl never waited for the
    -- blocked hosts' timers (a pass that slept until them would have let
    -- the 120 s cooldowns end and new attempts start)
    assert.equal(before.cooling, cooling.attempts_started)
    assert.equal(before.dead, dead.attempts_started)
    r:close()
    for _, h in ipairs(blocked) do assert.same({ nil, "closed" }, { h:wait(0) }) end
  end)
end)
