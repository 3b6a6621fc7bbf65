-- Sessions: one proxy and one cookie jar for a run of requests, against
-- an nginx that sets and echoes a cookie and closes each connection after
-- three requests, through farm proxies (one that starts blocking).
package.path = "spec/?.lua;" .. package.path
local env = require("support.env")
local scatter = require("scatter")

local function port_of(proxy) return tonumber(proxy:match(":(%d+)$")) end

describe("sessions", function()
  local ng
  setup(function() ng = env.nginx() end)
  teardown(function() env.cleanup() end)

  local function pool_for(farm, extra)
    local cfg = { proxies = farm.proxies, rate_limit = { default_interval = 0 },
                  metrics_log_interval = 0 }
    for k, v in pairs(extra or {}) do cfg[k] = v end
    return scatter.pool(cfg)
  end

  it("races the first request, then keeps its proxy and its cookies", function()
    local farm = env.farm({ "good count=4" })
    local pool = pool_for(farm, { max_concurrent_per_request = 3 })
    scatter.run(function()
      local s = pool:session{}
      assert.is_nil(s.proxy)
      local r = assert(s:get(ng.url("/cookie/set?v=abc")))
      assert.equals("set abc\n", r.body)
      assert.is_true(r.attempts >= 3) -- raced (K = 3)
      local proxy = s.proxy
      assert.matches("^127%.0%.0%.1:%d+$", proxy)
      scatter.sleep(0.3) -- the race's losers may still reach the farm's log
      local before = #farm.log_lines()
      for _ = 1, 7 do -- past nginx's three requests a connection
        local e = assert(s:get(ng.url("/cookie/echo")))
        assert.equals("cookie=sid=abc\n", e.body)
        assert.equals(proxy, e.proxy)
        assert.equals(1, e.attempts)
      end
      assert.equals(proxy, s.proxy)
      -- new connections all went to the session's proxy
      local lines = farm.log_lines()
      assert.is_true(#lines > before)
      for i = before + 1, #lines do assert.equals(port_of(proxy), lines[i].port) end
      -- a second session has a jar of its own
      local s2 = pool:session{}
      assert(s2:get(ng.url("/cookie/set?v=xyz")))
      assert.equals("cookie=sid=xyz\n", assert(s2:get(ng.url("/cookie/echo"))).body)
      assert.equals("cookie=sid=abc\n", assert(s:get(ng.url("/cookie/echo"))).body)
      assert.same({}, (function() s:close() return s:cookies() end)())
      pool:close()
    end)
  end)

  it("a session pinned to a socks4 proxy takes a name target to a proxy that resolves it (the socks4 rule)",
    function()
    local farm = env.farm({ "good proto=socks4 count=1", "good count=1" })
    local s4, s5 = farm.proxies[1], farm.proxies[2]
    assert.matches("^socks4://", s4)
    local pool = pool_for(farm, { max_concurrent_per_request = 1 })
    scatter.run(function()
      local s = pool:session{}
      -- pinned to the socks4 proxy by an IP-literal request, the other one
      -- down meanwhile (a race lets the pool prefer either: before, twenty
      -- moves could all land on the socks5 one)
      assert.matches("^OK", farm:control("down 1"))
      assert(s:get(ng.url("/small.txt")))
      assert.matches("^OK", farm:control("up 1"))
      assert.equals(s4, s.proxy)
      local moves = s.moves
      local before = #farm.log_lines()
      -- a name: socks4 carries addresses only, and remote DNS is on
      local name_url = ng.url("/small.txt"):gsub("127%.0%.0%.1", "localhost")
      local r = assert(s:get(name_url))
      assert.equals("hello from scatter\n", r.body)
      assert.equals(s5, r.proxy)
      assert.equals(s5, s.proxy)
      assert.equals(moves + 1, s.moves)
      -- nothing reached the socks4 proxy for it
      for i = before + 1, #farm.log_lines() do
        assert.are_not.equal(port_of(s4), farm.log_lines()[i].port)
      end
      pool:close()
    end)
  end)

  it("moves to another proxy when its proxy starts blocking; cookies kept", function()
    -- three good connections each (the first race may take one of each;
    -- nginx closes each after three requests): the 9th echo moves
    local farm = env.farm({ "block_after n=3 count=2" })
    local pool = pool_for(farm, { max_concurrent_per_request = 1 })
    scatter.run(function()
      local s = pool:session{}
      assert(s:get(ng.url("/cookie/set?v=keep"), { timeout = 10 }))
      local first = s.proxy
      for _ = 1, 9 do
        local e = assert(s:get(ng.url("/cookie/echo"), { timeout = 10 }))
        assert.equals("cookie=sid=keep\n", e.body)
      end
      assert.equals(1, s.moves)
      assert.are_not.equal(first, s.proxy)
      pool:close()
    end)
  end)

  it("reset_cookies empties the jar on a move; max_uses moves on its own", function()
    local farm = env.farm({ "good count=3" })
    local pool = pool_for(farm, { max_concurrent_per_request = 2 })
    scatter.run(function()
      local s = pool:session{ max_uses = 2, reset_cookies = true }
      assert.is_true(assert(s:get(ng.url("/cookie/set?v=1"))).attempts >= 2)
      assert.equals("cookie=sid=1\n", assert(s:get(ng.url("/cookie/echo"))).body)
      -- the third use races again, with an empty jar
      local r = assert(s:get(ng.url("/cookie/echo")))
      assert.is_true(r.attempts >= 2)
      assert.equals("cookie=\n", r.body)
      assert.equals(1, s.moves)
      pool:close()
    end)
  end)

  it("max_age moves it once its proxy has served that long", function()
    local farm = env.farm({ "good count=3" })
    local pool = pool_for(farm, { max_concurrent_per_request = 2 })
    scatter.run(function()
      local s = pool:session{ max_age = 0.3 }
      assert(s:get(ng.url("/cookie/set?v=age")))
      assert.equals(1, assert(s:get(ng.url("/cookie/echo"))).attempts)
      scatter.sleep(0.4)
      local r = assert(s:get(ng.url("/cookie/echo")))
      assert.is_true(r.attempts >= 2) -- raced again
      assert.equals("cookie=sid=age\n", r.body) -- the jar kept
      assert.equals(1, s.moves)
      pool:close()
    end)
  end)

  it("a pinned request in flight ends 'closed' when its pool closes", function()
    local farm = env.farm({ "good count=1" })
    local pool = pool_for(farm)
    scatter.run(function()
      local s = pool:session{}
      assert(s:get(ng.url("/cookie/set?v=c")))
      local th = scatter.spawn(function() return s:get(ng.url("/rate/1/big.bin")) end)
      scatter.sleep(0.3)
      pool:close()
      local ok, resp, err = scatter.wait_any(th)
      assert.is_true(ok)
      assert.is_nil(resp)
      assert.equals("closed", err)
    end)
  end)

  it("max_errors transport failures move it", function()
    local farm = env.farm({ "good count=2" })
    local pool = pool_for(farm, { max_concurrent_per_request = 1, cooldown_consecutive_fails = 100 })
    scatter.run(function()
      local s = pool:session{ max_errors = 2 }
      assert(s:get(ng.url("/cookie/set?v=e")))
      local first = s.proxy
      local idx
      for i, a in ipairs(farm.proxies) do if a == first then idx = i - 1 end end
      assert.matches("^OK", farm:control("down " .. idx))
      local r = assert(s:get(ng.url("/cookie/echo"), { timeout = 10 }))
      assert.equals("cookie=sid=e\n", r.body)
      assert.are_not.equal(first, s.proxy)
      assert.equals(1, s.moves)
      pool:close()
    end)
  end)

  it("works on a router (a session per host) and checks its options", function()
    local farm = env.farm({ "good count=2" })
    local router = scatter.router{
      ["127.0.0.1"] = { proxies = farm.proxies, rate_limit = { default_interval = 0 },
                        metrics_log_interval = 0 },
    }
    scatter.run(function()
      local s = router:session{ max_errors = 1 }
      assert(s:get(ng.url("/cookie/set?v=r")))
      assert.equals("cookie=sid=r\n", assert(s:get(ng.url("/cookie/echo"))).body)
      assert.matches("^127%.0%.0%.1:%d+$", s.proxy)
      local _, err = s:get("http://elsewhere.test/")
      assert.matches("^unknown_host", err)
      router:close()
    end)
    local pool = scatter.pool{ proxies = farm.proxies, metrics_log_interval = 0 }
    assert.has_error(function() pool:session{ max_use = 1 } end, "pool:session: unknown option 'max_use'")
    assert.has_error(function() pool:session{ max_errors = 0 } end,
      "pool:session: max_errors must be an integer >= 1")
    local s = pool:session{}
    local _, err = s:request{ url = ng.url("/"), bogus = 1 }
    assert.matches("^invalid_request: unknown field 'bogus'", err)
    pool:close()
    _, err = s:get(ng.url("/"))
    assert.equals("closed", err)
  end)

  it("serve.start refuses a bad timeout, session_idle or tunnel_idle, naming it", function()
    local serve = require("scatter.serve")
    local pool = scatter.pool{ proxies = { "127.0.0.1:9" }, metrics_log_interval = 0 }
    for _, k in ipairs({ "timeout", "session_idle", "tunnel_idle" }) do
      for _, bad in ipairs({ 0, -1, "5", 0 / 0, math.huge }) do
        local srv, err = serve.start(pool, "127.0.0.1", 0, { [k] = bad })
        assert.is_nil(srv)
        assert.matches("serve: " .. k .. " must be a number of seconds > 0, got", err)
      end
    end
    pool:close()
  end)

  it("scatter serve keeps at most MAX_SESSIONS named sessions, dropping the least recently used", function()
    local serve = require("scatter.serve")
    local pool = scatter.pool{ proxies = { "127.0.0.1:9" }, metrics_log_interval = 0 }
    local srv = assert(serve.start(pool, "127.0.0.1", 0, {}))
    local saved = serve.MAX_SESSIONS
    serve.MAX_SESSIONS = 2
    local a, b = srv:_via("a"), srv:_via("b")
    scatter.sleep(0.01)
    assert.equals(a, srv:_via("a")) -- a is now the more recent
    scatter.sleep(0.01)
    local c = srv:_via("c")
    serve.MAX_SESSIONS = saved
    assert.is_true(b.closed)
    assert.is_nil(srv.sessions.b)
    assert.equals(a, srv.sessions.a)
    assert.equals(c, srv.sessions.c)
    assert.equals(2, srv.nsessions)
    srv:close(0)
    pool:close()
  end)

  it("scatter serve pins a named session's CONNECT tunnels to its proxy", function()
    local farm = env.farm({ "good count=3" })
    local cfgf = env.script("tun_pool.lua", "return { proxies = { '"
      .. table.concat(farm.proxies, "','") .. "' }, rate_limit = { default_interval = 0 },"
      .. " max_concurrent_per_request = 3, connect_ports = { " .. ng.tls_port .. " } }")
    local p = env.spawn({ env.build_dir() .. "/scatter", "serve", "--listen", "127.0.0.1:0",
                          "--config", cfgf, "--quiet" }, { name = "serve" })
    local port = env.wait_until(function()
      return tonumber((env.read_file(p.log) or ""):match("listening on http://127%.0%.0%.1:(%d+)"))
    end, "serve to listen", p)
    local function get()
      local h = io.popen("curl -sS --max-time 20 --cacert '" .. ng.ca .. "' -x http://127.0.0.1:" .. port
        .. " --proxy-header 'X-Scatter-Session: t' '" .. ng.tls_url("/small.txt") .. "' 2>&1")
      local out = h:read("*a")
      h:close()
      return out
    end
    assert.equals("hello from scatter\n", get()) -- raced: the winner is the session's
    scatter.sleep(0.3) -- the race's losers may still reach the farm's log
    local before = #farm.log_lines()
    for _ = 1, 4 do assert.equals("hello from scatter\n", get()) end
    local lines = farm.log_lines()
    assert.equals(before + 4, #lines) -- one tunnel each, no race
    for i = before + 2, #lines do assert.equals(lines[before + 1].port, lines[i].port) end
    p:stop()
  end)

  it("scatter serve takes the user of proxy credentials as the session's name", function()
    local farm = env.farm({ "good count=3" })
    local cfgf = env.script("auth_pool.lua", "return { proxies = { '"
      .. table.concat(farm.proxies, "','") .. "' }, rate_limit = { default_interval = 0 },"
      .. " max_concurrent_per_request = 3, connect_ports = { " .. ng.tls_port .. " } }")
    local p = env.spawn({ env.build_dir() .. "/scatter", "serve", "--listen", "127.0.0.1:0",
                          "--config", cfgf, "--quiet" }, { name = "serve" })
    local port = env.wait_until(function()
      return tonumber((env.read_file(p.log) or ""):match("listening on http://127%.0%.0%.1:(%d+)"))
    end, "serve to listen", p)
    local function get(user, url, extra)
      local h = io.popen("curl -sS --max-time 20 --cacert '" .. ng.ca .. "' -x http://"
        .. (user and (user .. ":pw@") or "") .. "127.0.0.1:" .. port .. " " .. (extra or "")
        .. " '" .. url .. "' 2>&1")
      local out = h:read("*a")
      h:close()
      return out
    end
    assert.equals("set one\n", get("alice", ng.url("/cookie/set?v=one")))
    assert.equals("cookie=sid=one\n", get("alice", ng.url("/cookie/echo")))
    assert.equals("cookie=\n", get("bob", ng.url("/cookie/echo")))
    assert.equals("cookie=\n", get(nil, ng.url("/cookie/echo")))
    -- the header wins over the credentials
    assert.equals("cookie=\n", get("alice", ng.url("/cookie/echo"), "-H 'X-Scatter-Session: carol'"))
    -- and a CONNECT (Scrapy, requests: credentials in the proxy URL) is pinned too
    assert.equals("hello from scatter\n", get("t", ng.tls_url("/small.txt")))
    scatter.sleep(0.3) -- the race's losers may still reach the farm's log
    local before = #farm.log_lines()
    for _ = 1, 3 do assert.equals("hello from scatter\n", get("t", ng.tls_url("/small.txt"))) end
    local lines = farm.log_lines()
    assert.equals(before + 3, #lines)
    for i = before + 2, #lines do assert.equals(lines[before + 1].port, lines[i].port) end
    p:stop()
  end)

  it("scatter serve closes a named session left idle for session_idle seconds", function()
    local serve = require("scatter.serve")
    local pool = scatter.pool{ proxies = { "127.0.0.1:9" }, metrics_log_interval = 0 }
    local srv = assert(serve.start(pool, "127.0.0.1", 0, { session_idle = 0.2 }))
    local a, b = srv:_via("a"), srv:_via("b")
    assert.equals(2, srv.nsessions)
    -- b is used all along, a never again: a goes, b stays
    for _ = 1, 200 do
      if a.closed then break end
      scatter.sleep(0.02)
      srv:_via("b")
    end
    assert.is_true(a.closed)
    assert.is_nil(srv.sessions.a)
    assert.is_false(b.closed == true)
    assert.equals(b, srv.sessions.b)
    assert.equals(1, srv.nsessions)
    -- the name's next request starts a new session
    local a2 = srv:_via("a")
    assert.are_not.equal(a, a2)
    assert.equals(2, srv.nsessions)
    srv:close(0)
    assert.is_true(a2.closed and b.closed)
    pool:close()
  end)

  it("scatter serve --session-idle: an expired session's name starts afresh", function()
    local farm = env.farm({ "good count=2" })
    local cfgf = env.script("idle_pool.lua", "return { proxies = { '"
      .. table.concat(farm.proxies, "','") .. "' }, rate_limit = { default_interval = 0 } }")
    local p = env.spawn({ env.build_dir() .. "/scatter", "serve", "--listen", "127.0.0.1:0",
                          "--config", cfgf, "--quiet", "--session-idle", "0.3",
                          "--log-level", "debug" }, { name = "serve" })
    local port = env.wait_until(function()
      return tonumber((env.read_file(p.log) or ""):match("listening on http://127%.0%.0%.1:(%d+)"))
    end, "serve to listen", p)
    local function get(path)
      local h = io.popen("curl -sS --max-time 20 -x http://127.0.0.1:" .. port
        .. " -H 'X-Scatter-Session: a' '" .. ng.url(path) .. "' 2>&1")
      local out = h:read("*a")
      h:close()
      return out
    end
    assert.equals("set one\n", get("/cookie/set?v=one"))
    assert.equals("cookie=sid=one\n", get("/cookie/echo"))
    env.wait_until(function()
      return (env.read_file(p.log) or ""):find("serve: session a closed after 0.3 s idle", 1, true)
    end, "the idle session to be closed", p)
    assert.equals("cookie=\n", get("/cookie/echo"))
    p:stop()
    local rc, _, err = env.cli("serve --session-idle 0")
    assert.equals(2, rc)
    assert.matches("%-%-session%-idle: a number of seconds > 0 expected", err)
  end)

  it("scatter serve maps X-Scatter-Session to a session", function()
    local farm = env.farm({ "good count=3" })
    local cfgf = env.script("sess_pool.lua", "return { proxies = { '"
      .. table.concat(farm.proxies, "','") .. "' }, rate_limit = { default_interval = 0 } }")
    local p = env.spawn({ env.build_dir() .. "/scatter", "serve", "--listen", "127.0.0.1:0",
                          "--config", cfgf, "--quiet" }, { name = "serve" })
    local port = env.wait_until(function()
      return tonumber((env.read_file(p.log) or ""):match("listening on http://127%.0%.0%.1:(%d+)"))
    end, "serve to listen", p)
    local function get(session, path)
      local h = io.popen("curl -sS --max-time 20 -x http://127.0.0.1:" .. port
        .. (session and (" -H 'X-Scatter-Session: " .. session .. "'") or "")
        .. " '" .. ng.url(path) .. "' 2>&1")
      local out = h:read("*a")
      h:close()
      return out
    end
    assert.equals("set one\n", get("a", "/cookie/set?v=one"))
    assert.equals("set two\n", get("b", "/cookie/set?v=two"))
    assert.equals("cookie=sid=one\n", get("a", "/cookie/echo"))
    assert.equals("cookie=sid=two\n", get("b", "/cookie/echo"))
    assert.equals("cookie=\n", get(nil, "/cookie/echo"))
    p:stop()
  end)
end)
