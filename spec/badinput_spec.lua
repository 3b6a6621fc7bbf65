-- The bad-input catalogue: what scatter does with each kind of bad input.
-- Every case gets a clear error or a handled outcome, never a crash, a hang
-- or a lost task. One `it` per row (the "what it gets" column is what the
-- test asserts).
--
-- | input                                        | what it gets                                                          |
-- |----------------------------------------------|-----------------------------------------------------------------------|
-- | every config field with a wrong type/range   | error "scatter.pool: field '<f>' must be ..."                         |
-- | an unknown config field                      | error "unknown field '<f>' (did you mean '<g>'?)"                     |
-- | a config that is not a table / bad key type  | error "configuration must be a table" / "keys must be field names"    |
-- | bad URLs (empty, relative, ftp, no host,     | nil, "invalid_request: <why>" (no attempt started)                    |
-- |   bad port, spaces, CR/LF, NUL, bad host)    |                                                                       |
-- | CR/LF/NUL in a header value                  | nil, "invalid_request: header '<n>' contains CR, LF or NUL"           |
-- | CR/LF, ':' or space in a header name         | nil, "invalid_request: bad header name ..."                           |
-- | bad request fields (method, body, timeout,   | nil, "invalid_request: <why>"                                         |
-- |   max_body, unknown field)                   |                                                                       |
-- | a body bigger than max_body                  | nil, "timeout: last error: too_large: ..." within the task's timeout  |
-- | a classifier that raises                     | target_error, classifier_errors counted; the task goes on and times out |
-- | a classifier that yields                     | target_error ("classifier yielded"), same as above                    |
-- | a classifier that runs long (0.3 s busy)     | its verdict is used; the loop simply waits for it                     |
-- | a classifier returning garbage (nil, 42, "x")| target_error ("classifier returned ..."), counted                     |
-- | a proxy answering the greeting with garbage  | socks_error / proxy error; another proxy serves the task              |
-- | a proxy with a garbage CONNECT reply         | socks_error; another proxy serves the task                            |
-- | a target answering garbage instead of HTTP   | nil, "timeout: last error: ..." (a transport error, not a response)   |
-- | a target sending endless headers             | the attempt is cut at 1 MiB of headers; nil, "timeout: ..."           |
-- | a target sending an endless body             | too_large at max_body; nil, "timeout: last error: too_large ..."      |
-- | a 50 MB junk source list                     | warn "no proxies in N line(s) (not a proxy list?)"; "timeout: no_proxies" |
-- | a junk source beside a good proxy            | a warning; the pool works with the good proxy                         |
-- | state_file that is a directory               | warn "starting cold"; saving fails with a warning; pool works         |
-- | state_file under a regular file (unreadable) | same: warn, cold start, save fails with a warning                     |
-- | state_file on a full disk (64 KiB tmpfs)     | save fails with a warning (no space); the old file is left intact     |
-- | state_file holding junk / wrong JSON shapes  | warn "not JSON" / "not a scatter state file"; cold start; file kept   |
local env = require("support.env")
local scatter = require("scatter")
local config = require("scatter.config")
local log = require("scatter.log")

