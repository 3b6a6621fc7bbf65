-- Classifiers: functions and objects, what they see, what happens when they
-- fail, the default table, and the example classifiers in examples/classifiers.
local env = require("support.env")
local log = require("scatter.log")
local classifier = require("scatter.classifier")
local scatter = require("scatter")

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
-- the module scatter.classifiers; the example files must return the same
local function example(name)
  local c = require("scatter.classifiers")[name]
  assert(c == dofile(here .. "../examples/classifiers/" .. name .. ".lua"), name .. ": the example differs")
  return c
end

local function resp_of(status, body, headers)
  return { status = status, body = body or "", headers = headers or {}, url = "http://x.test/", proxy = "127.0.0.1:1" }
end

describe("classifiers", function()
  local ng, farm

  local PAGE = "<html><body><p>item 1, all fine</p></body></html>\n"
  local BUSY = "<html><body><h1>Service Temporarily Unavailable</h1></body></html>\n"
  local GONE = "<html><body><h1>Item not found</h1></body></html>\n"

  setup(function()
    ng = env.nginx({ files = {
      ["page.html"] = PAGE,
      ["busy.html"] = BUSY,
      ["gone.html"] = GONE,
      ["api-busy.json"] = '{"error":"busy, try later"}',
      ["api-empty.json"] = '{"ok":true,"data":{}}',
    } })
    farm = env.farm({ "good count=3", "block count=2", "tamper count=2" })
  end)

  teardown(function()
    scatter.close_all()
    env.cleanup()
  end)

  local function pool_of(proxies, cls, extra)
    local cfg = { proxies = proxies, classifier = cls, metrics_log_interval = 0,
      rate_limit = { default_interval = 0 }, name = "cls" }
    for k, v in pairs(extra or {}) do cfg[k] = v end
    return scatter.pool(cfg)
  end

  -- Captures log lines while fn runs.
  local function logged(fn)
    local lines, sink = {}, log.sink
    log.sink = function(line) lines[#lines + 1] = line end
    local ok, err = pcall(fn)
    log.sink = sink
    assert(ok, err)
    return lines
  end

  it("a function classifier reads status, headers, body, url, proxy and method", function()
    local seen
    local pool = pool_of({ farm.by_profile.good[1] }, function(resp)
      seen = resp
      return "success"
    end)
    local resp = assert(pool:get(ng.url("/headers"), { timeout = 10 }))
    assert.equal(resp, seen)
    assert.equal(200, seen.status)
    assert.equal("yes", seen.headers["x-scatter"])
    assert.equal("headers\n", seen.body)
    assert.equal(ng.url("/headers"), seen.url)
    assert.equal(farm.by_profile.good[1], seen.proxy)
    assert.equal("GET", seen.method)
    pool:close()
  end)

  it("an object's :classify(resp) is called with the object", function()
    local obj = { calls = 0 }
    function obj:classify(resp)
      self.calls = self.calls + 1
      return resp.status == 404 and "final" or "success"
    end
    local pool = pool_of({ farm.by_profile.good[1] }, obj)
    local resp = assert(pool:get(ng.url("/status/404"), { timeout = 10, race = false }))
    assert.equal(404, resp.status)
    assert.equal(1, obj.calls)
    pool:close()
    -- userdata objects too (e.g. one made in C or with newproxy)
    local u = newproxy(true)
    getmetatable(u).__index = { classify = function(self, r) assert(self == u) return r.status == 200 and "success" end }
    pool = pool_of({ farm.by_profile.good[1] }, u)
    assert.truthy(pool:get(ng.url("/small.txt"), { timeout = 10 }))
    pool:close()
    local ok, err = pcall(scatter.pool, { proxies = { "127.0.0.1:1" }, classifier = {} })
    assert.is_false(ok)
    assert.truthy(err:find("classifier must be a function or an object with :classify(resp)", 1, true), err)
  end)

  it("an error, a yield, a wait or a non-verdict is counted, logged at most once a second, and is a target_error", function()
    local kinds = {
      function() error("boom") end,
      function() coroutine.yield() end,
      function() scatter.sleep(0.1) end,
      function() return "ok" end,
      function() return nil end,
      function() return 42 end,
      function() return { "success" } end,
    }
    local n = 28
    local calls, first_err, last_err = {}, nil, nil
    -- the first call for each URL misbehaves (one kind each, in turn), the
    -- second succeeds: every task then ends, after its target_error retry
    local function cls(resp)
      local k = resp.url
      calls[k] = (calls[k] or 0) + 1
      if calls[k] == 1 then
        local i = tonumber(k:match("i=(%d+)"))
        first_err = first_err or scatter.now()
        last_err = scatter.now()
        return kinds[i % #kinds + 1](resp)
      end
      return "success"
    end
    local pool
    local lines = logged(function()
      -- one failure would cool the proxy down: target_error must not count
      pool = pool_of({ farm.by_profile.good[2] }, cls, { cooldown_consecutive_fails = 1 })
      scatter.run(function()
        local ths = {}
        for i = 1, n do
          ths[i] = scatter.spawn(function()
            return assert(pool:get(ng.url("/small.txt?i=" .. i), { timeout = 30, race = false }))
          end)
        end
        scatter.wait_all(unpack(ths))
      end)
    end)
    local m = pool:metrics()
    assert.equal(n, m.completed_tasks)
    assert.equal(n, m.classifier_errors)
    assert.equal(n, m.verdicts.target_error)
    assert.equal(0, m.cooldown_proxies)
    assert.equal(0, m.dead_proxies)
    -- at most one line per second of misbehaviour, each naming the pool
    assert.is_true(#lines >= 1)
    assert.is_true(#lines <= 1 + math.floor(last_err - first_err), #lines .. " lines in " .. (last_err - first_err) .. " s")
    for _, l in ipairs(lines) do
      assert.truthy(l:find("ERROR [cls] classifier", 1, true), l)
      assert.truthy(l:find("(treated as target_error)", 1, true), l)
    end
    pool:close()
    -- each kind's message, straight from the safe call
    assert.same({ "target_error" }, { (classifier.call(kinds[1], resp_of(200))) })
    assert.truthy(select(2, classifier.call(kinds[1], resp_of(200))):find("classifier error: .*boom"))
    assert.truthy(select(2, classifier.call(kinds[2], resp_of(200))):find("classifier yielded", 1, true))
    assert.truthy(select(2, classifier.call(kinds[3], resp_of(200))):find("a classifier must not wait", 1, true))
    assert.truthy(select(2, classifier.call(kinds[4], resp_of(200))):find('classifier returned "ok"', 1, true))
    assert.truthy(select(2, classifier.call(kinds[5], resp_of(200))):find("classifier returned nil", 1, true))
  end)

  it("a request that ends on a failing classifier says so in its error", function()
    -- (it read "timeout: last error: target_error: HTTP 200 (proxy ...)",
    -- naming nothing the user could fix; only the log said why)
    local pool
    logged(function()
      pool = pool_of({ farm.by_profile.good[1] }, function() error("no title in page") end, { name = "why" })
      local resp, err = pool:get(ng.url("/small.txt"), { timeout = 1.5 })
      assert.is_nil(resp)
      assert.truthy(err:find("^timeout: last error: target_error: HTTP 200, classifier error: .*no title in page"), err)
    end)
    pool:close()
  end)

  it("logs per pool: another pool's errors do not silence this one's", function()
    local function bad() error("nope") end
    local lines = logged(function()
      local a = pool_of({ farm.by_profile.good[1] }, bad, { name = "pa" })
      local b = pool_of({ farm.by_profile.good[1] }, bad, { name = "pb" })
      local ha = a:submit({ url = ng.url("/small.txt") })
      local hb = b:submit({ url = ng.url("/small.txt") })
      for _ = 1, 200 do
        if a:metrics().classifier_errors > 0 and b:metrics().classifier_errors > 0 then break end
        scatter.sleep(0.05)
      end
      ha:cancel()
      hb:cancel()
      a:close()
      b:close()
    end)
    local pa, pb = 0, 0
    for _, l in ipairs(lines) do
      if l:find("[pa] classifier error", 1, true) then pa = pa + 1 end
      if l:find("[pb] classifier error", 1, true) then pb = pb + 1 end
    end
    assert.is_true(pa >= 1 and pb >= 1, table.concat(lines, "\n"))
  end)

  it("the default classifier follows the crate's table, with HEAD and 204 as successes", function()
    local d = classifier.default
    assert.equal("success", d(resp_of(200, "x")))
    assert.equal("proxy_blocked", d(resp_of(200, "")))
    assert.equal("success", d(resp_of(204, "")))
    local head = resp_of(200, "")
    head.method = "HEAD"
    assert.equal("success", d(head))
    assert.equal("proxy_blocked", d(resp_of(403, "x")))
    assert.equal("proxy_blocked", d(resp_of(429, "x")))
    assert.equal("target_error", d(resp_of(503, "x")))
    assert.equal("proxy_blocked", d(resp_of(503, "x", { ["retry-after"] = "120" })))
    assert.equal("proxy_blocked", d(resp_of(503, "x", { ["retry-after"] = "Wed, 21 Oct 2015 07:28:00 GMT" })))
    assert.equal("target_error", d(resp_of(503, "x", { ["retry-after"] = "soon" })))
    assert.equal("target_error", d(resp_of(404, "x")))
    assert.equal("target_error", d(resp_of(410, "x")))
    assert.equal("proxy_blocked", d(resp_of(302, "")))
  end)

  -- A pool that keeps the default judges attempts in C (response.c
  -- default_verdict, so a failed attempt never becomes a Lua table); a
  -- classifier that calls classifier.default runs the Lua table. Both must
  -- give every answer the same verdict.
  it("the default classifier judges in C exactly as classifier.default does", function()
    local cases = { { "GET", "/small.txt" }, { "GET", "/empty" }, { "HEAD", "/small.txt" }, { "HEAD", "/empty" } }
    for _, code in ipairs({ 201, 204, 400, 403, 404, 410, 418, 429, 500, 502, 503 }) do
      cases[#cases + 1] = { "GET", "/status/" .. code }
    end
    local function kinds(pool)
      local out = {}
      for v, n in pairs(pool:metrics().verdicts) do
        if n > 0 then out[#out + 1] = v end
      end
      table.sort(out)
      return table.concat(out, ",")
    end
    for _, c in ipairs(cases) do
      local in_c = pool_of({ farm.by_profile.good[1] }, nil)
      local in_lua = pool_of({ farm.by_profile.good[2] }, function(r) return classifier.default(r) end)
      local got = {}
      scatter.run(function()
        local ths = {}
        for i, pool in ipairs({ in_c, in_lua }) do
          ths[i] = scatter.spawn(function()
            local resp = pool:request({ method = c[1], url = ng.url(c[2]), timeout = 0.3 })
            got[i] = (resp and "delivered " or "not delivered ") .. kinds(pool)
          end)
        end
        scatter.wait_all(unpack(ths))
      end)
      if c[2] == "/status/404" or c[2] == "/status/410" then
        -- (but for one thing the Lua table cannot know: a pool of one has
        -- no second proxy to agree on a 404/410, so its answer is final)
        assert.equal("not delivered target_error", got[2], c[2])
        assert.equal("delivered final", got[1], c[2])
      else
        assert.equal(got[2], got[1], c[1] .. " " .. c[2])
      end
      in_c:close()
      in_lua:close()
    end
  end)

  describe("examples/classifiers", function()
    it("block_page: captcha and block pages, even as 200, are the proxy's fault", function()
      local block_page = example("block_page")
      local c = block_page({ complete = "</html>", markers = { "Verify You Are Human" } })
      assert.equal("success", c:classify(resp_of(200, PAGE)))
      assert.equal("proxy_blocked", c:classify(resp_of(200, "<html><title>Attention Required!</title></html>")))
      assert.equal("proxy_blocked", c:classify(resp_of(200, "<html>please verify you are human</html>")))
      assert.equal("proxy_blocked", c:classify(resp_of(200, PAGE, { ["cf-mitigated"] = "challenge" })))
      assert.equal("proxy_blocked", c:classify(resp_of(200, PAGE:sub(1, 20))))
      assert.equal("proxy_blocked", c:classify(resp_of(403, PAGE)))
      assert.equal("proxy_blocked", c:classify(resp_of(429, "")))
      assert.equal("final", c:classify(resp_of(404, "")))
      assert.equal("target_error", c:classify(resp_of(502, "")))
      -- through the farm: blocking proxies (403 captcha) lose, the page arrives
      local mix = { unpack(farm.by_profile.good) }
      for _, p in ipairs(farm.by_profile.block) do mix[#mix + 1] = p end
      local pool = pool_of(mix, c)
      for i = 1, 20 do
        local resp, err = pool:get(ng.url("/page.html?i=" .. i), { timeout = 20 })
        assert.is_nil(err)
        assert.equal(PAGE, resp.body)
      end
      -- a captcha answered with 200 never counts as the page
      local _, err = pool:get(ng.url("/captcha"), { timeout = 1 })
      assert.truthy(err:match("^timeout"), err)
      pool:close()
      local blocking = pool_of(farm.by_profile.block, c)
      _, err = blocking:get(ng.url("/page.html"), { timeout = 1 })
      assert.truthy(err:match("^timeout: last error: proxy_blocked: HTTP 403"), err)
      blocking:close()
    end)

    it("json_api: the body must decode and carry the field", function()
      local json_api = example("json_api")
      local c = json_api({ field = "data.id", error_field = "error" })
      assert.equal("success", c:classify(resp_of(200, '{"data":{"id":0}}')))
      assert.equal("proxy_blocked", c:classify(resp_of(200, '{"d4t4":{"id":7}}')))
      assert.equal("proxy_blocked", c:classify(resp_of(200, '{"data":{"id":null}}')))
      assert.equal("proxy_blocked", c:classify(resp_of(200, "<html>captcha</html>")))
      assert.equal("proxy_blocked", c:classify(resp_of(200, '{"data":{"id":7')))
      assert.equal("proxy_blocked", c:classify(resp_of(200, '"just a string"')))
      assert.equal("target_error", c:classify(resp_of(200, '{"error":"busy"}')))
      assert.equal("target_error", c:classify(resp_of(503, "")))
      assert.equal("final", c:classify(resp_of(404, "")))
      assert.equal("success", json_api({ field = "items.2" }):classify(resp_of(200, '{"items":[1,2]}')))
      assert.has_error(function() json_api({}) end)
      -- through the farm: tampering proxies turn "data" into "d4t4" and lose
      local pool = pool_of(farm.proxies, c)
      for i = 1, 20 do
        local resp, err = pool:get(ng.url("/json?i=" .. i), { timeout = 20 })
        assert.is_nil(err)
        assert.equal(7, resp.json.data.id)
      end
      local m0 = pool:metrics()
      local _, err = pool:get(ng.url("/api-busy.json"), { timeout = 1.5 })
      assert.truthy(err:match("^timeout"), err)
      local m = pool:metrics()
      assert.is_true(m.verdicts.target_error > m0.verdicts.target_error)
      pool:close()
      local tampering = pool_of(farm.by_profile.tamper, c)
      _, err = tampering:get(ng.url("/json"), { timeout = 1 })
      assert.truthy(err:match("^timeout: last error: proxy_blocked: HTTP 200"), err)
      tampering:close()
    end)

    it("soft_error: a 200 error page is the site's trouble or a final answer, not a success", function()
      local soft_error = example("soft_error")
      local c = soft_error({ retry = { "temporarily unavailable" }, final = { "item not found" }, complete = "</html>" })
      assert.equal("success", c:classify(resp_of(200, PAGE)))
      assert.equal("target_error", c:classify(resp_of(200, BUSY)))
      assert.equal("final", c:classify(resp_of(200, GONE)))
      assert.equal("proxy_blocked", c:classify(resp_of(200, PAGE:sub(1, 30))))
      assert.equal("proxy_blocked", c:classify(resp_of(200, "")))
      assert.equal("proxy_blocked", c:classify(resp_of(403, PAGE)))
      assert.equal("target_error", c:classify(resp_of(500, PAGE)))
      local good = farm.by_profile.good
      local pool = pool_of(good, c, { cooldown_consecutive_fails = 1 })
      local resp, err = pool:get(ng.url("/gone.html"), { timeout = 10 })
      assert.is_nil(err)
      assert.equal(GONE, resp.body)
      resp, err = pool:get(ng.url("/page.html"), { timeout = 10 })
      assert.is_nil(err)
      assert.equal(PAGE, resp.body)
      -- the busy page is retried, and no proxy is blamed for it
      local _, berr = pool:get(ng.url("/busy.html"), { timeout = 1.5 })
      assert.truthy(berr:match("^timeout"), berr)
      local m = pool:metrics()
      assert.is_true(m.verdicts.target_error >= 1)
      assert.equal(0, m.cooldown_proxies)
      pool:close()
    end)
  end)
end)
