-- scatter.redis: the hiredis client on the scatter loop (DESIGN.md section
-- 9): replies, clear errors for a wrong URL, a refused or silent port and a
-- server that is not Redis, timeouts, and reconnecting after a restart.
local env = require("support.env")
local RS = require("support.redis")
local socket = require("socket")
local redis = require("scatter.redis")
local scatter = require("scatter")

describe("scatter.redis", function()
  local srv

  setup(function() srv = RS.start() end)
  teardown(env.cleanup)

  it("sends commands and decodes every reply type", function()
    local c = assert(redis.connect(srv.url))
    assert.equal("OK", c:call("SET", "k", "v\0w"))
    assert.equal("v\0w", c:call("GET", "k"))
    assert.equal(false, c:call("GET", "nokey"))
    assert.equal(3, c:call("RPUSH", "l", "a", 2, ""))
    assert.same({ "a", "2", "" }, c:call("LRANGE", "l", 0, -1))
    local v, err, lost = c:call("NOSUCHCOMMAND")
    assert.is_nil(v)
    assert.truthy(err:find("^ERR unknown command"), err)
    assert.is_false(lost)
    local s = c:script("return {1, 'x', false, redis.pcall('INCR', KEYS[1])}")
    c:call("SET", "str", "abc")
    local r = assert(c:eval(s, { "str" }, {}))
    assert.equal(1, r[1])
    assert.equal("x", r[2])
    assert.equal(false, r[3])
    assert.truthy(r[4].err:find("not an integer"), tostring(r[4].err))
    c:close()
  end)

  it("runs commands from many threads at once, each getting its own reply", function()
    local c = assert(redis.connect(srv.url))
    local ths = {}
    for i = 1, 50 do
      ths[i] = scatter.spawn(function()
        c:call("SET", "t" .. i, i)
        return c:call("GET", "t" .. i)
      end)
    end
    for i = 1, 50 do
      local ok, v = scatter.wait_any(ths[i])
      assert.is_true(ok, tostring(v))
      assert.equal(tostring(i), v)
    end
    c:close()
  end)

  it("writes a pass's commands together, also those the socket cannot take at once", function()
    local c = assert(redis.connect(srv.url))
    -- 16 MiB values overflow the socket buffer: the rest waits for writable
    local big = ("0123456789abcdef"):rep(1024 * 1024)
    local ths = {}
    for i = 1, 3 do
      ths[i] = scatter.spawn(function()
        assert.equal("OK", c:call("SET", "big" .. i, big .. i))
        return c:call("STRLEN", "big" .. i)
      end)
    end
    for i = 1, 3 do
      local ok, n = scatter.wait_any(ths[i])
      assert.is_true(ok, tostring(n))
      assert.equal(#big + 1, n)
    end
    assert.equal(big .. "2", c:call("GET", "big2"))
    c:close()
  end)

  it("names what is wrong with a bad URL", function()
    for url, msg in pairs({
      ["http://127.0.0.1:1"] = "not a Redis URL",
      ["redis://"] = "no host",
      ["redis://127.0.0.1:99999"] = "bad port",
      ["redis://127.0.0.1:x"] = "bad port",
      ["redis://127.0.0.1:6390/x"] = "bad database",
      ["rediss://127.0.0.1"] = "TLS",
    }) do
      local c, err = redis.connect(url)
      assert.is_nil(c)
      assert.truthy(err:find(msg, 1, true), url .. ": " .. tostring(err))
    end
  end)

  it("fails at once, clearly, on a refused port and names the URL without its password", function()
    local port = env.free_port()
    local t0 = socket.gettime()
    local c, err = redis.connect("redis://:s3cret@127.0.0.1:" .. port .. "/0")
    assert.is_nil(c)
    assert.truthy(err:find("redis://127.0.0.1:" .. port .. "/0: cannot connect: Connection refused", 1, true), err)
    assert.is_nil(err:find("s3cret", 1, true))
    assert.truthy(socket.gettime() - t0 < 2)
  end)

  it("rejects a server that is not Redis", function()
    local ng = env.nginx()
    local c, err = redis.connect("redis://127.0.0.1:" .. ng.port .. "/0")
    assert.is_nil(c)
    assert.truthy(err:find("cannot connect: Protocol error", 1, true), err)
  end)

  it("gives up on a server that accepts but never answers, after connect_timeout", function()
    local l = assert(socket.bind("127.0.0.1", 0))
    local _, port = l:getsockname()
    local c, err = redis.connect("redis://127.0.0.1:" .. port, { connect_timeout = 0.3 })
    l:close()
    assert.is_nil(c)
    assert.truthy(err:find("no connection within 0.3s", 1, true), err)
  end)

  it("times out a reply that does not come and reconnects", function()
    local c = assert(redis.connect(srv.url, { timeout = 0.3 }))
    -- a blocking read beyond its allowance stands for a hung server
    local v, err, lost = c:call("BLPOP", "never", 2)
    assert.is_nil(v)
    assert.truthy(err:find("no reply within 0.3s", 1, true), err)
    assert.is_true(lost)
    assert.equal("v\0w", c:call_retry("GET", "k"))
    -- a blocking command told its own time is fine
    assert.equal(false, c:call_block(1, "BLPOP", "never", 0.5))
    c:close()
  end)

  it("AUTH and SELECT from the URL", function()
    local c = assert(redis.connect(srv.url))
    c:call("CONFIG", "SET", "requirepass", "pw")
    local bad, err = redis.connect("redis://:nope@127.0.0.1:" .. srv.port .. "/0")
    assert.is_nil(bad)
    assert.truthy(err:find("handshake refused", 1, true), err)
    local c2 = assert(redis.connect("redis://:pw@127.0.0.1:" .. srv.port .. "/3"))
    c2:call("SET", "in3", "yes")
    c2:call("CONFIG", "SET", "requirepass", "")
    c2:close()
    c:close()
    local c3 = assert(redis.connect((srv.url:gsub("/0$", "/3"))))
    assert.equal("yes", c3:call("GET", "in3"))
    c3:close()
  end)

  it("reconnects after a restart; call_retry waits for it, nothing written is lost (AOF)", function()
    local c = assert(redis.connect(srv.url))
    assert.equal("OK", c:call("SET", "durable", "1"))
    -- SIGTERM: Redis writes its AOF out (a kill -9 may lose the last
    -- second of writes under appendfsync everysec, Redis' default)
    srv:stop()
    local v, err, lost = c:call("GET", "durable")
    assert.is_nil(v)
    assert.is_true(lost, tostring(err))
    local th = scatter.spawn(function() return c:call_retry("GET", "durable") end)
    scatter.sleep(0.3)
    srv:restart()
    local ok, got = scatter.wait_any(th)
    assert.is_true(ok, tostring(got))
    assert.equal("1", got)
    assert.is_true(c.up)
    c:close()
  end)
end)
