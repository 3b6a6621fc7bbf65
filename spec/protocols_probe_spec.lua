-- Proxies and sessions driven as a demanding user would (DESIGN.md
-- sections 10-12), through the project's farm to the spec nginx: each
-- case is a bug found by probing, and fails on the code before its fix.
local env = require("support.env")
local scatter = require("scatter")

describe("proxies and sessions (probe)", function()
  local ng
  setup(function() ng = env.nginx() end)
  teardown(function()
    scatter.close_all()
    env.cleanup()
  end)

  local function index_of(farm, proxy)
    for i, p in ipairs(farm.proxies) do if p == proxy then return i end end
  end

  it("a session's pinned request keeps the connect deadline: a proxy gone silent is left, not waited out", function()
    -- proxy_timeout is long, connect_timeout short: a race's attempt
    -- through a blackhole is cut at connect_timeout, a pinned one waited
    -- for proxy_timeout, so the request ran out of time on a dead proxy
    local farm = env.farm({ "good count=2" })
    local pool = scatter.pool{ proxies = farm.proxies, metrics_log_interval = 0,
      rate_limit = { default_interval = 0 }, max_concurrent_per_request = 1,
      proxy_timeout = 30, connect_timeout = 0.3 }
    scatter.run(function()
      local s = pool:session{ max_errors = 2 }
      local first = assert(s:get(ng.url("/small.txt"), { timeout = 10 }))
      local i = index_of(farm, first.proxy)
      assert.truthy(i, first.proxy)
      assert.matches("^OK", farm.control("profile " .. (i - 1) .. " blackhole"))
      -- a name target: a new connection (the pinned one to 127.0.0.1 may be reused)
      local resp, err = s:get(ng.host_url("localhost", "/small.txt"), { timeout = 8 })
      assert.is_nil(err)
      assert.equals(ng.small_text, resp.body)
      assert.are_not.equal(first.proxy, resp.proxy)
      assert.equals(1, s.moves)
    end)
    pool:close()
  end)
  it("a session's pinned 5xx backs off and ends in a timeout naming it; a pinned 404 is the answer", function()
    -- the backoff read two pool fields that do not exist: the first
    -- pinned target_error raised "bad argument #2 to 'min'"; and a 404,
    -- retried on the only proxy a session asks, took the whole timeout
    local farm = env.farm({ "good count=2" })
    local pool = scatter.pool{ proxies = farm.proxies, metrics_log_interval = 0,
      rate_limit = { default_interval = 0 } }
    scatter.run(function()
      local s = pool:session{}
      local first = assert(s:get(ng.url("/small.txt"), { timeout = 10 }))
      local resp, err = s:get(ng.url("/status/500"), { timeout = 2 })
      assert.is_nil(resp)
      assert.matches("^timeout: last error: target_error: HTTP 500", err)
      assert.equals(first.proxy, s.proxy)
      resp, err = s:get(ng.url("/status/404"), { timeout = 10 })
      assert.is_nil(err)
      assert.equals(404, resp.status)
      assert.equals(first.proxy, resp.proxy)
      assert.equals(0, s.moves)
    end)
    pool:close()
  end)
  it("a router's session has the documented s:cookies() and s.moves", function()
    -- both were missing on router:session: cookies() raised "attempt to
    -- call method 'cookies'" and moves was nil
    local farm = env.farm({ "good count=2" })
    local router = scatter.router{
      ["127.0.0.1"] = { proxies = farm.proxies, rate_limit = { default_interval = 0 },
                        metrics_log_interval = 0, max_concurrent_per_request = 1 },
    }
    scatter.run(function()
      local s = router:session{}
      assert.equals(0, s.moves)
      assert.same({}, s:cookies())
      assert(s:get(ng.url("/cookie/set?v=rt"), { timeout = 10 }))
      local jar = s:cookies()
      assert.equals(1, #jar)
      assert.matches("\tsid\trt$", jar[1])
      local first = s.proxy
      -- the session's proxy starts blocking: the session moves
      assert.matches("^OK", farm.control("profile " .. (first == farm.proxies[1] and 0 or 1) .. " block"))
      -- (nginx closes a /cookie connection after three requests: the
      -- next one is new, and blocked)
      for _ = 1, 6 do
        local resp = assert(s:get(ng.url("/cookie/echo"), { timeout = 10 }))
        assert.equals("cookie=sid=rt\n", resp.body)
        if s.moves > 0 then break end
      end
      assert.are_not.equal(first, s.proxy)
      assert.equals(1, s.moves)
    end)
    router:close()
  end)
  it("a session leaves a proxy whose pair rests after another request's Retry-After", function()
    -- the pair rests (DESIGN.md 11) but a session's pinned request asked
    -- only about cooldowns: it went on through the proxy inside the window
    -- the site had asked for
    local farm = env.farm({ "ratelimit wait=60 n=2", "good" })
    local R, G = farm.proxies[1], farm.proxies[2]
    local pool = scatter.pool{ proxies = farm.proxies, metrics_log_interval = 0,
      rate_limit = { default_interval = 0 }, max_concurrent_per_request = 1 }
    local function accepted(i)
      local st = require("cjson").decode(assert(farm.control("stats")):sub(4))
      return st.per_proxy[i].accepted
    end
    scatter.run(function()
      local s = pool:session{}
      for _ = 1, 20 do -- pinned to R by its first (200) answer
        assert(s:get(ng.url("/small.txt"), { timeout = 10 }))
        if s.proxy == R then break end
        s:_move()
      end
      assert.equals(R, s.proxy)
      assert.equals(1, accepted(1))
      -- other requests of the pool, until one met R's 429 (Retry-After: 60)
      for i = 1, 40 do
        if accepted(1) >= 2 then break end
        assert(pool:get(ng.url("/small.txt?other" .. i), { timeout = 10, race = false }))
      end
      assert.equals(2, accepted(1))
      local moves = s.moves
      local resp = assert(s:get(ng.url("/small.txt?after"), { timeout = 10 }))
      assert.equals(G, resp.proxy)
      assert.equals(ng.small_text, resp.body)
      assert.equals(moves + 1, s.moves)
      assert.equals(2, accepted(1))
    end)
    pool:close()
  end)
  it("a session's pinned 503 carrying Retry-After twice rests the pair, not a Lua error", function()
    -- two Retry-After fields reach Lua as a list: the default classifier
    -- passed it to core.retry_after, which raised "string expected, got
    -- table" out of s:get (C reads the first field, as RFC 9110 allows)
    local dir = env.tmpdir()
    local port = env.free_port()
    local script = env.script("ra_twice.py", table.concat({
      "import http.server, sys",
      "class H(http.server.BaseHTTPRequestHandler):",
      "    def do_GET(self):",
      "        busy = self.path.startswith('/busy')",
      "        self.send_response(503 if busy else 200)",
      "        if busy:",
      "            self.send_header('Retry-After', '30')",
      "            self.send_header('Retry-After', '30')",
      "        body = b'busy' if busy else b'ok'",
      "        self.send_header('Content-Length', str(len(body)))",
      "        self.end_headers()",
      "        self.wfile.write(body)",
      "    def log_message(self, *a): pass",
      "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()",
    }, "\n") .. "\n")
    local py = env.spawn({ "python3", script, tostring(port) }, { name = "ra-target", log = dir .. "/py.log" })
    env.wait_port(port, py)
    local farm = env.farm({ "good count=2" })
    local pool = scatter.pool{ proxies = farm.proxies, metrics_log_interval = 0,
      rate_limit = { default_interval = 0 }, max_concurrent_per_request = 1 }
    local base = "http://127.0.0.1:" .. port
    scatter.run(function()
      local s = pool:session{}
      local first = assert(s:get(base .. "/ok", { timeout = 10 }))
      assert.equals("ok", first.body)
      local ok, resp, err = pcall(s.get, s, base .. "/busy", { timeout = 3 })
      assert.is_true(ok, resp)
      assert.is_nil(resp)
      assert.matches("^timeout: last error: proxy_blocked: HTTP 503, Retry%-After 30s", err)
      assert.equals(1, s.moves)
    end)
    pool:close()
    py:stop()
  end)
  it("a redirect to a name is not followed through a socks4 proxy that resolves none (the socks4 rule)", function()
    -- curl followed it through the same proxy and resolved the name here:
    -- a local DNS query (or a silent local resolution) under
    -- prefer_remote_dns, which the socks4 rule forbids for a first request
    local dir = env.tmpdir()
    local port = env.free_port()
    local script = env.script("redir.py", table.concat({
      "import http.server, sys, urllib.parse",
      "class H(http.server.BaseHTTPRequestHandler):",
      "    def do_GET(self):",
      "        q = urllib.parse.urlparse(self.path)",
      "        if q.path == '/redir':",
      "            self.send_response(302)",
      "            self.send_header('Location', urllib.parse.parse_qs(q.query)['to'][0])",
      "            self.send_header('Content-Length', '0')",
      "            self.end_headers()",
      "            return",
      "        self.send_response(200)",
      "        self.send_header('Content-Length', '2')",
      "        self.end_headers()",
      "        self.wfile.write(b'ok')",
      "    def log_message(self, *a): pass",
      "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()",
    }, "\n") .. "\n")
    local py = env.spawn({ "python3", script, tostring(port) }, { name = "redir-target", log = dir .. "/py.log" })
    env.wait_port(port, py)
    local farm = env.farm({ "good proto=socks4", "good" })
    local s4, s5 = farm.proxies[1], farm.proxies[2]
    local function get(proxies, to)
      local pool = scatter.pool{ proxies = proxies, metrics_log_interval = 0,
        rate_limit = { default_interval = 0 } }
      local url = "http://127.0.0.1:" .. port .. "/redir?to=" .. to
      local resp, err = pool:get(url, { timeout = 3, follow_redirects = true })
      pool:close()
      return resp, err
    end
    for _, host in ipairs({ "foo.test", "localhost" }) do
      local resp, err = get({ s4 }, "http://" .. host .. ":" .. port .. "/ok")
      assert.is_nil(resp, host)
      assert.matches("^timeout: last error: proxy_protocol: a socks4 proxy resolves no names.*redirect to "
        .. host, err)
    end
    -- an IP-literal redirect still follows through it
    local resp = assert(get({ s4 }, "http://127.0.0.1:" .. port .. "/ok"))
    assert.equals("ok", resp.body)
    -- a pool with a proxy that resolves names takes the request there
    resp = assert(get({ s4, s5 }, "http://foo.test:" .. port .. "/ok"))
    assert.equals("ok", resp.body)
    assert.equals(s5, resp.proxy)
    py:stop()
  end)
  it("a session's pinned answer over max_body is not its proxy's failure", function()
    -- the race charges no pair for it; a pinned one was a transport
    -- failure: three of them moved the session off a good proxy
    local farm = env.farm({ "good count=2" })
    local pool = scatter.pool{ proxies = farm.proxies, metrics_log_interval = 0,
      rate_limit = { default_interval = 0 }, max_concurrent_per_request = 1 }
    scatter.run(function()
      local s = pool:session{}
      local first = assert(s:get(ng.url("/small.txt"), { timeout = 10 }))
      local resp, err = s:get(ng.url("/big.bin"), { timeout = 2, max_body = 1000 })
      assert.is_nil(resp)
      assert.matches("^timeout: last error: too_large: body exceeds max_body", err)
      assert.equals(0, s.moves)
      assert.equals(first.proxy, s.proxy)
      assert.equals(0, pool:metrics().verdicts.transport)
    end)
    pool:close()
  end)
  it("a session backing off after a 5xx ends 'closed' when its pool closes meanwhile", function()
    -- after the backoff it asked the closed pool about its proxy, which
    -- raised "scatter: the pool is closed" out of s:get
    local farm = env.farm({ "good count=2" })
    local pool = scatter.pool{ proxies = farm.proxies, metrics_log_interval = 0,
      rate_limit = { default_interval = 0 } }
    local ok, resp, err
    scatter.run(function()
      local s = pool:session{}
      assert(s:get(ng.url("/small.txt"), { timeout = 10 }))
      local t = scatter.spawn(function()
        ok, resp, err = pcall(s.get, s, ng.url("/status/500"), { timeout = 10 })
      end)
      scatter.sleep(0.2) -- inside the first backoff (0.5 s)
      pool:close()
      scatter.wait_all(t)
    end)
    assert.is_true(ok, resp)
    assert.is_nil(resp)
    assert.equals("closed", err)
  end)
end)
