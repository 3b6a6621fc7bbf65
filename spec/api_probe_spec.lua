-- The Lua API used as a careless user would: waits in coroutines of the
-- user's own, loops driven from inside a classifier, a pool closed by its
-- classifier, router keys that are not host names, and the errors those
-- mistakes give (they name the mistake, not an internal file:line).
local env = require("support.env")
local scatter = require("scatter")
local runtime = require("scatter.runtime")
local log = require("scatter.log")

local function raises(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

-- an error a user's mistake gives must not point into scatter's own files
local function no_internal_position(msg)
  assert.falsy(msg:find("scatter/[%w_]+%.lua:%d+:"), msg)
end

describe("api probe: threads and waits", function()
  it("runs the other threads of a pass while one waits inside a coroutine of its own", function()
    local got = scatter.run(function()
      local ch = scatter.channel()
      -- a waits inside coroutine.wrap: its wait drives a nested loop; the
      -- sender, queued in the same pass, must run in it
      local a = scatter.spawn(function()
        return coroutine.wrap(function() return ch:receive(5) end)()
      end)
      local c = scatter.spawn(function() return ch:send("x") end)
      local ra, rc = scatter.wait_all(a, c)[1], scatter.wait_all(c)[1]
      return { ra[2], ra[3], rc[2] }
    end)
    assert.same({ "x", nil, true }, got)
  end)

  it("says what the deadlock is without pointing into scatter's files", function()
    local ch = scatter.channel()
    local msg = raises(function() ch:receive() end)
    assert.truthy(msg:find("deadlock", 1, true), msg)
    no_internal_position(msg)
    msg = raises(function() scatter.wait_any(scatter.spawn(function() ch:receive() end)) end)
    assert.truthy(msg:find("deadlock", 1, true), msg)
    no_internal_position(msg)
  end)
end)

describe("api probe: pools", function()
  local ng, good, reported, lines, old_sink

  setup(function()
    ng = env.nginx()
    good = env.farm({ "good count=3" }).by_profile.good
  end)

  teardown(function()
    scatter.close_all()
    env.cleanup()
  end)

  before_each(function()
    reported, lines = {}, {}
    runtime.report = function(msg) reported[#reported + 1] = msg end
    old_sink = log.sink
    log.sink = function(l) lines[#lines + 1] = l end
  end)

  after_each(function()
    log.sink = old_sink
    runtime.report = function(msg) io.stderr:write(msg, "\n") end
  end)

  local function pool_of(extra)
    local cfg = { proxies = good, metrics_log_interval = 0, rate_limit = { default_interval = 0 } }
    for k, v in pairs(extra or {}) do cfg[k] = v end
    return scatter.pool(cfg)
  end

  it("lets a classifier close its own pool: the task ends closed, nothing is reported", function()
    local pool
    pool = pool_of({ classifier = function() pool:close() return "success" end })
    local resp, err = pool:get(ng.url("/small.txt"), { timeout = 10 })
    assert.is_nil(resp)
    assert.equal("closed", err)
    assert.same({}, reported)
    assert.equal(0, pool:metrics().pending_tasks)
  end)

  -- scatter.run and scatter.step drive the loop: inside a classifier
  -- (itself called from the loop) they ran every other handler
  -- re-entrantly, classifiers nested in classifiers
  for _, case in ipairs({
    { "scatter.run", function() scatter.run(function() scatter.sleep(0.01) end) end },
    { "scatter.step", function() scatter.step() end },
  }) do
    it("refuses " .. case[1] .. " inside a classifier as a wait, not a nested loop", function()
      local calls, depth, deepest, later = 0, 0, 0, 0
      local pool = pool_of({ classifier = function()
        calls = calls + 1
        depth = depth + 1
        deepest = math.max(deepest, depth)
        if calls == 1 then
          local ok, e = pcall(case[2])
          depth = depth - 1
          if not ok then error(e, 0) end
          later = later + 1
          return "success"
        end
        depth = depth - 1
        return "success"
      end })
      local resp, err = pool:get(ng.url("/small.txt"), { timeout = 10 })
      assert(resp, err)
      scatter.sleep(0.05) -- a thread scatter.run left behind would run now
      assert.equal(1, deepest)
      assert.equal(0, later)
      assert.equal(1, pool:metrics().classifier_errors)
      local text = table.concat(lines, "\n")
      assert.truthy(text:find("a classifier must not", 1, true), text)
      no_internal_position(text)
      pool:close()
    end)
  end

  it("says scatter.sleep in a classifier is the mistake, without scatter's file:line", function()
    local pool = pool_of({ classifier = function(r)
      if r.url:find("first") then scatter.sleep(0.01) end
      return "success"
    end })
    local resp, err = pool:get(ng.url("/small.txt?first"), { timeout = 2 })
    assert.is_nil(resp)
    assert.truthy(err:find("timeout", 1, true), err)
    local text = table.concat(lines, "\n")
    assert.truthy(text:find("a classifier must not wait", 1, true), text)
    no_internal_position(text)
    pool:close()
  end)
end)

describe("api probe: router keys", function()
  local function cfg() return { proxies = { "127.0.0.1:1" }, metrics_log_interval = 0 } end

  it("refuses keys with URL parts or patterns instead of reading a host out of them", function()
    for key, why in pairs({
      ["user@a.test"] = "is a URL", ["a.test?x"] = "is a URL", ["a.test#x"] = "is a URL",
      ["*.a.test"] = "wildcard", [" a.test"] = "is not a host name",
    }) do
      local msg = raises(function() scatter.router({ [key] = cfg() }) end)
      assert.truthy(msg:find(("key %q "):format(key), 1, true), msg)
      assert.truthy(msg:find(why, 1, true), msg)
    end
  end)
end)

describe("api probe: metrics endpoint", function()
  local socket = require("socket")

  -- the server runs on this process's loop: the client must not block it
  local function scrape(port)
    local c = assert(socket.tcp())
    c:settimeout(0)
    c:connect("127.0.0.1", port)
    while not select(2, socket.select(nil, { c }, 0))[1] do scatter.sleep(0.01) end
    assert(c:send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))
    local parts = {}
    while true do
      local data, err, partial = c:receive(65536)
      local got = data or partial
      if got and #got > 0 then parts[#parts + 1] = got end
      if err == "closed" then break end
      assert(data or err == "timeout", err)
      if not data then scatter.sleep(0.01) end
    end
    c:close()
    return table.concat(parts)
  end

  teardown(function() scatter.close_all() end)

  it("says an address with a host name is refused for the name", function()
    local msg = raises(function()
      scatter.pool({ proxies = { "127.0.0.1:1" }, metrics_listen = "localhost:9464" })
    end)
    assert.truthy(msg:find("metrics_listen", 1, true), msg)
    assert.truthy(msg:find("numeric IP, not a name", 1, true), msg)
  end)

  it("shares one server between pools that spell one address differently", function()
    local port = env.free_port()
    local pools = {}
    for i, addr in ipairs({ "127.0.0.1:" .. port, tostring(port), ":" .. port }) do
      local ok, p = pcall(scatter.pool, { name = "p" .. i, proxies = { "127.0.0.1:1" },
        metrics_log_interval = 0, metrics_listen = addr })
      assert(ok, p)
      pools[i] = p
    end
    local body = scrape(port)
    for i = 1, 3 do assert.truthy(body:find('scatter_k{pool="p' .. i .. '"}', 1, true), body) end
    pools[1]:close()
    assert.truthy(scrape(port):find('pool="p3"', 1, true))
    pools[2]:close()
    pools[3]:close()
    assert.is_false(env.port_open(port))
  end)
end)
