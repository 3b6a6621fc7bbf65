-- `scatter serve` used carelessly: clients that do not wait for an
-- answer before sending a big body, bad session options, startup errors.
-- Each case is a bug found by probing serve as a user (2026-12-03).
package.path = "spec/?.lua;" .. package.path
local env = require("support.env")
local socket = require("socket")
local ffi = require("ffi")

local S = require("support.serve")
local PY, sh, q, serve, proxies_lua = S.PY, S.sh, S.q, S.serve, S.proxies_lua

describe("scatter serve, refused requests", function()
  local ng, p, port
  setup(function()
    ng = env.nginx()
    local farm = env.farm({ "good count=2" })
    p, port = serve("{ proxies = " .. proxies_lua(farm.proxies) .. " }")
  end)
  teardown(function() env.cleanup() end)

  local function still_works()
    local out = sh("curl -sS -i --max-time 20 -x http://127.0.0.1:" .. port .. " " .. q(ng.url("/small.txt")))
    assert.matches("^HTTP/1.1 200 OK.*hello from scatter\n$", out)
  end

  -- Python's http.client (and requests) sends the whole body before it
  -- reads: closing with its bytes unread reset the connection, and the
  -- 413 sitting in the client's buffer was lost with it.
  -- curl's CURLOPT_MAXFILESIZE (max_body) refuses a Content-Length over
  -- it even when no body is asked for: every HEAD of a big file was
  -- "too_large", blamed on each proxy in turn, then a 504 at the timeout
  it("a HEAD of a file over 16 MiB answers with its length", function()
    env.write_file(ng.root .. "/big17.bin", ("0123456789abcdef"):rep(17 * 65536))
    local out = sh("curl -sS -I --max-time 60 -x http://127.0.0.1:" .. port .. " " .. q(ng.url("/big17.bin")))
    assert.matches("^HTTP/1.1 200 OK\r\n", out)
    assert.matches("\r\ncontent%-length: 17825792\r\n", out:lower())
    still_works()
  end)

  it("a body over 16 MiB from a client that sends it all first gets the 413, not a reset", function()
    local f = env.script("post413.py", ([[
import http.client
for body in (b"x" * (20 << 20), b"y" * (17 << 20)):
    c = http.client.HTTPConnection("127.0.0.1", %d, timeout=30)
    try:
        c.request("POST", "%s", body=body)
        r = c.getresponse()
        print(r.status, r.getheader("X-Scatter-Error"))
    except OSError as e:
        print("error", e)
    c.close()
]]):format(port, ng.url("/echo")))
    assert.equals("413 request body over 16 MiB\n413 request body over 16 MiB\n", sh(PY .. " " .. q(f)))
    still_works()
  end)

  it("a Content-Length over 16 MiB is refused at once: no 100 Continue, no upload first", function()
    local c = socket.tcp()
    c:settimeout(10)
    assert(c:connect("127.0.0.1", port))
    assert(c:send("POST " .. ng.url("/echo") .. " HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n"
      .. "Expect: 100-continue\r\n\r\n"))
    local line = c:receive("*l")
    c:close()
    assert.equals("HTTP/1.1 413 Content Too Large", line)
    still_works()
  end)

  it("a header block over 64 KiB from a client still sending gets the 431, not a reset", function()
    local c = socket.tcp()
    c:settimeout(10)
    assert(c:connect("127.0.0.1", port))
    -- 1 MiB of headers, all sent before anything is read
    local ok = c:send("GET " .. ng.url("/small.txt") .. " HTTP/1.1\r\n" .. ("X-Pad: " .. ("p"):rep(1000) .. "\r\n"):rep(1024))
    assert.truthy(ok)
    local line, err = c:receive("*l")
    c:close()
    assert.equals("HTTP/1.1 431 Request Header Fields Too Large", line, err)
    still_works()
    assert.is_true(p:alive())
  end)
end)

