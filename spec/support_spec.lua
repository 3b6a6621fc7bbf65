-- Checks the test-support layer itself (spec/support/env.lua) with the curl
-- CLI, so the servers are known good before scatter's own specs rely on them.
package.path = "spec/?.lua;" .. package.path
local env = require("support.env")
local cjson = require("cjson")

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs curl with the given arguments (a list, each shell-quoted). Returns a
-- table: rc (curl exit code), status (HTTP code), body, headers (raw text),
-- stderr.
local scratch
local function curl(args)
  scratch = scratch or env.tmpdir()
  local body, hdr, err = scratch .. "/body", scratch .. "/hdr", scratch .. "/err"
  local parts = { "curl -sS --max-time 5 -o", q(body), "-D", q(hdr),
                  "-w '%{http_code}'" }
  for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
  os.remove(body)
  local p = io.popen(table.concat(parts, " ") .. " 2>" .. q(err) .. "; echo \" $?\"")
  local out = p:read("*a")
  p:close()
  local status, rc = out:match("(%d*) (%d+)%s*$")
  local function slurp(path) return env.read_file(path) or "" end
  return {
    rc = tonumber(rc), status = tonumber(status), body = slurp(body),
    headers = slurp(hdr), stderr = slurp(err),
  }
end

local function header_values(headers, name)
  local vals = {}
  for line in headers:gmatch("[^\r\n]+") do
    local k, v = line:match("^([^:]+):%s*(.*)$")
    if k and k:lower() == name:lower() then vals[#vals + 1] = v end
  end
  return vals
end

describe("env.nginx", function()
  local srv

  setup(function() srv = env.nginx() end)
  teardown(function() srv.stop() end)

  it("serves /small.txt, /big.bin and /empty", function()
    local r = curl({ srv.url("/small.txt") })
    assert.same({ 0, 200, "hello from scatter\n" }, { r.rc, r.status, r.body })
    assert.equal(srv.small_text, r.body)

    r = curl({ srv.url("/big.bin") })
    assert.equal(200, r.status)
    assert.equal(srv.big_size, #r.body)
    assert.equal(4 * 1024 * 1024, srv.big_size)
    assert.equal(srv.big_head, r.body:sub(1, 16))
    assert.equal(srv.big_tail, r.body:sub(-16))
    assert.equal(env.big_content(), r.body)
    assert.matches("^%x+$", srv.big_sha256)
    assert.equal(64, #srv.big_sha256)

    r = curl({ srv.url("/empty") })
    assert.same({ 200, "" }, { r.status, r.body })
  end)

  it("serves /status/<code>", function()
    for _, code in ipairs({ 200, 403, 404, 429, 500, 503 }) do
      local r = curl({ srv.url("/status/" .. code) })
      assert.equal(code, r.status)
      assert.equal("status " .. code .. "\n", r.body)
    end
    local r = curl({ srv.url("/status/204") })
    assert.same({ 204, "" }, { r.status, r.body })
    assert.same({ "1" }, header_values(curl({ srv.url("/status/429") }).headers, "Retry-After"))

    r = curl({ srv.url("/status/301") })
    assert.equal(301, r.status)
    assert.same({ "/small.txt" }, header_values(r.headers, "Location"))
    r = curl({ "-L", srv.url("/status/301") })
    assert.same({ 200, "hello from scatter\n" }, { r.status, r.body })
  end)

  it("serves /headers, /json and /captcha", function()
    local r = curl({ srv.url("/headers") })
    assert.equal(200, r.status)
    assert.same({ "yes" }, header_values(r.headers, "X-Scatter"))
    assert.equal(2, #header_values(r.headers, "Set-Cookie"))

    r = curl({ srv.url("/json") })
    assert.equal(200, r.status)
    assert.matches("^application/json", header_values(r.headers, "Content-Type")[1])
    assert.same({ ok = true, data = { id = 7 } }, cjson.decode(r.body))

    r = curl({ srv.url("/captcha") })
    assert.equal(200, r.status)
    assert.matches("^text/html", header_values(r.headers, "Content-Type")[1])
    assert.matches("captcha", r.body)
  end)

  it("closes without a response on /close", function()
    assert.equal(52, curl({ srv.url("/close") }).rc)   -- empty reply
  end)

  it("echoes method, X-Test and the request body on /echo", function()
    local r = curl({ "-H", "X-Test: abc", srv.url("/echo") })
    assert.equal(200, r.status)
    assert.matches("^method=GET\n", r.body)
    assert.matches("\nx%-test=abc\n", r.body)
    assert.matches("\nbody=$", r.body)

    -- A multi-line body from a file, sent verbatim (--data-binary).
    local payload = "first line\nsecond=2&third=\"3\""
    local f = assert(io.open(srv.dir .. "/payload", "wb"))
    f:write(payload)
    f:close()
    r = curl({ "-H", "X-Test: post-1", "--data-binary", "@" .. srv.dir .. "/payload",
               "-H", "Host: scatter.test", srv.url("/echo") })
    assert.equal(200, r.status)
    assert.matches("^method=POST\n", r.body)
    assert.matches("\nx%-test=post%-1\n", r.body)
    assert.matches("\nhost=scatter%.test\n", r.body)
    assert.equal(payload, r.body:match("\nbody=(.*)$"))

    r = curl({ "-X", "PUT", "--data-binary", "x", srv.url("/echo") })
    assert.matches("^method=PUT\n", r.body)
  end)

  it("logs requests as JSON with addr, method, uri, status, bytes, host, body", function()
    curl({ "--data-binary", "logged-body", "-H", "Host: log.test", srv.url("/echo") })
    local entry = env.wait_until(function()
      for _, e in ipairs(srv.access_lines()) do
        if e.host == "log.test" then return e end
      end
    end, "the /echo entry in the access log", nil, 2)
    assert.same({ "127.0.0.1", "POST", "/echo", 200, "logged-body" },
                { entry.addr, entry.method, entry.uri, entry.status, entry.body })
    assert.is_true(entry.bytes > 0)
  end)

  it("throttles /rate/<bytes per second>/<file>", function()
    local t0 = require("socket").gettime()
    -- nginx lets 1 s worth through at once: 4 MiB at 2 MiB/s takes ~1 s.
    local r = curl({ srv.url("/rate/2097152/big.bin") })
    local elapsed = require("socket").gettime() - t0
    assert.equal(srv.big_size, #r.body)
    assert.is_true(elapsed > 0.6, "took only " .. elapsed .. " s")
  end)

  describe("over TLS", function()
    it("verifies against ca for localhost, *.test names and the IP", function()
      local r = curl({ "--cacert", srv.ca, srv.tls_url("localhost", "/small.txt") })
      assert.same({ 0, 200, "hello from scatter\n" }, { r.rc, r.status, r.body })

      local T = srv.tls_port
      r = curl({ "--cacert", srv.ca, "--resolve", "foo.test:" .. T .. ":127.0.0.1",
                 srv.tls_url("foo.test", "/json") })
      assert.same({ 0, 200 }, { r.rc, r.status })

      r = curl({ "--cacert", srv.ca, "--resolve", "scatter.test:" .. T .. ":127.0.0.1",
                 srv.tls_url("scatter.test", "/small.txt") })
      assert.same({ 0, 200 }, { r.rc, r.status })

      r = curl({ "--cacert", srv.ca, "https://127.0.0.1:" .. T .. "/small.txt" })
      assert.same({ 0, 200 }, { r.rc, r.status })
    end)

    it("fails verification against wrong_ca", function()
      local r = curl({ "--cacert", srv.wrong_ca, srv.tls_url("/small.txt") })
      assert.equal(60, r.rc)    -- CURLE_PEER_FAILED_VERIFICATION
    end)

    it("echoes over TLS too", function()
      local r = curl({ "--cacert", srv.ca, "--data-binary", "tls body",
                       srv.tls_url("/echo") })
      assert.equal("tls body", r.body:match("\nbody=(.*)$"))
    end)
  end)

  describe("env.microsocks", function()
    it("relays with remote DNS", function()
      local ms = env.microsocks()
      local r = curl({ "--socks5-hostname", ms.addr, srv.url("/small.txt") })
      assert.same({ 0, 200, "hello from scatter\n" }, { r.rc, r.status, r.body })
      ms.stop()
      assert.is_false(env.pid_alive(ms.pid))
    end)

    it("requires the configured credentials", function()
      local ms = env.microsocks({ user = "alice", pass = "s3cret" })
      assert.equal(97, curl({ "--socks5-hostname", ms.addr, srv.url("/small.txt") }).rc)
      local r = curl({ "-x", ms.url, srv.url("/small.txt") })
      assert.same({ 0, 200 }, { r.rc, r.status })
      ms.stop()
    end)
  end)

  describe("env.farm", function()
    if not env.have_farm() then
      pending("scatter-farm not built (" .. env.farm_bin() .. ")")
      return
    end

    local farm
    setup(function() farm = env.farm({ "good count=2", "refuse" }) end)
    teardown(function() farm.stop() end)

    it("lists proxies in config order", function()
      assert.equal(3, #farm.proxies)
      assert.same({ "good", "good", "refuse" }, farm.profiles)
      assert.same({ farm.proxies[1], farm.proxies[2] }, farm.by_profile.good)
      assert.matches("^127%.0%.0%.1:%d+$", farm.proxies[1])
    end)

    it("relays through a good proxy resolving *.test itself", function()
      local url = srv.host_url("anything.test", "/small.txt")
      local r = curl({ "--socks5-hostname", farm.proxies[1], url })
      assert.same({ 0, 200, "hello from scatter\n" }, { r.rc, r.status, r.body })
      local entry = env.wait_until(function()
        for _, e in ipairs(farm.log_lines()) do
          if e.host == "anything.test" then return e end
        end
      end, "the CONNECT in the farm log", nil, 2)
      assert.equal(3, entry.atyp)
      assert.equal(srv.port, entry.dstport)
      assert.equal(farm.ports[1], entry.port)
    end)

    it("answers on the control port", function()
      assert.matches("^OK", assert(farm.control("stats")))
    end)
  end)
end)

describe("env.cleanup", function()
  it("stops every process and removes the temp dirs", function()
    local srv = env.nginx()
    local ms = env.microsocks()
    local pids = { srv.pid, ms.pid }
    local dirs = { srv.dir }
    if env.have_farm() then
      local farm = env.farm({ "good" })
      pids[#pids + 1] = farm.pid
      dirs[#dirs + 1] = farm.dir
    end
    for _, pid in ipairs(pids) do assert.is_true(env.pid_alive(pid)) end

    env.cleanup()

    for _, pid in ipairs(pids) do
      assert.is_false(env.pid_alive(pid), "pid " .. pid .. " still running")
    end
    for _, dir in ipairs(dirs) do
      assert.is_nil((io.open(dir .. "/nginx.conf")))
      assert.is_nil((io.open(dir)))
    end
    assert.is_false(env.port_open(srv.port))
  end)

  it("reports a server that dies during startup with its log", function()
    local p = env.spawn({ "sh", "-c", "echo 'bind: Address in use, really' >&2; exit 3" },
                        { name = "dying" })
    local ok, err = pcall(env.wait_port, env.free_port(), p)
    assert.is_false(ok)
    assert.matches("dying exited %(exit 3%)", err)
    assert.matches("bind: Address in use, really", err)
    env.cleanup()
  end)
end)
