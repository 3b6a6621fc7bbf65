-- Request options (method, headers, body, timeout, race, follow_redirects,
-- max_body, insecure), invalid requests, and the stable error strings.
local env = require("support.env")
local scatter = require("scatter")

local MiB = 1024 * 1024

describe("request options", function()
  local ng, farm, good

  setup(function()
    ng = env.nginx({ files = { ["over16.bin"] = string.rep("z", 16 * MiB + 1) } })
    farm = env.farm({ "good count=6", "blackhole" })
    good = farm.by_profile.good
  end)

  teardown(function()
    scatter.close_all()
    env.cleanup()
  end)

  local function pool_of(proxies, extra)
    local cfg = { proxies = proxies, metrics_log_interval = 0, rate_limit = { default_interval = 0 } }
    for k, v in pairs(extra or {}) do cfg[k] = v end
    return scatter.pool(cfg)
  end

  -- 3xx are answers here, so a redirect not followed can be looked at
  local function keep_redirects(resp)
    if resp.status >= 300 and resp.status < 400 then return "final" end
    return resp.status == 200 and "success" or "proxy_blocked"
  end

  it("sends any method; HEAD gets headers only and the default classifier accepts it", function()
    local pool = pool_of(good)
    for _, m in ipairs({ "PUT", "DELETE", "PATCH", "post" }) do
      local resp, err = pool:request({ method = m, url = ng.url("/echo"), body = "m", timeout = 10 })
      assert.is_nil(err)
      assert.truthy(resp.body:find("method=" .. m:upper(), 1, true), resp.body)
    end
    local resp, err = pool:request({ method = "HEAD", url = ng.url("/small.txt"), timeout = 10 })
    assert.is_nil(err)
    assert.equal(200, resp.status)
    assert.equal("", resp.body)
    assert.equal(tostring(#ng.small_text), resp.headers["content-length"])
    assert.equal("HEAD", resp.method)
    pool:close()
  end)

  -- src/net/loop.c reuses curl easy handles, plain ones without a reset:
  -- with one transfer at a time every request below runs on the handle
  -- the one before it left, so no option may carry over.
  it("carries no option from one request to the next on a reused transfer handle", function()
    local pool = pool_of({ good[1] }, { max_inflight = 1, classifier = keep_redirects })
    local function req(r)
      r.timeout = 10
      local resp, err = pool:request(r)
      assert(resp, err)
      return resp
    end
    assert.equal("", req({ method = "HEAD", url = ng.url("/small.txt") }).body)
    assert.equal(ng.small_text, req({ url = ng.url("/small.txt") }).body) -- not HEAD any more
    local echo = req({ url = ng.url("/echo"), headers = { ["X-Test"] = "one" } }).body
    assert.truthy(echo:find("method=GET\nx-test=one\n", 1, true), echo)
    echo = req({ url = ng.url("/echo") }).body -- the header is gone
    assert.truthy(echo:find("method=GET\nx-test=\n", 1, true), echo)
    echo = req({ method = "POST", url = ng.url("/echo"), body = "b1" }).body
    assert.truthy(echo:find("method=POST", 1, true) and echo:find("body=b1", 1, true), echo)
    echo = req({ url = ng.url("/echo") }).body -- a GET again, without the body
    assert.truthy(echo:find("method=GET", 1, true) and echo:find("body=$") , echo)
    assert.equal("landed\n", req({ url = ng.url("/hops/xx"), follow_redirects = true }).body)
    assert.equal(302, req({ url = ng.url("/hops/xx") }).status) -- not followed any more
    pool:close()
  end)

  it("sends headers (repeated values too) and a body with newlines and NULs", function()
    local pool = pool_of(good)
    local body = "line1\nline2\r\nend"
    local resp, err = pool:request({
      method = "POST", url = ng.url("/echo"), body = body, timeout = 10,
      headers = { ["X-Test"] = "v1", ["Content-Type"] = "text/x-scatter", Accept = { "a/b", "c/d" } },
    })
    assert.is_nil(err)
    assert.truthy(resp.body:find("x-test=v1", 1, true), resp.body)
    assert.truthy(resp.body:find("content-type=text/x-scatter", 1, true), resp.body)
    assert.truthy(resp.body:find("body=" .. body, 1, true), resp.body)
    pool:close()
  end)

  it("rejects a header name or value with CR or LF before anything is sent", function()
    local pool = pool_of(good)
    local cases = {
      { ["X-A"] = "ok\r\nX-Injected: 1" },
      { ["X-A"] = "ok\nX-Injected: 1" },
      { ["X-A"] = "ok\r" },
      { ["X-A\r\nX-B"] = "v" },
      { ["X-A\n"] = "v" },
      { ["X-A"] = { "fine", "bad\n" } },
    }
    for i, h in ipairs(cases) do
      local resp, err = pool:request({ url = ng.url("/small.txt"), headers = h, timeout = 5 })
      assert.is_nil(resp)
      assert.truthy(err and err:match("^invalid_request: "), "case " .. i .. ": " .. tostring(err))
    end
    assert.equal(0, pool:metrics().attempts_started)
    pool:close()
  end)

  it("ends a task at the request's timeout, with the last attempt's error", function()
    local pool = pool_of({ farm.by_profile.blackhole[1] }, { proxy_timeout = 0.3 })
    local resp, err = pool:get(ng.url("/small.txt"), { timeout = 1 })
    assert.is_nil(resp)
    assert.truthy(err:match("^timeout: last error: proxy_timeout: "), err)
    assert.equal(0, pool:metrics().inflight)
    pool:close()
  end)

  it("races a GET by default, takes one path with race = false", function()
    local pool = pool_of(good)
    local resp = assert(pool:get(ng.url("/small.txt"), { timeout = 10 }))
    assert.is_true(resp.attempts > 1, "a GET used " .. resp.attempts .. " path(s)")
    local started = pool:metrics().attempts_started
    resp = assert(pool:get(ng.url("/small.txt"), { timeout = 10, race = false }))
    assert.equal(1, resp.attempts)
    assert.equal(started + 1, pool:metrics().attempts_started)
    pool:close()
  end)

  it("does not follow redirects unless asked, then follows up to 5 hops", function()
    local pool = pool_of({ good[1] }, { classifier = keep_redirects })
    local resp, err = pool:get(ng.url("/status/302"), { timeout = 10 })
    assert.is_nil(err)
    assert.equal(302, resp.status)
    assert.equal("/small.txt", resp.headers.location)
    assert.equal(ng.url("/status/302"), resp.url)

    resp, err = pool:get(ng.url("/status/302"), { timeout = 10, follow_redirects = true })
    assert.is_nil(err)
    assert.equal(200, resp.status)
    assert.equal(ng.small_text, resp.body)
    assert.equal(ng.url("/small.txt"), resp.url)
    -- the headers are the last response's, not a mix of every hop's
    assert.is_nil(resp.headers.location)

    resp, err = pool:get(ng.url("/hops/xxxxx"), { timeout = 10, follow_redirects = true })
    assert.is_nil(err)
    assert.equal("landed\n", resp.body)
    assert.equal(ng.url("/hops/"), resp.url)
    pool:close()

    -- a sixth hop is one too many: a failure of the attempt
    local strict = pool_of({ good[2] }, { classifier = keep_redirects })
    resp, err = strict:get(ng.url("/hops/xxxxxx"), { timeout = 1.5, follow_redirects = true })
    assert.is_nil(resp)
    assert.truthy(err:match("^timeout: last error: too_many_redirects: "), err)
    strict:close()
  end)

  it("fails an attempt whose body grows past max_body (16 MiB by default), charging no pair", function()
    for _, case in ipairs({
      { good[3], "/over16.bin", nil, 16 * MiB },
      { good[5], "/big.bin", MiB, MiB },
    }) do
      local pool = pool_of({ case[1] })
      local resp, err = pool:get(ng.url(case[2]), { timeout = 2, max_body = case[3] })
      assert.is_nil(resp)
      assert.truthy(err:match("^timeout: last error: too_large: body exceeds max_body %(" .. case[4] .. " bytes%)"), err)
      -- the target's size, not the proxy's fault: blamed as a transport
      -- failure, one large file cooled every proxy of the pool in turn
      local m = pool:metrics()
      assert.is_true(m.verdicts.target_error >= 1, "too_large must count as the target's")
      assert.equal(0, m.verdicts.transport)
      assert.equal(0, m.cooldown_proxies)
      assert.equal(0, pool:proxies()[1].successes)
      pool:close()
    end

    local roomy = pool_of({ good[4] })
    local resp, err = roomy:get(ng.url("/over16.bin"), { timeout = 30, max_body = 17 * MiB })
    assert.is_nil(err)
    assert.equal(16 * MiB + 1, #resp.body)
    resp, err = roomy:get(ng.url("/small.txt"), { timeout = 10, max_body = #ng.small_text })
    assert.is_nil(err)
    assert.equal(ng.small_text, resp.body)
    roomy:close()
  end)

  it("skips TLS verification for an insecure request only", function()
    local pool = pool_of({ good[1] }, { ca_file = ng.wrong_ca, proxy_timeout = 2 })
    local url = ng.tls_url("anything.test", "/small.txt")
    local resp, err = pool:get(url, { timeout = 10, insecure = true })
    assert.is_nil(err)
    assert.equal(ng.small_text, resp.body)
    -- the next request verifies again, even over a connection still open
    resp, err = pool:get(url, { timeout = 1.5 })
    assert.is_nil(resp)
    assert.truthy(err:match("^timeout: last error: tls_error: "), err)
    pool:close()
  end)

  it("rejects a URL that is not http(s) or does not parse, and bad options", function()
    local pool = pool_of(good)
    local bad = {
      { url = "ftp://127.0.0.1/x" },
      { url = "file:///etc/passwd" },
      { url = "127.0.0.1/small.txt" },
      { url = "http://" },
      { url = "http:///path" },
      { url = "http://a b.test/" },
      { url = "http://127.0.0.1:99999/" },
      { url = "http://127.0.0.1:0/" },
      { url = "http://exa<mple.test/" },
      {},
      { url = 42 },
      { url = ng.url("/"), method = "GE T" },
      { url = ng.url("/"), body = 5 },
      { url = ng.url("/"), timeout = -1 },
      { url = ng.url("/"), timeout = "10" },
      { url = ng.url("/"), max_body = -5 },
      { url = ng.url("/"), max_body = 1.5 },
      { url = ng.url("/"), headers = "x" },
      { url = ng.url("/"), tiemout = 3 },
    }
    for i, req in ipairs(bad) do
      local resp, err = pool:request(req)
      assert.is_nil(resp)
      assert.truthy(err and err:match("^invalid_request: .+"), "case " .. i .. ": " .. tostring(err))
      local h, err2 = pool:try_submit(req)
      assert.is_nil(h)
      assert.equal(err, err2)
    end
    assert.equal(0, pool:metrics().attempts_started)
    local _, err = pool:get(ng.url("/"), { method = "POST" })
    assert.truthy(err:match("^invalid_request: "), err)
    pool:close()
  end)
end)

describe("errors", function()
  local farm, ng

  setup(function()
    ng = env.nginx()
    farm = env.farm({ "blackhole count=2" })
  end)

  teardown(function()
    scatter.close_all()
    env.cleanup()
  end)

  it("are stable strings: timeout, pool_full, cancelled, closed", function()
    local pool = scatter.pool({ proxies = farm.proxies, task_pool_capacity = 2, metrics_log_interval = 0 })
    local _, err = pool:get(ng.url("/small.txt"), { timeout = 0.2 })
    assert.equal("timeout", err)
    local h1 = assert(pool:try_submit({ url = ng.url("/small.txt") }))
    local h2 = assert(pool:try_submit({ url = ng.url("/small.txt") }))
    local h3, err3 = pool:try_submit({ url = ng.url("/small.txt") })
    assert.is_nil(h3)
    assert.equal("pool_full", err3)
    h1:cancel()
    assert.same({ nil, "cancelled" }, { h1:wait(1) })
    pool:close()
    assert.same({ nil, "closed" }, { h2:wait(1) })
    assert.same({ nil, "closed" }, { pool:get(ng.url("/small.txt")) })
  end)

  it("raise, naming the function, for wrong argument types", function()
    local pool = scatter.pool({ proxies = farm.proxies, metrics_log_interval = 0 })
    local h = assert(pool:try_submit({ url = ng.url("/small.txt") }))
    local router = scatter.router({ ["a.test"] = { proxies = farm.proxies, metrics_log_interval = 0 } })
    local cases = {
      { "scatter.pool: bad argument #1", function() scatter.pool("x") end },
      { "scatter.router: bad argument #1", function() scatter.router("x") end },
      { "scatter.run: bad argument #1", function() scatter.run(5) end },
      { "scatter.spawn: bad argument #1", function() scatter.spawn("f") end },
      { "scatter.sleep: bad argument #1", function() scatter.sleep("1") end },
      { "scatter.wait_any: bad argument #1", function() scatter.wait_any(5) end },
      { "scatter.wait_all: bad argument #1", function() scatter.wait_all({}) end },
      { "pool:get: bad argument #1", function() pool:get(5) end },
      { "pool:get: bad argument #2", function() pool:get(ng.url("/"), 5) end },
      { "pool:request: bad argument #1", function() pool:request("http://x/") end },
      { "pool:submit: bad argument #1", function() pool:submit(nil) end },
      { "pool:try_submit: bad argument #1", function() pool:try_submit(true) end },
      { "pool:metrics: call it as pool:metrics", function() pool.metrics() end },
      { "handle:wait: bad argument #1", function() h:wait("soon") end },
      { "handle:cancel: call it as handle:cancel", function() h.cancel() end },
      { "handle:done: call it as handle:done", function() h.done() end },
      { "router:get: bad argument #1", function() router:get({}) end },
      { "router:request: bad argument #1", function() router:request("http://a.test/") end },
      { "router:submit: bad argument #1", function() router:submit(1) end },
      { "router:try_submit: bad argument #1", function() router:try_submit(1) end },
      { "router:metrics: bad argument #1", function() router:metrics(1) end },
      { "router:pool: bad argument #1", function() router:pool(1) end },
      { "router:close: call it as router:close", function() router.close() end },
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(c[2])
      assert.is_false(ok, c[1])
      assert.truthy(tostring(err):find(c[1], 1, true), "expected '" .. c[1] .. "', got: " .. tostring(err))
    end
    h:cancel()
    pool:close()
    router:close()
  end)
end)