describe("scatter serve, big heads", function()
  teardown(function() env.cleanup() end)

  -- http-parser stops at 80 KiB of head on its own (HPE_HEADER_OVERFLOW)
  -- before serve's count of 64 KiB sees a value that spans reads
  it("one header value of 200 KiB: 431, like any head over 64 KiB", function()
    local ng = env.nginx()
    local farm = env.farm({ "good count=1" })
    local p, port = serve("{ proxies = " .. proxies_lua(farm.proxies) .. " }")
    for _, size in ipairs({ 200 * 1024, 81 * 1024 }) do
      local c = socket.tcp()
      c:settimeout(10)
      assert(c:connect("127.0.0.1", port))
      c:send("GET " .. ng.url("/small.txt") .. " HTTP/1.1\r\nX-Big: " .. ("v"):rep(size) .. "\r\n\r\n")
      local out = c:receive("*a")
      c:close()
      assert.matches("^HTTP/1.1 431 Request Header Fields Too Large\r\n", out)
      assert.matches("X%-Scatter%-Error: request header block over 64 KiB\r\n", out)
    end
    assert.is_true(p:alive())
  end)
end)

describe("scatter serve, draining", function()
  teardown(function() env.cleanup() end)

  -- a kept-alive client was told nothing and sent its next request into
  -- a connection serve closed
  it("an answer written while draining says Connection: close", function()
    pcall(ffi.cdef, "int kill(int pid, int sig);")
    local ng = env.nginx()
    local farm = env.farm({ "slow latency=1" })
    local p, port = serve("{ proxies = " .. proxies_lua(farm.proxies) .. " }")
    local c = socket.tcp()
    c:settimeout(20)
    assert(c:connect("127.0.0.1", port))
    assert(c:send("GET " .. ng.url("/small.txt") .. " HTTP/1.1\r\nHost: x\r\n\r\n"))
    env.wait_until(function()
      for _, e in ipairs(farm.log_lines()) do
        if e.action then return true end
      end
    end, "the request to reach the farm")
    ffi.C.kill(p.pid, 15)
    local out = c:receive("*a")
    c:close()
    assert.matches("^HTTP/1.1 200 OK\r\n", out)
    assert.matches("\r\nConnection: close\r\n\r\nhello from scatter\n$", out)
    env.wait_until(function() return p:reap() end, "serve to exit", nil, 10)
    assert.equals("exit 143", p.status)
  end)
end)

describe("scatter serve, bad setup", function()
  teardown(function() env.cleanup() end)
  -- a serve that starts after all must not hang the spec
  local BOUND = { env = "timeout 60" }

  it("refuses bad session options at start, naming the option", function()
    local f = env.script("badsession.lua", "return { proxies = { '127.0.0.1:1' }, session = { nope = 1 } }")
    local rc, _, err = env.cli("serve --listen 0 --quiet --config " .. q(f), BOUND)
    assert.equals(1, rc)
    assert.matches("session: pool:session: unknown option 'nope'", err)
    f = env.script("badsession2.lua", "return { proxies = { '127.0.0.1:1' }, session = { max_uses = 0 } }")
    rc, _, err = env.cli("serve --listen 0 --quiet --config " .. q(f), BOUND)
    assert.equals(1, rc)
    assert.matches("max_uses must be an integer >= 1", err)
  end)

  it("a port in use or a bad config is one line, without a Lua traceback", function()
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, busy = s:getsockname()
    local ok = env.script("ok.lua", "return { proxies = { '127.0.0.1:1' } }")
    local rc, _, err = env.cli("serve --quiet --listen " .. busy .. " --config " .. q(ok), BOUND)
    s:close()
    assert.equals(1, rc)
    assert.equals("scatter: serve: cannot listen on 127.0.0.1:" .. busy .. ": address already in use\n", err)
    local f = env.script("badfield.lua", "return { no_such_field = 1 }")
    rc, _, err = env.cli("serve --listen 0 --quiet --config " .. q(f), BOUND)
    assert.equals(1, rc)
    assert.matches("^scatter: serve: scatter.pool: unknown field 'no_such_field'\n$", err)
  end)
end)
