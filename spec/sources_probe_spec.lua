-- Proxy lists and sessions as careless users write and use them: a list
-- saved with a byte order mark, zero-padded addresses, bracketed garbage,
-- unbracketed IPv6, bad lines that carry credentials, a SOCKS4 user id
-- without a password (the form docs/API.md shows), a request while the
-- first list still loads, a session whose proxy its source dropped or
-- that stopped answering, and a session's timeout that must say why.
local env = require("support.env")
local proxies = require("support.proxies")
local scatter = require("scatter")
local core = require("scatter.core")
local sources = require("scatter.sources")
local log = require("scatter.log")

local function write(path, text)
  local f = assert(io.open(path .. ".new", "wb"))
  f:write(text)
  f:close()
  assert(os.rename(path .. ".new", path))
end

-- Polls cond() with the loop running until it is true.
local function eventually(cond, what)
  local deadline = scatter.now() + 20
  while not cond() do
    if scatter.now() > deadline then error("timed out waiting for " .. what, 2) end
    scatter.sleep(0.05)
  end
end

local function keys(pool)
  local out = {}
  for _, p in ipairs(pool:proxies()) do out[#out + 1] = p.key end
  table.sort(out)
  return out
end

describe("proxy lists as users write them", function()
  local ng, sink, logged

  setup(function()
    ng = env.nginx()
    sink = log.sink
  end)

  teardown(function()
    log.sink = sink
    scatter.close_all()
    env.cleanup()
  end)

  before_each(function()
    logged = {}
    log.sink = function(line) logged[#logged + 1] = line end
    sources.forget()
  end)

  after_each(function()
    log.sink = sink
    scatter.close_all()
  end)

  it("keeps the first proxy of a list saved with a UTF-8 byte order mark", function()
    local path = ng.root .. "/bom.txt"
    write(path, "\239\187\1911.1.1.1:1080\r\n2.2.2.2:1080\r\n")
    local pool = scatter.pool({ sources = { path }, metrics_log_interval = 0 })
    assert.same({ "1.1.1.1:1080", "2.2.2.2:1080" }, keys(pool))
    for _, line in ipairs(logged) do assert.falsy(line:find("bad line", 1, true), line) end
    assert.equal("3.3.3.3:1", core.parse_proxy("\239\187\191socks5://3.3.3.3:1"))
  end)

  it("reads a zero-padded IPv4 address as decimal, not octal, and merges it", function()
    -- curl took 127.0.0.010 for 127.0.0.8: a padded free list reached other hosts
    assert.equal("127.0.0.10:1080", core.parse_proxy("127.0.0.010:1080"))
    assert.equal("http://10.1.2.3:3128", core.parse_proxy("http://010.001.002.003:3128"))
    local pool = scatter.pool({ proxies = { "127.0.0.1:1080", "127.000.000.001:1080" },
                                metrics_log_interval = 0 })
    assert.same({ "127.0.0.1:1080" }, keys(pool))
  end)

  it("rejects addresses that are no address, naming what is wrong", function()
    for line, why in pairs({
      ["[abc]:80"] = "bad IPv6 address", ["[1.2.3.4]:80"] = "bad IPv6 address",
      ["[:]:80"] = "bad IPv6 address", ["999.1.1.1:80"] = "bad IPv4 address",
      ["1.2.3:80"] = "bad IPv4 address", ["1.2.3.4.5:80"] = "bad IPv4 address",
      ["12345:80"] = "bad IPv4 address",
      -- it was "bad port" and "missing host"
      ["2001:db8::1:1080"] = "an IPv6 address needs brackets: [addr]:port",
      ["::1:1080"] = "an IPv6 address needs brackets: [addr]:port",
    }) do
      local key, err = core.parse_proxy(line)
      assert.is_nil(key, line)
      assert.equal(why, err, line)
    end
    -- one spelling of an IPv6 address, one proxy
    assert.equal("[::1]:1080", core.parse_proxy("[0:0:0:0:0:0:0:1]:1080"))
    assert.equal("[2001:db8::1]:1080", core.parse_proxy("socks5h://[2001:DB8:0::1]:1080"))
    assert.equal("1.2.3.4.example.org:80", core.parse_proxy("1.2.3.4.example.org:80"))
  end)

  it("says why the first bad line of a list is no proxy", function()
    -- 500 lines skipped for a trailing slash, and the warning only quoted one
    local path = ng.root .. "/why.txt"
    write(path, "http://1.2.3.4:3128/\nhttp://1.2.3.5:3128/\n9.9.9.9:1080\n")
    scatter.pool({ sources = { path }, metrics_log_interval = 0 }):close()
    write(path, "1.2.3.4:99999\n")
    scatter.pool({ sources = { path }, metrics_log_interval = 0 }):close()
    local keys_, bad, first, why = sources.parse("x\n1.2.3.4:0\n")
    assert.same({ {}, 2, "x", "missing :port" }, { keys_, bad, first, why })
    local firsts = {}
    for _, line in ipairs(logged) do
      if line:find("first: ", 1, true) then firsts[#firsts + 1] = line end
    end
    assert.equal(2, #firsts, table.concat(logged, "\n"))
    assert.truthy(firsts[1]:find('skipped 2 bad line(s), first: "http://1.2.3.4:3128/" '
      .. "(trailing characters after the port)", 1, true), firsts[1])
    assert.truthy(firsts[2]:find('no proxies in 1 line(s) (not a proxy list?), first: "1.2.3.4:99999" '
      .. "(bad port)", 1, true), firsts[2])
  end)

  it("never logs the credentials of a bad line, whatever its form", function()
    -- the host:port:user:pass export of paid lists has no '@'; a space in
    -- a password cut the line's credentials in two for the log's redaction
    local path = ng.root .. "/creds.txt"
    write(path, table.concat({ "1.2.3.4:8080:alice:s3cr3t", "socks5://alice:pa ss@1.2.3.4:1080",
      "[::1]:1080:alice:s3cr3t", "5.6.7.8 8080 alice s3cr3t", "9.9.9.9:1080" }, "\n"))
    local pool = scatter.pool({ sources = { path }, metrics_log_interval = 0 })
    assert.same({ "9.9.9.9:1080" }, keys(pool))
    pool:close()
    write(path, table.concat({ "socks5://alice:pa ss@1.2.3.4:1080", "9.9.9.9:1080" }, "\n"))
    scatter.pool({ sources = { path }, metrics_log_interval = 0 }):close()
    write(path, "[::1]:1080:alice:s3cr3t\n")
    scatter.pool({ sources = { path }, metrics_log_interval = 0 }):close()
    local ok, err = pcall(scatter.pool, { proxies = { "alice:pa ss@1.2.3.4:1080" } })
    assert.is_false(ok)
    local firsts = {}
    for _, line in ipairs(logged) do
      if line:find("first: ", 1, true) then firsts[#firsts + 1] = line end
    end
    assert.equal(3, #firsts, table.concat(logged, "\n"))
    assert.truthy(firsts[1]:find('skipped 4 bad line(s), first: "1.2.3.4:8080:***"', 1, true), firsts[1])
    assert.truthy(firsts[2]:find('first: "socks5://***@1.2.3.4:1080"', 1, true), firsts[2])
    assert.truthy(firsts[3]:find('first: "[::1]:1080:***"', 1, true), firsts[3])
    assert.truthy(err:find('contains spaces: "***@1.2.3.4:1080"', 1, true), err)
    logged[#logged + 1] = err
    for _, line in ipairs(logged) do
      assert.falsy(line:find("s3cr3t", 1, true), line)
      assert.falsy(line:find("ss@", 1, true), line)
    end
  end)

  it("takes a SOCKS4 user id without a password, as docs/API.md writes it", function()
    assert.equal("socks4://bob:@10.0.0.4:1080", core.parse_proxy("socks4://bob@10.0.0.4:1080"))
    assert.equal("socks4a://bob:@h:1080", core.parse_proxy("socks4a://bob@h:1080"))
    -- the others authenticate with a password: a lone user is still a mistake
    assert.same({ nil, "credentials need user:password" }, { core.parse_proxy("http://bob@h:3128") })
    local dante = proxies.dante()
    local pool = scatter.pool({ proxies = { "socks4://bob@" .. dante.hostport },
                                metrics_log_interval = 0, proxy_timeout = 3 })
    local resp, err = pool:get(ng.url("/small.txt"), { timeout = 10 })
    assert.is_nil(err)
    assert.equal(ng.small_text, resp.body)
    assert.equal("socks4://***@" .. dante.hostport, resp.proxy)
    pool:close()
    dante.stop()
  end)
end)

describe("a pool whose first proxy list is still loading", function()
  local ng, srv, url

  setup(function()
    ng = env.nginx()
    -- accepts (the kernel's backlog) and never answers: a list server that hangs
    srv = assert(require("socket").bind("127.0.0.1", 0))
    url = "http://127.0.0.1:" .. select(2, srv:getsockname()) .. "/list.txt"
  end)

  teardown(function()
    scatter.close_all()
    srv:close()
    env.cleanup()
  end)

  it("says so when a request times out, instead of blaming empty lists or rate limits", function()
    sources.forget()
    local want = "timeout: no attempt started (the pool's proxy lists are still loading)"
    local pool = scatter.pool({ sources = { url }, metrics_log_interval = 0 })
    assert.same({ nil, want }, { pool:get(ng.url("/small.txt"), { timeout = 0.5 }) })
    pool:close()
    local ms = env.microsocks()
    pool = scatter.pool({ sources = { url }, proxies = { ms.addr }, metrics_log_interval = 0 })
    assert.same({ nil, want }, { pool:get(ng.url("/small.txt"), { timeout = 0.5 }) })
    pool:close()
  end)
end)

describe("sessions and their proxies", function()
  local ng

  setup(function() ng = env.nginx() end)

  teardown(function()
    scatter.close_all()
    env.cleanup()
  end)

  it("moves off a proxy its source no longer lists", function()
    local a, b = env.microsocks(), env.microsocks()
    local path = ng.root .. "/session-list.txt"
    write(path, a.addr .. "\n" .. b.addr .. "\n")
    local pool = scatter.pool({ sources = { path }, source_refresh_interval = 0.2,
                                metrics_log_interval = 0, rate_limit = { default_interval = 0 } })
    local s = pool:session()
    assert(s:get(ng.url("/small.txt"), { timeout = 10 }))
    local gone = s.proxy
    local kept = gone == a.addr and b.addr or a.addr
    write(path, kept .. "\n")
    eventually(function()
      for _, p in ipairs(pool:proxies()) do
        if p.key == gone then return p.retired end
      end
    end, "the dropped proxy to be retired")
    local resp, err = s:get(ng.url("/small.txt"), { timeout = 10 })
    assert.is_nil(err)
    assert.equal(kept, resp.proxy)
    assert.equal(kept, s.proxy)
    assert.equal(1, s.moves)
    pool:close()
  end)

  it("moves off a proxy that accepts and then never answers, after max_errors timeouts", function()
    local a, b = env.microsocks(), env.microsocks()
    local pool = scatter.pool({ proxies = { a.addr, b.addr }, metrics_log_interval = 0,
                                rate_limit = { default_interval = 0 } })
    local s = pool:session({ max_errors = 2 })
    assert(s:get(ng.url("/small.txt"), { timeout = 10 }))
    local hung = s.proxy == a.addr and a or b
    local other = hung == a and b or a
    -- stopped, its listening socket still accepts: the greeting is never answered
    assert(os.execute("kill -STOP " .. hung.pid))
    local ok, err = pcall(function()
      for _ = 1, 2 do
        local resp, rerr = s:get(ng.url("/small.txt"), { timeout = 0.5 })
        assert.is_nil(resp)
        assert.equal("timeout: last error: proxy_timeout: no answer through the session's proxy "
          .. "before the deadline (proxy " .. hung.addr .. ")", rerr)
      end
      local resp, rerr = s:get(ng.url("/small.txt"), { timeout = 10 })
      assert.is_nil(rerr)
      assert.equal(other.addr, resp.proxy)
      assert.equal(other.addr, s.proxy)
      assert.equal(1, s.moves)
    end)
    os.execute("kill -CONT " .. hung.pid)
    pool:close()
    assert(ok, err)
  end)

  it("rests the pair for a pinned 429's Retry-After, as a race would, never a cooldown", function()
    -- (recorded as a plain block, a cooldown of 300 s locked the pool out)
    local a = env.microsocks()
    local pool = scatter.pool({ proxies = { a.addr }, metrics_log_interval = 0, cooldown_consecutive_fails = 1,
      cooldown_base = 300, cooldown_max = 300, rate_limit = { default_interval = 0 } })
    local s = pool:session()
    assert(s:get(ng.url("/small.txt"), { timeout = 10 }))
    local resp = s:get(ng.url("/status/429"), { timeout = 0.5 })
    assert.is_nil(resp)
    assert.equal(0, pool:metrics().cooldown_proxies)
    -- nginx's /status/429 asks for 1 s: the pair is usable again after it
    local err
    resp, err = pool:get(ng.url("/small.txt"), { timeout = 10 })
    assert.is_nil(err)
    assert.equal(ng.small_text, resp.body)
    pool:close()
  end)

  it("names the last error when a moved session times out", function()
    -- the pinned request's 403 moves the session; its only proxy then
    -- cools down, so the race finds none and the deadline passes
    local a = env.microsocks()
    local pool = scatter.pool({ proxies = { a.addr }, metrics_log_interval = 0,
                                cooldown_consecutive_fails = 1, cooldown_base = 300,
                                cooldown_max = 300, rate_limit = { default_interval = 0 } })
    local s = pool:session()
    assert(s:get(ng.url("/small.txt"), { timeout = 10 }))
    local resp, err = s:get(ng.url("/status/403"), { timeout = 1 })
    assert.is_nil(resp)
    assert.truthy(err:match("^timeout: last error: proxy_blocked: HTTP 403 %(proxy 127%.0%.0%.1:%d+%)$"), err)
    -- a later request's timeout does not carry this one's error
    resp, err = s:get(ng.url("/small.txt"), { timeout = 0.5 })
    assert.is_nil(resp)
    assert.falsy(err:find("403", 1, true), err)
    pool:close()
  end)
end)
