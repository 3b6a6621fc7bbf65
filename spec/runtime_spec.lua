-- The coroutine runtime: threads, sleep, waits, errors, and blocking calls
-- outside any coroutine.
local scatter = require("scatter")
local runtime = require("scatter.runtime")

describe("runtime", function()
  local reported
  before_each(function()
    reported = {}
    runtime.report = function(msg) reported[#reported + 1] = msg end
  end)

  it("runs a function and every thread it spawns, returning its results", function()
    local order = {}
    local a, b = scatter.run(function(x)
      scatter.spawn(function() scatter.sleep(0.02) order[#order + 1] = "late" end)
      scatter.spawn(function() order[#order + 1] = "early" end)
      return x, "two"
    end, "one")
    assert.equal("one", a)
    assert.equal("two", b)
    assert.same({ "early", "late" }, order)
  end)

  it("sleeps without blocking other threads", function()
    local t0 = scatter.now()
    scatter.run(function()
      local ths = {}
      for i = 1, 50 do ths[i] = scatter.spawn(scatter.sleep, 0.1) end
      scatter.wait_all(unpack(ths))
    end)
    local dt = scatter.now() - t0
    assert.is_true(dt >= 0.1, "slept " .. dt)
  end)

  it("sleeps outside any coroutine by driving the loop itself", function()
    local t0 = scatter.now()
    local ran = false
    scatter.spawn(function() ran = true end)
    scatter.sleep(0.05)
    assert.is_true(scatter.now() - t0 >= 0.05)
    assert.is_true(ran)
  end)

  it("wait_any returns the first thread's results, ngx.thread.wait style", function()
    scatter.run(function()
      local slow = scatter.spawn(function() scatter.sleep(0.2) return "slow" end)
      local fast = scatter.spawn(function() scatter.sleep(0.01) return "fast", 2 end)
      local ok, v, n = scatter.wait_any(slow, fast)
      assert.is_true(ok)
      assert.equal("fast", v)
      assert.equal(2, n)
    end)
  end)

  it("wait_all returns every result, errors as false, message", function()
    local res = scatter.run(function()
      local t1 = scatter.spawn(function() return 1 end)
      local t2 = scatter.spawn(function() error("boom", 0) end)
      return scatter.wait_all(t1, t2)
    end)
    assert.same({ n = 2, true, 1 }, res[1])
    assert.equal(false, res[2][1])
    assert.equal("boom", res[2][2])
  end)

  it("reports an error in a spawned thread with a traceback and keeps the others running", function()
    local finished = false
    scatter.run(function()
      scatter.spawn(function() error("thread failed") end)
      scatter.spawn(function() scatter.sleep(0.02) finished = true end)
    end)
    assert.is_true(finished)
    assert.equal(1, #reported)
    assert.truthy(reported[1]:find("thread failed", 1, true))
    assert.truthy(reported[1]:find("stack traceback", 1, true))
    assert.equal(1, runtime.uncollected_errors)
    runtime.uncollected_errors = 0
  end)

  it("raises the main function's error from run, with a traceback", function()
    local ok, err = pcall(scatter.run, function() error("main failed") end)
    assert.is_false(ok)
    assert.truthy(err:find("main failed", 1, true))
    assert.truthy(err:find("stack traceback", 1, true))
  end)

  it("detects a wait that can never end", function()
    local ok, err = pcall(scatter.run, function()
      local w = runtime.waiter()
      runtime.block(w)
    end)
    assert.is_false(ok)
    assert.truthy(err:find("deadlock", 1, true), err)
  end)

  it("treats a bare coroutine.yield in a thread as a cooperative yield", function()
    local trace = {}
    scatter.run(function()
      scatter.spawn(function() trace[#trace + 1] = "a1" coroutine.yield() trace[#trace + 1] = "a2" end)
      scatter.spawn(function() trace[#trace + 1] = "b1" end)
    end)
    assert.same({ "a1", "b1", "a2" }, trace)
  end)

  it("rejects bad arguments with the function's name", function()
    assert.has_error(function() scatter.spawn(42) end, "scatter.spawn: bad argument #1 (function expected, got number)")
    assert.has_error(function() scatter.sleep(-1) end)
    assert.has_error(function() scatter.run("x") end)
    assert.has_error(function() scatter.wait_any() end, "scatter.wait_any: no threads given")
  end)

  -- Timers set in time order go to a FIFO, the others to a heap
  -- (runtime.lua); the two together must still fire in time order.
  it("fires timers in time order whatever order they were set in, and never a cancelled one", function()
    local fired, t0 = {}, scatter.now()
    local offsets = { 0.05, 0.06, 0.06, 0.08, 0.02, 0.07, 0.01, 0.09, 0.03, 0.04, 0.10 }
    local cancel = { [3] = true, [6] = true, [9] = true }
    local ts = {}
    for i, d in ipairs(offsets) do
      ts[i] = runtime.at(t0 + d, function(k) fired[#fired + 1] = k end, i)
    end
    for i, t in ipairs(ts) do
      if cancel[i] then t.cancelled = true end
    end
    scatter.run(function() scatter.sleep(0.15) end)
    local want = {}
    for i in ipairs(offsets) do
      if not cancel[i] then want[#want + 1] = i end
    end
    -- by time, then by the order they were set in
    table.sort(want, function(a, b)
      if offsets[a] ~= offsets[b] then return offsets[a] < offsets[b] end
      return a < b
    end)
    assert.same(want, fired)
  end)

  it("has a monotonic clock in seconds", function()
    local a = scatter.now()
    local b = scatter.now()
    assert.is_true(b >= a)
    assert.is_number(a)
  end)
end)
