-- scatter.redis: the hiredis client on the scatter loop (DESIGN.md section
-- 9): replies, clear errors for a wrong URL, a refused or silent port and a
-- server that is not Redis, timeouts, and reconnecting after a restart.
local env = require("support.env")
local RS = require("support.redis")
local socket = require("socket")
local redis = require("scatter.redis")
local scatter = require("scatter")

-- A server that speaks RESP but is not Redis, in a python3 child (stopped
-- by PID through env): binds 127.0.0.1:0 and prints its port. Modes:
--   twice     sends +OK +OK on accept, two replies nobody asked for
--   okclose   sends +OK on accept and hangs up (once the handshake is in:
--             unread bytes would make the close a reset)
--   answer    answers every command with arg (a RESP reply)
--   stray     answers every command with +PONG; on the first connection,
--             0.3 s after its first answer, sends an unasked-for +OK
local FAKE = [[
import socket, sys, threading, time
mode, arg = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "").encode()
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
print(s.getsockname()[1], flush=True)
def serve(c, first):
    if mode == "twice": c.sendall(b"+OK\r\n+OK\r\n")
    if mode == "okclose":
        c.sendall(b"+OK\r\n")
        c.recv(65536)
        c.close()
        return
    answered = False
    while True:
        d = c.recv(65536)
        if not d: return
        n = sum(1 for l in d.split(b"\r\n") if l.startswith(b"*"))
        if mode == "answer": c.sendall(arg * n)
        if mode == "stray":
            c.sendall(b"+PONG\r\n" * n)
            if first and not answered:
                time.sleep(0.3)
                c.sendall(b"+OK\r\n")
            answered = True
first = True
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c, first), daemon=True).start()
    first = False
]]

local function fake(mode, arg)
  local path = env.script("fake_redis.py", FAKE)
  local p = env.spawn({ "python3", path, mode, arg }, { name = "fake-redis-" .. mode })
  local port = env.wait_until(function()
    return tonumber((env.read_file(p.log) or ""):match("^(%d+)"))
  end, "the fake server's port", p)
  return { proc = p, port = port, url = "redis://127.0.0.1:" .. port .. "/0" }
end

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

  it("fails the open, without aborting, on a server sending replies nobody asked for", function()
    local f = fake("twice")
    -- in children: hiredis 0.14 asserted (an abort, rc 134) on such a reply
    local t0 = socket.gettime()
    local rc, _, err = env.cli("queue stats " .. f.url .. " --name shop")
    assert.equal(1, rc, err)
    assert.truthy(err:find(f.url .. ": cannot connect: not Redis (", 1, true), err)
    assert.truthy(socket.gettime() - t0 < 5)
    local script = env.script("stray_open.lua", ([[
      local scatter = require("scatter")
      local ok, q, err = pcall(scatter.queue, { redis = %q, name = "shop" })
      print(ok, q, err)
    ]]):format(f.url))
    local out
    rc, out, err = env.cli("run " .. script)
    assert.equal(0, rc, err)
    assert.truthy(out:find("cannot connect: not Redis (", 1, true), out)
    f.proc:stop()
  end)

  it("drops a connection on a reply nobody asked for mid-session, and reconnects", function()
    local f = fake("stray")
    local script = env.script("stray_later.lua", ([[
      local scatter = require("scatter")
      local redis = require("scatter.redis")
      local c = assert(redis.connect(%q))
      scatter.sleep(0.8) -- the stray reply comes 0.3 s after PING's
      assert(c:call_retry("PING") == "PONG")
      io.write("survived\n")
      c:close()
    ]]):format(f.url))
    local rc, out, err = env.cli("run " .. script)
    assert.equal(0, rc, err)
    assert.equal("survived\n", out)
    assert.truthy(err:find("connection lost (out of step with the server: a reply nobody asked for (+OK))", 1, true), err)
    f.proc:stop()
  end)

  it("fails the open at once on a server whose PING gets no PONG", function()
    local f = fake("okclose")
    local t0 = socket.gettime()
    local c, err = redis.connect(f.url)
    assert.is_nil(c)
    assert.truthy(err:find(f.url .. ": cannot connect: not Redis (PING answered +OK)", 1, true), err)
    -- the queue too: it used to reconnect for retry_for (300 s by default)
    local q, qerr = scatter.queue({ redis = f.url, name = "shop", retry_for = 20 })
    assert.is_nil(q)
    assert.truthy(qerr:find("cannot connect: not Redis (PING answered +OK)", 1, true), qerr)
    assert.truthy(socket.gettime() - t0 < 5, "took " .. (socket.gettime() - t0) .. "s")
    f.proc:stop()
    -- SELECT's answer must be OK; any other is named
    f = fake("answer", ":1\r\n")
    c, err = redis.connect((f.url:gsub("/0$", "/3")))
    assert.is_nil(c)
    assert.truthy(err:find("cannot connect: not Redis (SELECT answered :1)", 1, true), err)
    c, err = redis.connect(f.url)
    assert.is_nil(c)
    assert.truthy(err:find("cannot connect: not Redis (PING answered :1)", 1, true), err)
    f.proc:stop()
    -- and a real Redis still passes the handshake
    c = assert(redis.connect(srv.url))
    assert.equal("PONG", c:call("PING"))
    c:close()
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