local SERVER = [[
-- A misbehaving TCP server for badinput_spec: luajit server.lua PORT MODE
local socket = require("socket")
local port, mode = tonumber(arg[1]), arg[2]
local srv = assert(socket.bind("127.0.0.1", port))
srv:settimeout(0)
local clients = {}
local JUNK = ("\0\255garbage\r\n"):rep(100)
local function reply(c)
  local st = clients[c]
  if mode == "socks_greeting" then
    if st.n >= 1 then st.out = "\7\7\7\7" .. JUNK; st.close = true end
  elseif mode == "socks_reply" then
    if st.stage == nil and st.n >= 3 then st.out, st.stage = "\5\0", 1
    elseif st.stage == 1 and st.n >= 10 then st.out, st.stage, st.close = "\5\0\0\9" .. JUNK, 2, true end
  elseif mode == "http_garbage" then
    if st.buf:find("\r\n\r\n") then st.out, st.close = JUNK, true end
  elseif mode == "endless_headers" then
    if st.buf:find("\r\n\r\n") and not st.stage then
      st.stage = 1
      st.out = "HTTP/1.1 200 OK\r\n"
      st.more = ("X-Junk: " .. ("h"):rep(1000) .. "\r\n"):rep(16)
    end
  elseif mode == "endless_body" then
    if st.buf:find("\r\n\r\n") and not st.stage then
      st.stage = 1
      st.out = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"
      st.more = ("b"):rep(16384)
    end
  end
end
while true do
  local rs, ws = {}, {}
  rs[1] = srv
  for c, st in pairs(clients) do
    rs[#rs + 1] = c
    if st.out ~= "" or st.more then ws[#ws + 1] = c end
  end
  local r, w = socket.select(rs, ws, 1)
  for _, c in ipairs(r) do
    if c == srv then
      local cl = srv:accept()
      if cl then
        cl:settimeout(0)
        clients[cl] = { buf = "", n = 0, out = "" }
      end
    else
      local data, err, part = c:receive(4096)
      data = data or part
      if data and #data > 0 then
        local st = clients[c]
        st.buf, st.n = st.buf .. data, st.n + #data
        reply(c)
      end
      if err == "closed" then c:close(); clients[c] = nil end
    end
  end
  for _, c in ipairs(w) do
    local st = clients[c]
    if st then
      if st.out == "" and st.more then st.out = st.more end
      local i, err, partial = c:send(st.out)
      local sent = i or partial or 0
      st.out = st.out:sub(sent + 1)
      if err == "closed" then c:close(); clients[c] = nil
      elseif st.out == "" and st.close then c:close(); clients[c] = nil end
    end
  end
end
]]

-- Captures log lines while fn runs; returns them (and fn's results).
local function logged(fn)
  local lines, sink = {}, log.sink
  log.sink = function(line) lines[#lines + 1] = line end
  local res = { n = 0 }
  local function keep(...) res = { n = select("#", ...), ... } end
  keep(pcall(fn))
  log.sink = sink
  assert(res[1], res[2])
  return lines, unpack(res, 2, res.n)
end

local function slurp(path) return (assert(env.read_file(path), "missing " .. path)) end

local function grep(lines, pat)
  for _, l in ipairs(lines) do
    if l:find(pat) then return l end
  end
  return nil
end

describe("bad input", function()
  local ng, farm, dir

  setup(function()
    ng = env.nginx()
    farm = env.farm({ "good count=2" })
    dir = env.tmpdir()
    local f = assert(io.open(dir .. "/server.lua", "w"))
    f:write(SERVER)
    f:close()
  end)

  teardown(function()
    scatter.close_all()
    env.cleanup()
  end)

  -- Starts the misbehaving server in `mode`; returns its port.
  local function server(mode)
    local port = env.free_port()
    local p = env.spawn({ "luajit", dir .. "/server.lua", tostring(port), mode },
      { name = "bad-" .. mode, log = dir .. "/" .. mode .. ".log" })
    env.wait_port(port, p)
    return port
  end

  local function pool_of(extra)
    local cfg = { proxies = { farm.proxies[1] }, metrics_log_interval = 0,
      rate_limit = { default_interval = 0 } }
    for k, v in pairs(extra or {}) do cfg[k] = v end
    return scatter.pool(cfg)
  end

  describe("configuration", function()
    it("rejects every field given a value of the wrong type or range", function()
      local names = {}
      for name in pairs(config.FIELDS) do names[#names + 1] = name end
      table.sort(names)
      assert.is_true(#names >= 20, "FIELDS looks incomplete")
      local checked = 0
      for _, name in ipairs(names) do
        local bads = { {}, "not-a-value", -7, true }
        if name == "rate_limit" then bads = { 5, { default_interval = "x" } } end
        if name == "sources" or name == "proxies" then bads = { "127.0.0.1:1", { 5 }, 5 } end
        if name == "sources" then
          bads = { "127.0.0.1:1", { 5 }, 5, { { url = 5 } }, { { url = "file:///x", scheme = "ftp" } },
                   { { url = "file:///x", schema = "http" } } }
        end
        if name == "name" or name == "state_file" or name == "ca_file" or name == "proxy_ca_file" then
          bads = { 5, {}, true }
        end
        if name == "prefer_remote_dns" or name == "tls_session_sharing" or name == "consensus_404" then bads = { "yes", 1, {} } end
        for _, bad in ipairs(bads) do
          local cfg = { proxies = { farm.proxies[1] }, metrics_log_interval = 0 }
          cfg[name] = bad
          if name == "proxies" then cfg.sources = nil end
          local ok, err = pcall(scatter.pool, cfg)
          if ok then err:close() end
          assert.is_false(ok, ("field %s accepted %s"):format(name, tostring(bad)))
          assert.truthy(tostring(err):find(name, 1, true), ("error for %s does not name it: %s"):format(name, err))
          checked = checked + 1
        end
      end
      assert.is_true(checked > 60)
    end)

    it("rejects an unknown field with a suggestion", function()
      local ok, err = pcall(scatter.pool, { proxies = { farm.proxies[1] }, max_inflite = 5 })
      assert.is_false(ok)
      assert.truthy(err:find("unknown field 'max_inflite' (did you mean 'max_inflight'?)", 1, true), err)
    end)

    it("rejects a config that is not a table, and keys that are not names", function()
      local ok, err = pcall(scatter.pool, "proxies=1")
      assert.is_false(ok)
      assert.truthy(err:find("configuration table expected, got string", 1, true), err)
      ok, err = pcall(scatter.pool, { farm.proxies[1] })
      assert.is_false(ok)
      assert.truthy(err:find("keys must be field names", 1, true), err)
    end)
  end)

  describe("requests", function()
    local pool
    setup(function() pool = pool_of() end)
    teardown(function() pool:close() end)

    it("rejects bad URLs without starting an attempt", function()
      local cases = {
        [""] = "not an absolute", ["/relative"] = "not an absolute",
        ["ftp://x.test/"] = "unsupported scheme", ["http://"] = "no host",
        ["http://x.test:0/"] = "bad port", ["http://x.test:99999/"] = "bad port",
        ["http://x.test/a b"] = "spaces or control", ["http://x.test/\r\nX: y"] = "spaces or control",
        ["http://x.test/\0"] = "contains a NUL byte", ["http://bad_host!/"] = "bad host",
        ["http://x.test:8o/"] = "bad port",
      }
      local before = pool:metrics().attempts_started
      for url, want in pairs(cases) do
        local resp, err = pool:get(url, { timeout = 5 })
        assert.is_nil(resp)
        assert.truthy(err:find("^invalid_request: ") and err:find(want, 1, true),
          ("%q gave %s"):format(url, tostring(err)))
      end
      assert.equal(before, pool:metrics().attempts_started)
    end)

    it("rejects CR, LF and NUL in header names and values", function()
      local cases = {
        { { ["X-A"] = "v\r\nX-Injected: 1" }, "contains CR, LF or NUL" },
        { { ["X-A"] = "v\nw" }, "contains CR, LF or NUL" },
        { { ["X-A"] = "v\0w" }, "contains CR, LF or NUL" },
        { { ["X-A"] = { "ok", "bad\r" } }, "contains CR, LF or NUL" },
        { { ["X-A\r\nX-B"] = "v" }, "bad header name" },
        { { ["X-A: v\nX"] = "v" }, "bad header name" },
        { { ["X A"] = "v" }, "bad header name" },
        { { [""] = "v" }, "bad header name" },
        { { [5] = "v" }, "bad header name" },
        { { ["X-A"] = true }, "must be a string" },
      }
      for _, c in ipairs(cases) do
        local resp, err = pool:request({ url = ng.url("/small.txt"), headers = c[1], timeout = 5 })
        assert.is_nil(resp)
        assert.truthy(err:find("^invalid_request: ") and err:find(c[2], 1, true), tostring(err))
      end
    end)

    it("rejects bad request fields", function()
      local u = ng.url("/small.txt")
      local cases = {
        { { url = u, method = "GE T" }, "bad method" },
        { { url = u, method = 5 }, "bad method" },
        { { url = u, body = {} }, "body must be a string" },
        { { url = u, timeout = -1 }, "timeout must be" },
        { { url = u, timeout = 0 / 0 }, "timeout must be" },
        { { url = u, max_body = 1.5 }, "max_body must be" },
        { { url = u, max_body = -1 }, "max_body must be" },
        { { url = u, colour = "red" }, "unknown field 'colour'" },
        { { url = u, headers = "X: y" }, "headers must be a table" },
      }
      for _, c in ipairs(cases) do
        local resp, err = pool:request(c[1])
        assert.is_nil(resp)
        assert.truthy(err:find("^invalid_request: ") and err:find(c[2], 1, true), tostring(err))
      end
    end)

    it("stops a body bigger than max_body with too_large", function()
      local resp, err = pool:get(ng.url("/big.bin"), { timeout = 3, max_body = 1000, race = false })
      assert.is_nil(resp)
      assert.truthy(err:find("too_large", 1, true), err)
    end)
  end)

  describe("classifiers", function()
    local function run_with(cls, timeout)
      local pool = pool_of({ classifier = cls })
      local resp, err = pool:get(ng.url("/small.txt"), { timeout = timeout or 1.5, race = false })
      local m = pool:metrics()
      pool:close()
      return resp, err, m
    end

    it("an error becomes target_error and is counted; the task is not lost", function()
      local lines, resp, err, m = logged(function() return run_with(function() error("boom") end) end)
      assert.is_nil(resp)
      assert.truthy(err:find("^timeout"), err)
      assert.is_true(m.classifier_errors > 0)
      assert.truthy(grep(lines, "boom"), "the error was not logged")
    end)

    it("a yield becomes target_error and is counted", function()
      local lines, resp, err, m = logged(function()
        return run_with(function() coroutine.yield() return "success" end)
      end)
      assert.is_nil(resp)
      assert.truthy(err:find("^timeout"), err)
      assert.is_true(m.classifier_errors > 0)
      assert.truthy(grep(lines, "yielded"), "the yield was not logged")
    end)

    it("a waiting call (scatter.sleep) inside it is refused the same way", function()
      local _, resp, err, m = logged(function()
        return run_with(function() scatter.sleep(0.01) return "success" end)
      end)
      assert.is_nil(resp)
      assert.truthy(err:find("^timeout"), err)
      assert.is_true(m.classifier_errors > 0)
    end)

    it("a long-running one delays the loop but its verdict is used", function()
      local resp, err = run_with(function(r)
        local t = os.clock()
        while os.clock() - t < 0.3 do end
        return r.status == 200 and "success" or "proxy_blocked"
      end, 30)
      assert.truthy(resp, err)
      assert.equal(200, resp.status)
    end)

    it("garbage verdicts become target_error and are counted", function()
      for _, v in ipairs({ false, 42, "sucess", {} }) do
        local lines, resp, err, m = logged(function() return run_with(function() return v end) end)
        assert.is_nil(resp)
        assert.truthy(err:find("^timeout"), err)
        assert.is_true(m.classifier_errors > 0)
        assert.truthy(grep(lines, "classifier returned"), "not logged for " .. tostring(v))
      end
    end)
  end)

  describe("hostile proxies and targets", function()
    it("a proxy answering the greeting with garbage loses to a good one", function()
      local bad = "127.0.0.1:" .. server("socks_greeting")
      local pool = scatter.pool({ proxies = { bad }, metrics_log_interval = 0, proxy_timeout = 2 })
      local resp, err = pool:get(ng.url("/small.txt"), { timeout = 1.5 })
      assert.is_nil(resp)
      assert.truthy(err:find("^timeout: last error: proxy_protocol: "), err)
      pool:close()
      pool = scatter.pool({ proxies = { bad, farm.proxies[1] }, metrics_log_interval = 0 })
      for _ = 1, 5 do
        resp, err = pool:get(ng.url("/small.txt"), { timeout = 20 })
        assert.truthy(resp, err)
        assert.equal(farm.proxies[1], resp.proxy)
      end
      pool:close()
    end)

    it("a proxy sending a garbage CONNECT reply gives proxy_protocol", function()
      local bad = "127.0.0.1:" .. server("socks_reply")
      local pool = scatter.pool({ proxies = { bad }, metrics_log_interval = 0, proxy_timeout = 2 })
      local resp, err = pool:get(ng.url("/small.txt"), { timeout = 1.5 })
      assert.is_nil(resp)
      assert.truthy(err:find("^timeout: last error: proxy_protocol: "), err)
      pool:close()
    end)

    it("a target answering garbage is a transport error, not a response", function()
      local port = server("http_garbage")
      local pool = pool_of()
      local resp, err = pool:get("http://127.0.0.1:" .. port .. "/", { timeout = 1.5, race = false })
      assert.is_nil(resp)
      assert.truthy(err:find("^timeout: last error: "), err)
      pool:close()
    end)

    it("a target sending endless headers is cut off", function()
      local port = server("endless_headers")
      local pool = pool_of()
      local resp, err = pool:get("http://127.0.0.1:" .. port .. "/", { timeout = 3, race = false })
      assert.is_nil(resp)
      assert.truthy(err:find("^timeout: last error: "), err)
      pool:close()
    end)

    it("a target sending an endless body is cut off at max_body", function()
      local port = server("endless_body")
      local pool = pool_of()
      local resp, err = pool:get("http://127.0.0.1:" .. port .. "/", { timeout = 3, race = false,
        max_body = 1024 * 1024 })
      assert.is_nil(resp)
      assert.truthy(err:find("too_large", 1, true), err)
      pool:close()
    end)
  end)

  describe("proxy sources", function()
    local junk
    setup(function()
      junk = dir .. "/junk.txt"
      local f = assert(io.open(junk, "wb"))
      -- 50 MB of lines that are no proxy (no digits, so no port either)
      local words = { "lorem", "ipsum", "<html>", "dolor;", "sit", "amet", "#x", "\t", "--", "@@" }
      local chunk = {}
      local s = 1
      for i = 1, 20000 do
        s = (s * 1103515245 + 12345) % 2147483648
        chunk[i] = words[math.floor(s / 65536) % #words + 1]
          .. words[math.floor(s / 8) % #words + 1] .. ((i % 7 == 0) and "\n" or " ")
      end
      chunk = table.concat(chunk) .. "\n"
      for _ = 1, math.ceil(50e6 / #chunk) do f:write(chunk) end
      f:close()
    end)

    -- a pool and the log lines until one matches pat: a list is read a
    -- slice per loop turn, so its warning comes once it is read to the end
    local function pool_until(cfg, pat)
      local lines, sink = {}, log.sink
      log.sink = function(line) lines[#lines + 1] = line end
      local ok, pool = pcall(function()
        local p = scatter.pool(cfg)
        scatter.run(function()
          local t0 = scatter.now() -- a bound against a hang, not a timed assertion
          while not grep(lines, pat) and scatter.now() - t0 < 120 do scatter.sleep(0.01) end
        end)
        return p
      end)
      log.sink = sink
      assert(ok, pool)
      return lines, pool
    end

    it("a 50 MB junk list alone: a warning, an empty pool, tasks time out", function()
      local lines, pool = pool_until({ sources = { "file://" .. junk }, metrics_log_interval = 0 },
        "no proxies in %d+ line")
      assert.truthy(grep(lines, "no proxies in %d+ line%(s%) %(not a proxy list%?%)"), table.concat(lines, "\n"))
      local resp, err = pool:get(ng.url("/small.txt"), { timeout = 0.5 })
      assert.is_nil(resp)
      assert.truthy(err:find("^timeout: no_proxies"), err)
      pool:close()
    end)

    it("a junk list beside a good proxy is a warning, and the pool works", function()
      local lines, pool = pool_until({ sources = { "file://" .. junk }, proxies = { farm.proxies[1] },
        metrics_log_interval = 0 }, "no proxies in")
      local resp, err = pool:get(ng.url("/small.txt"), { timeout = 20 })
      assert.truthy(resp, err)
      pool:close()
      assert.truthy(grep(lines, "no proxies in"), table.concat(lines, "\n"))
    end)
  end)

  describe("state files", function()
    local function with_state(path)
      local lines = logged(function()
        local pool = pool_of({ state_file = path, name = "bad" })
        local resp, err = pool:get(ng.url("/small.txt"), { timeout = 20 })
        assert.truthy(resp, err)
        pool:close()
      end)
      return lines
    end

    it("a directory: cold start and a failed save, both with a warning", function()
      local d = dir .. "/state-dir"
      os.execute("mkdir -p " .. d)
      local lines = with_state(d)
      assert.truthy(grep(lines, "starting cold"), table.concat(lines, "\n"))
      assert.truthy(grep(lines, "cannot save"), table.concat(lines, "\n"))
    end)

    it("a path under a regular file: cold start and a failed save", function()
      local lines = with_state("/etc/hostname/state.json")
      assert.truthy(grep(lines, "starting cold"), table.concat(lines, "\n"))
      assert.truthy(grep(lines, "cannot save"), table.concat(lines, "\n"))
    end)

    it("junk or a wrong shape: cold start, and the file is replaced by a good one", function()
      for i, content in ipairs({ "\0\1junk{", "[1,2,3]", '{"format":"scatter-state","version":99}',
        '{"format":"scatter-state","version":1,"proxy_fields":{},"pair_fields":{},"pools":5}' }) do
        local path = dir .. "/junk-state-" .. i .. ".json"
        local f = assert(io.open(path, "wb"))
        f:write(content)
        f:close()
        local lines = with_state(path)
        assert.truthy(grep(lines, "starting cold"), table.concat(lines, "\n"))
        local sections = assert(require("scatter.state").read(path))
        assert.truthy(sections.bad, "no section written to " .. path)
      end
    end)

    it("a full disk: the save fails with a warning and the old file stays", function()
      local mnt = dir .. "/full"
      os.execute("mkdir -p " .. mnt)
      if os.execute("mount -t tmpfs -o size=64k tmpfs " .. mnt .. " 2>/dev/null") ~= 0 then
        pending("cannot mount a tmpfs here (not root?)")
        return
      end
      local ok, err = pcall(function()
        local path = mnt .. "/state.json"
        with_state(path) -- a first, small, good file
        local good = slurp(path)
        -- fill the disk, then save a pool with enough proxies not to fit
        os.execute("dd if=/dev/zero of=" .. mnt .. "/fill bs=4k 2>/dev/null")
        local proxies = {}
        for i = 1, 3000 do proxies[i] = ("10.%d.%d.1:1080"):format(math.floor(i / 250), i % 250) end
        proxies[#proxies + 1] = farm.proxies[1]
        local lines = logged(function()
          local pool = scatter.pool({ proxies = proxies, state_file = path, name = "bad",
            metrics_log_interval = 0 })
          pool:close()
        end)
        assert.truthy(grep(lines, "cannot save"), table.concat(lines, "\n"))
        assert.equal(good, slurp(path))
      end)
      local unmounted = os.execute("umount " .. mnt) == 0
      assert(ok, err)
      assert.is_true(unmounted, "something still holds a file on the full disk")
    end)
  end)
end)
