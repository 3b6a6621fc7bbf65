-- Embedding: a program with its own event loop drives scatter through
-- scatter.fd(), scatter.timeout() and scatter.step() alone.
local ffi = require("ffi")
local env = require("support.env")
local scatter = require("scatter")

pcall(ffi.cdef, [[
struct pollfd { int fd; short events; short revents; };
int poll(struct pollfd *fds, unsigned long nfds, int timeout);
]])
local POLLIN = 1

-- The host loop: poll(2) on scatter's fd, then one non-blocking step, until
-- done() or scatter has nothing left. Returns the number of passes and how
-- many of them asked poll to wait (timeout other than 0).
local function drive(done, max_passes)
  local pfd = ffi.new("struct pollfd[1]")
  pfd[0].fd = scatter.fd()
  pfd[0].events = POLLIN
  local passes, waits = 0, 0
  while not done() do
    passes = passes + 1
    assert(passes <= max_passes, "the host loop spun: " .. passes .. " passes")
    local alive = scatter.step()
    if done() then break end
    assert(alive, "scatter.step() says nothing is left, but the work is not done")
    local t = scatter.timeout()
    -- nil: no deadline of scatter's own; the host caps its wait anyway
    local ms = t and math.ceil(t * 1000) or 5000
    if ms > 0 then waits = waits + 1 end
    ffi.C.poll(pfd, 1, ms)
  end
  return passes, waits
end

describe("embedding in another event loop", function()
  local ng, farm

  setup(function()
    ng = env.nginx()
    farm = env.farm({ "good count=2", "slow latency=0.5" })
  end)

  teardown(function()
    scatter.close_all()
    env.cleanup()
  end)

  it("gives the backend fd, an integer the host can poll", function()
    local fd = scatter.fd()
    assert.equal("number", type(fd))
    assert.is_true(fd >= 0 and fd == math.floor(fd))
    assert.equal(fd, scatter.fd())
  end)

  it("completes requests driven only by poll + step, waiting in poll instead of spinning", function()
    local pool = scatter.pool({ proxies = { farm.by_profile.slow[1] }, metrics_log_interval = 0,
      rate_limit = { default_interval = 0 } })
    local results = {}
    for i = 1, 3 do
      scatter.spawn(function()
        results[i] = { pool:get(ng.url("/small.txt?embed=" .. i), { timeout = 30 }) }
      end)
    end
    -- threads only run when the host steps
    assert.same({}, results)
    local passes, waits = drive(function() return #results == 3 and results[1] and results[2] end, 5000)
    for i = 1, 3 do
      assert.is_nil(results[i][2])
      assert.equal(ng.small_text, results[i][1].body)
    end
    -- each response waited 0.5 s in the slow proxy: a loop that waited in
    -- poll made few passes, a spinning one hundreds of thousands
    assert.is_true(waits >= 1, "the host loop never waited in poll")
    assert.is_true(passes < 5000)
    pool:close()
  end)

  it("reports the next scatter timer as the timeout, and step never blocks", function()
    local slept = false
    local th = scatter.spawn(function()
      scatter.sleep(3)
      slept = true
    end)
    assert.equal(0, scatter.timeout(), "a runnable thread must make the timeout 0")
    scatter.step() -- runs the thread up to its sleep
    local t = scatter.timeout()
    assert.truthy(t, "a sleeping thread must give a deadline")
    assert.is_true(t > 0 and t <= 3, "timeout " .. tostring(t))
    scatter.step()
    -- a blocking step would have waited for the timer
    assert.is_false(slept)
    assert.equal("suspended", th.status)
    local passes = drive(function() return slept end, 1000)
    assert.equal("dead", th.status)
    assert.is_true(passes < 1000)
  end)

  it("runs examples/embed_poll.lua, a plain poll loop, to the end", function()
    local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
    local example = here .. "../examples/embed_poll.lua"
    local list = os.tmpname()
    local f = assert(io.open(list, "w"))
    f:write(farm.by_profile.good[1], "\n", farm.by_profile.good[2], "\n")
    f:close()
    local cmd = string.format("LUA_PATH='%s' LUA_CPATH='%s' luajit %s %s %s 5 2>&1",
      package.path, package.cpath, example, list, ng.url("/small.txt"))
    local p = assert(io.popen(cmd))
    local out = p:read("*a")
    p:close()
    os.remove(list)
    local n = 0
    for _ in out:gmatch("response %d: status=200 bytes=19 via 127%.0%.0%.1:%d+") do n = n + 1 end
    assert.equal(5, n, out)
    assert.truthy(out:find("done: 5 ok, 0 failed", 1, true), out)
  end)

  it("has no deadline and says so once nothing is left", function()
    scatter.close_all()
    local passes, alive = 0, true
    while alive do
      passes = passes + 1
      assert(passes < 100, "scatter.step() never reported idle")
      alive = scatter.step()
      if alive then ffi.C.poll(nil, 0, 10) end
    end
    assert.is_nil(scatter.timeout())
  end)
end)
