-- `scatter serve`: a local racing proxy, driven by real clients (curl,
-- Python's http.client and urllib) through the farm to the spec nginx.
package.path = "spec/?.lua;" .. package.path
local env = require("support.env")
local socket = require("socket")
local ffi = require("ffi")

local S = require("support.serve")
local PY, sh, q, serve, proxies_lua = S.PY, S.sh, S.q, S.serve, S.proxies_lua

-- One raw exchange: sends data, returns what came back until close.
local function raw(port, data, close_after)
  local c = socket.tcp()
  c:settimeout(5)
  assert(c:connect("127.0.0.1", port))
  c:send(data)
  if close_after then
    c:close()
    return
  end
  local out = c:receive("*a")
  c:close()
  return out
end

local function curl(port, args)
  return sh("curl -sS -i --max-time 20 -x http://127.0.0.1:" .. port .. " " .. args)
end

describe("scatter serve", function()
  local ng, farm, p, port
  setup(function()
    ng = env.nginx()
    farm = env.farm({ "good count=3" })
    p, port = serve("{ proxies = " .. proxies_lua(farm.proxies) .. ", connect_ports = { "
      .. ng.tls_port .. " }, max_concurrent_per_request = 3, rate_limit = { default_interval = 0 } }")
  end)
  teardown(function() env.cleanup() end)

  it("answers an absolute-form GET from curl -x, raced over K proxies", function()
    local out = curl(port, "-H 'X-Test: abc' -H 'X-Scatter-Session:' " .. q(ng.url("/small.txt")))
    assert.matches("^HTTP/1.1 200 OK\r\n", out)
    assert.matches("\r\n\r\nhello from scatter\n$", out)
    assert.matches("\r\nX%-Scatter%-Attempts: 3\r\n", out)
    assert.matches("\r\nX%-Scatter%-Proxy: 127%.0%.0%.1:%d+\r\n", out)
    assert.matches("\r\nContent%-Length: 19\r\n", out)
    -- hop-by-hop and transfer headers are ours, not the target's
    assert.is_nil(out:lower():match("transfer%-encoding"))
  end)

  it("forwards headers and a POST body, on one path only", function()
    local before = #ng.access_lines()
    local out = curl(port, "-H 'X-Test: posted' --data-binary 'a=1&b=2' " .. q(ng.url("/echo")))
    assert.matches("^HTTP/1.1 200", out)
    assert.matches("method=POST\n", out)
    assert.matches("x%-test=posted\n", out)
    assert.matches("body=a=1&b=2", out)
    assert.matches("\r\nX%-Scatter%-Attempts: 1\r\n", out)
    local posts = 0
    env.wait_until(function() return #ng.access_lines() > before end, "access log")
    for i, e in ipairs(ng.access_lines()) do
      if i > before and e.method == "POST" and e.uri == "/echo" then posts = posts + 1 end
    end
    assert.equals(1, posts)
  end)

  it("serves curl --parallel on kept-alive connections, bodies intact", function()
    local urls = {}
    for i = 1, 30 do urls[#urls + 1] = q(ng.url("/small.txt?i=" .. i)) end
    local out = sh("curl -sS --no-progress-meter --parallel --parallel-max 10 -x http://127.0.0.1:" .. port
      .. " -w '%{http_code}\\n' " .. table.concat(urls, " "))
    local _, bodies = out:gsub("hello from scatter\n", "")
    local _, oks = out:gsub("200\n", "")
    assert.equals(30, bodies)
    assert.equals(30, oks)
    local big = sh("curl -sS -x http://127.0.0.1:" .. port .. " " .. q(ng.url("/big.bin"))
      .. " | sha256sum")
    assert.equals(ng.big_sha256, big:match("^(%x+)"))
  end)

  it("opens https through a raced CONNECT tunnel (test CA)", function()
    local out = curl(port, "--cacert " .. q(ng.ca) .. " " .. q(ng.tls_url("/small.txt")))
    assert.matches("^HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 200 OK", out)
    assert.matches("hello from scatter\n$", out)
    local big = sh("curl -sS --cacert " .. q(ng.ca) .. " -x http://127.0.0.1:" .. port .. " "
      .. q(ng.tls_url("/big.bin")) .. " | sha256sum")
    assert.equals(ng.big_sha256, big:match("^(%x+)"))
  end)

  it("refuses a CONNECT to a port the config does not allow (403)", function()
    local out = raw(port, "CONNECT 127.0.0.1:" .. ng.port .. " HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.matches("^HTTP/1.1 403 Forbidden\r\n", out)
    assert.matches("X%-Scatter%-Error: connect_port: CONNECT to port " .. ng.port, out)
  end)

  it("works with Python's http.client (keep-alive) and urllib", function()
    local code = ([[
import http.client, urllib.request
c = http.client.HTTPConnection("127.0.0.1", %d, timeout=20)
for i in range(3):
    c.request("GET", "%s")
    r = c.getresponse()
    print(r.status, r.read().decode().strip())
c.request("POST", "%s", body=b"x" * 5000, headers={"Content-Type": "application/octet-stream"})
r = c.getresponse()
print(r.status, (b"body=" + b"x" * 5000) in r.read())
h = urllib.request.ProxyHandler({"http": "http://127.0.0.1:%d"})
o = urllib.request.build_opener(h)
print("urllib", o.open("%s", timeout=20).read().decode().strip())
]]):format(port, ng.url("/small.txt"), ng.url("/echo"), port, ng.url("/small.txt"))
    local f = env.script("client.py", code)
    local out = sh(PY .. " " .. q(f))
    assert.equals("200 hello from scatter\n200 hello from scatter\n200 hello from scatter\n"
      .. "200 True\nurllib hello from scatter\n", out)
  end)

  describe("bad input gets a clear status or a close, nothing else disturbed", function()
    local function still_works()
      assert.matches("^HTTP/1.1 200 OK.*hello from scatter\n$", curl(port, q(ng.url("/small.txt"))))
    end

    it("a malformed request line: 400", function()
      local out = raw(port, "GARBAGE\r\n\r\n")
      assert.matches("^HTTP/1.1 400 Bad Request\r\n", out)
      assert.matches("X%-Scatter%-Error: malformed request", out)
      still_works()
    end)

    it("an origin-form request (not a proxy request): 400", function()
      local out = raw(port, "GET /small.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      assert.matches("^HTTP/1.1 400 Bad Request\r\n", out)
      assert.matches("absolute%-form", out)
    end)

    it("proxy credentials that name no session are ignored", function()
      for _, cred in ipairs({ "Basic @@@=", "Basic Og==", "Basic " .. ("QUFB"):rep(400), "Bearer abc",
                              "Basic YQ", "basic   YTpi  " }) do
        local out = raw(port, "GET " .. ng.url("/small.txt") .. " HTTP/1.1\r\nHost: x\r\n"
          .. "Proxy-Authorization: " .. cred .. "\r\nConnection: close\r\n\r\n")
        assert.matches("^HTTP/1.1 200 OK.*hello from scatter\n$", out, cred)
      end
      still_works()
    end)

    it("a header block over 64 KiB: 431", function()
      local out = raw(port, "GET " .. ng.url("/small.txt") .. " HTTP/1.1\r\nX-Big: "
        .. ("a"):rep(70 * 1024) .. "\r\n\r\n")
      assert.matches("^HTTP/1.1 431 ", out)
      still_works()
    end)

    it("a client that disconnects mid-body", function()
      raw(port, "POST " .. ng.url("/echo") .. " HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
        .. ("z"):rep(10), true)
      still_works()
      assert.is_true(p:alive())
    end)

    it("10,000 idle client connections", function()
      local conns = {}
      for i = 1, 10000 do
        local c = socket.tcp()
        c:settimeout(5)
        local ok, err = c:connect("127.0.0.1", port)
        assert(ok, "connection " .. i .. ": " .. tostring(err))
        conns[i] = c
      end
      still_works()
      -- and every one of them is still served
      conns[10000]:send("GET " .. ng.url("/small.txt") .. " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      local out = conns[10000]:receive("*a")
      assert.matches("hello from scatter\n$", out)
      for _, c in ipairs(conns) do c:close() end
      still_works()
    end)
  end)
end)

describe("scatter serve through independent proxies", function()
  local proxies = require("support.proxies")
  teardown(function() env.cleanup() end)

  it("tunnels https and forwards http through tinyproxy (HTTP) and dante (SOCKS5)", function()
    local ng = env.nginx()
    local tp = proxies.tinyproxy({ connect_ports = { ng.tls_port } })
    local dante = proxies.dante({})
    local list = { tp.addr, "socks5h://" .. assert(dante.hostport) }
    assert.equals(2, #list)
    for _, px in ipairs(list) do
      local p, port = serve("{ proxies = { " .. ("%q"):format(px) .. " }, connect_ports = { "
        .. ng.tls_port .. " } }")
      local out = curl(port, "--cacert " .. q(ng.ca) .. " " .. q(ng.tls_url("/small.txt")))
      assert.matches("^HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 200 OK", out)
      assert.matches("hello from scatter\n$", out)
      assert.matches("^HTTP/1.1 200 OK.*hello from scatter\n$", curl(port, q(ng.url("/small.txt"))))
      p:stop()
    end
  end)

  it("tunnels https through an https:// proxy (TLS to the proxy stays in curl)", function()
    local ng = env.nginx()
    local farm = env.farm({ "good proto=https count=2" })
    local p, port = serve("{ proxies = " .. proxies_lua(farm.proxies) .. ", proxy_ca_file = "
      .. ("%q"):format(ng.ca) .. ", connect_ports = { " .. ng.tls_port .. " } }")
    local out = curl(port, "--cacert " .. q(ng.ca) .. " " .. q(ng.tls_url("/small.txt")))
    assert.matches("^HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 200 OK", out)
    assert.matches("hello from scatter\n$", out)
    -- a body bigger than any buffer, both ways: a POST echoed back
    local big = sh("curl -sS --cacert " .. q(ng.ca) .. " -x http://127.0.0.1:" .. port .. " "
      .. q(ng.tls_url("/big.bin")) .. " | sha256sum")
    assert.equals(ng.big_sha256, big:match("^(%x+)"))
    local body = env.script("post.bin", ("0123456789abcdef"):rep(40000))
    local echoed = sh("curl -sS --cacert " .. q(ng.ca) .. " -x http://127.0.0.1:" .. port
      .. " --data-binary @" .. q(body) .. " " .. q(ng.tls_url("/echo")))
    assert.matches("body=" .. ("0123456789abcdef"):rep(4), echoed)
    assert.matches("^HTTP/1.1 200 OK", curl(port, q(ng.url("/small.txt"))))
    p:stop()
  end)
end)

describe("scatter serve tunnels", function()
  teardown(function() env.cleanup() end)

  -- A server that reads a length line and that many bytes, or (length
  -- "eof") until the client's half-close; then answers with what it got
  -- and closes.
  local SINK = [[
import hashlib, socket, threading
def serve(c):
    f = c.makefile("rb")
    line = f.readline().strip()
    want = None if line == b"eof" else int(line or b"0")
    h, n = hashlib.sha256(), 0
    while want is None or n < want:
        b = f.read1(1 << 16)
        if not b:
            break
        h.update(b)
        n += len(b)
    try:
        c.sendall(("got %d %s\n" % (n, h.hexdigest())).encode())
    except OSError:
        pass  # a race's losing tunnel, closed
    c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(8)
print(s.getsockname()[1], flush=True)
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
]]

  it("relays a big upload both ways (SOCKS5: splice; https:// proxy: through curl), half-close passed on", function()
    local ng = env.nginx()
    local sink = env.spawn({ PY, env.script("sink.py", SINK) }, { name = "sink" })
    local sport = env.wait_until(function() return tonumber((env.read_file(sink.log) or ""):match("^(%d+)")) end,
      "the sink to listen", sink)
    local data = ("scatter tunnel "):rep(350000) -- 5.25 MB
    local sha = sh("sha256sum " .. q(env.script("upload.bin", data))):match("^(%x+)")
    -- through an https:// proxy the half-close reaches the proxy as a TCP
    -- FIN under its TLS (curl sends no close_notify for a CONNECT_ONLY
    -- handle), which the farm, like many, takes for the end of everything
    for _, case in ipairs({ { "good count=2", "eof" }, { "good count=2", #data },
                            { "good proto=https count=2", #data } }) do
      local farm = env.farm({ case[1] })
      local p, port = serve("{ proxies = " .. proxies_lua(farm.proxies) .. ", proxy_ca_file = "
        .. ("%q"):format(ng.ca) .. ", connect_ports = { " .. sport .. " } }")
      local c = socket.tcp()
      c:settimeout(20)
      assert(c:connect("127.0.0.1", port))
      assert(c:send("CONNECT 127.0.0.1:" .. sport .. " HTTP/1.1\r\nHost: x\r\n\r\n" .. case[2] .. "\n" .. data))
      if case[2] == "eof" then c:shutdown("send") end
      local out = c:receive("*a")
      c:close()
      assert.equals("HTTP/1.1 200 Connection established\r\n\r\ngot " .. #data .. " " .. sha .. "\n", out,
        case[1] .. " " .. case[2])
      p:stop()
      farm.stop()
    end
    sink:stop()
  end)

  it("closes a CONNECT tunnel silent both ways for --tunnel-idle seconds, not one in use", function()
    local ng = env.nginx()
    local farm = env.farm({ "good count=2" })
    local p, port = serve("{ proxies = " .. proxies_lua(farm.proxies) .. ", connect_ports = { "
      .. ng.port .. " } }", { "--tunnel-idle", "1" })
    local c = socket.tcp()
    c:settimeout(10)
    assert(c:connect("127.0.0.1", port))
    assert(c:send("CONNECT 127.0.0.1:" .. ng.port .. " HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert.equals("HTTP/1.1 200 Connection established", c:receive("*l"))
    assert.equals("", c:receive("*l"))
    -- requests inside the tunnel, 0.6 s apart: each keeps it open (nginx
    -- keeps the connection alive for 75 s, so only serve can end it)
    for i = 1, 3 do
      env.sleep(0.6)
      assert(c:send("GET /small.txt?t=" .. i .. " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"))
      assert.equals("HTTP/1.1 200 OK", c:receive("*l"), "request " .. i .. " through the tunnel")
      local len
      repeat
        local h = assert(c:receive("*l"))
        len = len or tonumber(h:match("^[Cc]ontent%-[Ll]ength: (%d+)"))
      until h == ""
      assert.equals("hello from scatter\n", c:receive(len))
    end
    local t0 = socket.gettime()
    local data, err = c:receive(1) -- nothing more comes: serve closes it
    local silent = socket.gettime() - t0
    c:close()
    assert.is_nil(data)
    assert.equals("closed", err)
    assert.is_true(silent >= 0.9, "closed after only " .. silent .. " s of silence")
    assert.is_true(silent < 8, "closed only after " .. silent .. " s")
    assert.is_true(p:alive())
    p:stop()
  end)

  it("refuses a bad --tunnel-idle, naming it", function()
    for _, bad in ipairs({ "0", "-1", "soon", "inf" }) do
      local rc, _, err = env.cli("serve --tunnel-idle " .. bad)
      assert.are_not.equal(0, rc)
      assert.matches("%-%-tunnel%-idle: a number of seconds > 0 expected", err)
    end
  end)

  it("clients that go away mid-body (tunnels, answers) stop nothing (SIGPIPE)", function()
    local ng = env.nginx()
    local farm = env.farm({ "good count=2" })
    local p, port = serve("{ proxies = " .. proxies_lua(farm.proxies) .. ", connect_ports = { "
      .. ng.port .. " } }")
    env.write_file(ng.root .. "/big40.bin", ("0123456789abcdef"):rep(40 * 65536))
    for _ = 1, 3 do
      -- a tunnel's client that reads 1000 bytes of 40 MiB and leaves
      sh("curl -sS -p -x http://127.0.0.1:" .. port .. " " .. q(ng.url("/big40.bin")) .. " 2>/dev/null | head -c 1000 >/dev/null")
      -- an answer's client that leaves before it is written
      raw(port, "GET " .. ng.url("/big.bin") .. " HTTP/1.1\r\nHost: x\r\n\r\n", true)
    end
    env.sleep(0.5) -- the answers are written meanwhile (or fail to be)
    assert.is_true(p:alive())
    assert.is_nil((env.read_file(p.log) or ""):find("draining", 1, true))
    assert.matches("^HTTP/1.1 200 OK.*hello from scatter\n$", curl(port, q(ng.url("/small.txt"))))
    p:stop()
  end)

  it("a client gone before its tunnel opens: the tunnel is closed, nothing leaks", function()
    local ng = env.nginx()
    local farm = env.farm({ "slow latency=0.5 count=2", "good proto=https count=1" })
    local p, port = serve("{ proxies = " .. proxies_lua(farm.proxies) .. ", proxy_ca_file = "
      .. ("%q"):format(ng.ca) .. ", connect_ports = { " .. ng.tls_port .. " } }")
    local function fds()
      local h = io.popen("ls /proc/" .. p.pid .. "/fd | wc -l")
      local n = tonumber(h:read("*a"))
      h:close()
      return n
    end
    assert.matches("^HTTP/1.1 200", curl(port, q(ng.url("/small.txt")))) -- warm: pools, connections
    local base = fds()
    for _ = 1, 5 do
      raw(port, "CONNECT 127.0.0.1:" .. ng.tls_port .. " HTTP/1.1\r\nHost: x\r\n\r\n", true)
    end
    env.wait_until(function() return #farm.log_lines() >= 5 end, "the tunnels to reach the farm")
    env.wait_until(function() return fds() <= base + 2 end, "serve to close the orphaned tunnels", p, 10)
    assert.is_true(p:alive())
    local out = curl(port, "--cacert " .. q(ng.ca) .. " " .. q(ng.tls_url("/small.txt")))
    assert.matches("hello from scatter\n$", out)
    p:stop()
  end)
end)

describe("scatter serve errors and shutdown", function()
  local ng
  setup(function() ng = env.nginx() end)
  teardown(function() env.cleanup() end)

  it("a timeout is a 504 with the last error in X-Scatter-Error", function()
    local farm = env.farm({ "refuse count=2" })
    local p, port = serve("{ proxies = " .. proxies_lua(farm.proxies) .. ", connect_ports = { "
      .. ng.tls_port .. " } }", { "--timeout", "1" })
    local out = curl(port, q(ng.url("/small.txt")))
    assert.matches("^HTTP/1.1 504 Gateway Timeout\r\n", out)
    assert.matches("X%-Scatter%-Error: timeout: last error: proxy_refused", out)
    local tout = curl(port, "--cacert " .. q(ng.ca) .. " " .. q(ng.tls_url("/small.txt")))
    assert.matches("CONNECT tunnel failed, response 504", tout)
    p:stop()
  end)

  it("SIGTERM drains: the request in flight is answered, then exit 143", function()
    local farm = env.farm({ "slow latency=1" })
    local mport = env.free_port()
    local p, port = serve("{ proxies = " .. proxies_lua(farm.proxies) .. " }",
      { "--metrics", "127.0.0.1:" .. mport })
    -- the metrics endpoint works as for `scatter run`
    assert.matches("scatter_tasks_completed_total", sh("curl -sS http://127.0.0.1:" .. mport .. "/metrics"))
    local pending = io.popen("curl -sS -i --max-time 20 -x http://127.0.0.1:" .. port .. " "
      .. q(ng.url("/small.txt")) .. " 2>&1")
    env.wait_until(function()
      for _, e in ipairs(farm.log_lines()) do
        if e.action then return true end
      end
    end, "the request to reach the farm")
    ffi.C.kill(p.pid, 15)
    local out = pending:read("*a")
    pending:close()
    assert.matches("^HTTP/1.1 200 OK.*hello from scatter\n$", out)
    env.wait_until(function() return p:reap() end, "serve to exit", nil, 10)
    assert.equals("exit 143", p.status)
    assert.matches("SIGTERM: draining", env.read_file(p.log))
    -- the listener is gone
    assert.is_false(env.port_open(port))
  end)

  it("rejects a bad command line and a bad config", function()
    local rc, _, err = env.cli("serve --timeout nope")
    assert.equals(2, rc)
    assert.matches("%-%-timeout: a number of seconds", err)
    local f = env.script("bad.lua", "return { connect_ports = { 'x' } }")
    rc, _, err = env.cli("serve --config " .. f)
    assert.equals(2, rc)
    assert.matches("connect_ports%[1%]", err)
    f = env.script("bad2.lua", "return { no_such_field = 1 }")
    rc, _, err = env.cli("serve --listen 0 --config " .. f)
    assert.equals(1, rc)
    assert.matches("no_such_field", err)
  end)
end)
