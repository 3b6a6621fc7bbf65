-- One real request end to end: real libcurl through real SOCKS5 servers
-- (the project's farm and Debian's microsocks) to a real nginx.
local env = require("support.env")
local scatter = require("scatter")

describe("transport", function()
  local ng, farm, ms, good

  setup(function()
    ng = env.nginx()
    farm = env.farm({
      "good count=4",
      "refuse",
      "blackhole",
      "handshake_fail",
      "drop_mid bytes=4096",
      "good user=alice pass=p@ss:w0rd",
    })
    ms = env.microsocks()
    good = { unpack(farm.by_profile.good, 1, 4) } -- the 5th needs credentials
  end)

  teardown(function()
    scatter.close_all()
    env.cleanup()
  end)

  local function pool_of(proxies, extra)
    local cfg = { proxies = proxies, metrics_log_interval = 0 }
    for k, v in pairs(extra or {}) do cfg[k] = v end
    return scatter.pool(cfg)
  end

  -- `threads` threads, each getting /small.txt `each` times (tag makes the
  -- URLs unique); returns how many threads got every body intact.
  local function crawl(pool, threads, each, tag, timeout)
    local ok = 0
    scatter.run(function()
      local ths = {}
      for i = 1, threads do
        ths[i] = scatter.spawn(function()
          for j = 1, each do
            local resp, err = pool:get(ng.url("/small.txt?" .. tag .. i .. "-" .. j), { timeout = timeout })
            assert(resp, err)
            assert(resp.body == ng.small_text)
          end
          return true
        end)
      end
      for _, r in ipairs(scatter.wait_all(unpack(ths))) do
        if r[1] == true then ok = ok + 1 end
      end
    end)
    return ok
  end

  it("fetches through the farm's good proxies with the full response table", function()
    local pool = pool_of(good)
    local resp, err = pool:get(ng.url("/headers"), { timeout = 10 })
    assert.is_nil(err)
    assert.equal(200, resp.status)
    assert.equal("yes", resp.headers["x-scatter"])
    assert.equal("table", type(resp.headers["set-cookie"])) -- sent twice
    assert.equal(ng.url("/headers"), resp.url)
    assert.truthy(resp.proxy:match("^127%.0%.0%.1:%d+$"))
    assert.is_true(resp.attempts >= 1)
    assert.is_true(resp.elapsed > 0 and resp.elapsed < 10)
    pool:close()
  end)

  it("fetches through Debian's microsocks", function()
    local pool = pool_of({ ms.addr })
    local resp, err = pool:get(ng.url("/small.txt"), { timeout = 10 })
    assert.is_nil(err)
    assert.equal(ng.small_text, resp.body)
    pool:close()
  end)

  it("sends the hostname to the proxy (socks5h, ATYP 3) for a name the local resolver cannot resolve", function()
    local pool = pool_of({ farm.by_profile.good[1] })
    local url = ng.host_url("remote-only.test", "/small.txt")
    local resp, err = pool:get(url, { timeout = 10 })
    assert.is_nil(err)
    assert.equal(ng.small_text, resp.body)
    local seen
    for _, e in ipairs(farm.log_lines()) do
      if e.host == "remote-only.test" then seen = e end
    end
    assert.truthy(seen, "the farm saw no request for remote-only.test")
    assert.equal(3, seen.atyp)
    pool:close()
  end)

  it("resolves locally with prefer_remote_dns = false", function()
    local pool = pool_of({ farm.by_profile.good[2] }, { prefer_remote_dns = false })
    local resp, err = pool:get(ng.url("/small.txt"), { timeout = 10 })
    assert.is_nil(err)
    assert.equal(200, resp.status)
    local port = tonumber(farm.by_profile.good[2]:match(":(%d+)$"))
    for _, e in ipairs(farm.log_lines()) do
      if e.port == port then assert.equal(1, e.atyp) end
    end
    -- a name only the proxy knows cannot be resolved here
    local _, err2 = pool:get(ng.host_url("remote-only.test", "/small.txt"), { timeout = 2 })
    assert.truthy(err2:match("^timeout: last error: socks_error: .*%[resolve_host%]"), err2)
    pool:close()
  end)

  local function failure_of(profile, opts, timeout)
    local pool = pool_of({ farm.by_profile[profile][1] }, opts)
    local t0 = scatter.now()
    local resp, err = pool:get(ng.url((opts and opts.path) or "/small.txt"), { timeout = timeout or 2 })
    local m = pool:metrics()
    pool:close()
    assert.is_nil(resp)
    return err, scatter.now() - t0, m
  end

  it("reports a refused proxy as proxy_refused", function()
    local err, _, m = failure_of("refuse")
    assert.truthy(err:match("^timeout: last error: proxy_refused: .*%(proxy 127%.0%.0%.1:%d+%)$"), err)
    assert.is_true(m.verdicts.transport >= 1)
  end)

  it("honours proxy_timeout on a blackholed proxy", function()
    local err, elapsed = failure_of("blackhole", { proxy_timeout = 0.5 }, 1.2)
    assert.truthy(err:match("^timeout: last error: proxy_timeout: "), err)
    assert.is_true(elapsed >= 1.2 and elapsed < 3, "elapsed " .. elapsed)
  end)

  it("reports a failed SOCKS handshake as socks_error", function()
    local err = failure_of("handshake_fail")
    assert.truthy(err:match("^timeout: last error: socks_error: "), err)
  end)

  it("reports a proxy that drops mid-body as dropped", function()
    local pool = pool_of({ farm.by_profile.drop_mid[1] })
    local resp, err = pool:get(ng.url("/big.bin"), { timeout = 2 })
    pool:close()
    assert.is_nil(resp)
    assert.truthy(err:match("^timeout: last error: dropped: "), err)
  end)

  it("gives a task with no eligible proxy left a timeout that says what held it", function()
    local pool = pool_of({ farm.by_profile.good[1] }, { rate_limit = { default_interval = 30 } })
    assert.truthy(pool:get(ng.url("/small.txt"), { timeout = 5 }))
    local _, err = pool:get(ng.url("/small.txt"), { timeout = 0.3 })
    assert.equal("timeout: no attempt started (1 usable proxy, none free: rate limits or max_inflight)", err)
    assert.is_true(pool:metrics().zero_available_events >= 1)
    pool:close()
    -- proxies resting after failures: said so (a bare "timeout" read as a
    -- slow target)
    pool = pool_of({ "127.0.0.1:1", "127.0.0.1:2" },
      { cooldown_consecutive_fails = 1, cooldown_base = 60, cooldown_max = 60 })
    _, err = pool:get(ng.url("/small.txt"), { timeout = 1 })
    assert.truthy(err:match("^timeout: last error: proxy_refused: "), err)
    _, err = pool:get(ng.url("/small.txt"), { timeout = 0.3 })
    assert.equal("timeout: no attempt started (2 of 2 usable proxies cooling down after failures)", err)
    assert.is_true(pool:metrics().zero_available_events >= 1)
    pool:close()
  end)

  it("uses proxy credentials and never shows them", function()
    local pool = pool_of({ "socks5h://alice:p@ss:w0rd@" .. farm.proxies[9] })
    local resp, err = pool:get(ng.url("/small.txt"), { timeout = 10 })
    assert.is_nil(err)
    assert.equal(ng.small_text, resp.body)
    assert.truthy(resp.proxy:match("^%*%*%*@127%.0%.0%.1:%d+$"), resp.proxy)
    pool:close()
    local bad = pool_of({ "alice:wrong@" .. farm.proxies[9] })
    local _, err2 = bad:get(ng.url("/small.txt"), { timeout = 1 })
    assert.truthy(err2:match("proxy_auth: .*%[user_rejected%]"), err2)
    assert.falsy(err2:find("wrong", 1, true))
    assert.falsy(err2:find("alice", 1, true))
    bad:close()
  end)

  it("verifies HTTPS through the proxy with the given CA and fails with a wrong one", function()
    local pool = pool_of({ farm.by_profile.good[1] }, { ca_file = ng.ca })
    local resp, err = pool:get(ng.tls_url("anything.test", "/small.txt"), { timeout = 10 })
    assert.is_nil(err)
    assert.equal(ng.small_text, resp.body)
    pool:close()
    local wrong = pool_of({ farm.by_profile.good[2] }, { ca_file = ng.wrong_ca })
    local _, err2 = wrong:get(ng.tls_url("anything.test", "/small.txt"), { timeout = 1.5 })
    assert.truthy(err2:match("^timeout: last error: tls_error: "), err2)
    wrong:close()
    -- a fresh pool: the failures above put that proxy in cooldown
    local lax = pool_of({ farm.by_profile.good[3] }, { ca_file = ng.wrong_ca })
    local resp3, err3 = lax:get(ng.tls_url("anything.test", "/small.txt"), { timeout = 10, insecure = true })
    assert.is_nil(err3)
    assert.equal(ng.small_text, resp3.body)
    lax:close()
  end)

  it("delivers a response of several MiB intact", function()
    local pool = pool_of(good)
    local resp, err = pool:get(ng.url("/big.bin"), { timeout = 20 })
    assert.is_nil(err)
    assert.equal(ng.big_size, #resp.body)
    assert.is_true(resp.body == env.big_content(), "the body differs from the file")
    pool:close()
  end)

  it("sends method, headers and body", function()
    local pool = pool_of(good)
    local resp, err = pool:request({
      method = "POST", url = ng.url("/echo"), body = "a=1&b=2",
      headers = { ["X-Test"] = "hello", ["Content-Type"] = "text/plain" }, timeout = 10,
    })
    assert.is_nil(err)
    assert.truthy(resp.body:find("method=POST", 1, true), resp.body)
    assert.truthy(resp.body:find("x-test=hello", 1, true), resp.body)
    assert.truthy(resp.body:find("body=a=1&b=2", 1, true), resp.body)
    assert.equal(1, resp.attempts) -- a POST takes one path at a time
    pool:close()
  end)

  -- The loop keeps a kept-alive connection's socket registered between
  -- transfers (src/net/loop.c); here the proxy closes every such
  -- connection while it sits idle, which the loop must notice without
  -- handing curl a dead socket, without keeping scatter.run alive, and
  -- without leaking the descriptors.
  it("carries on when the proxy closes its idle connections, leaving no socket behind", function()
    local function sockets() return (env.open_fds("socket:")) end
    local before = sockets()
    local pool = pool_of({ good[1] }, { rate_limit = { default_interval = 0 }, max_inflight = 8 })
    assert.equal(8, crawl(pool, 8, 5, "a", 10))
    assert.is_true(sockets() > before, "no connection kept alive, nothing tested")
    -- the kept sockets alone keep no loop alive (a wait on nothing is then
    -- a deadlock error, not a hang)
    local _, alive = require("scatter.core").poll(0, {})
    assert.is_false(alive)
    -- index 0 is good[1]: the farm lists its proxies in config order
    assert.truthy(farm.control("down 0"):match("^OK"))
    assert.truthy(farm.control("up 0"):match("^OK"))
    scatter.run(function() scatter.sleep(0.05) end) -- the closes arrive while idle
    assert.equal(8, crawl(pool, 8, 5, "b", 10))
    pool:close()
    assert.equal(before, sockets())
  end)

  it("completes 1,000 concurrent coroutines, one request each", function()
    local pool = pool_of(good, {
      rate_limit = { default_interval = 0 }, max_inflight = 200, task_pool_capacity = 1000,
    })
    local ok = crawl(pool, 1000, 1, "i=", 30)
    assert.equal(1000, ok)
    local m = pool:metrics()
    assert.equal(1000, m.completed_tasks)
    assert.equal(0, m.pending_tasks)
    assert.equal(0, m.inflight)
    pool:close()
  end)
end)
