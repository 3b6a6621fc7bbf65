-- scatter.channel and scatter.semaphore: handing work between threads.
local scatter = require("scatter")

describe("scatter.channel", function()
  it("a buffered channel hands values over in order and yields when full or empty", function()
    local got, sent = {}, 0
    scatter.run(function()
      local ch = scatter.channel(2)
      local producer = scatter.spawn(function()
        for i = 1, 10 do
          assert(ch:send(i))
          sent = i
        end
        ch:close()
      end)
      scatter.sleep(0.01)
      assert.equal(2, sent) -- it waits: the buffer holds 2
      while true do
        local v, err = ch:receive()
        if v == nil then
          assert.equal("closed", err)
          break
        end
        got[#got + 1] = v
      end
      scatter.wait_all(producer)
    end)
    assert.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, got)
  end)

  it("an unbuffered channel makes the sender wait for a receiver", function()
    scatter.run(function()
      local ch = scatter.channel()
      local done = false
      scatter.spawn(function()
        assert.is_true(ch:send("x"))
        done = true
      end)
      scatter.sleep(0.01)
      assert.is_false(done)
      assert.equal("x", ch:receive())
      scatter.sleep(0)
      assert.is_true(done)
    end)
  end)

  it("times out, refuses sends once closed, wakes waiters on close, checks its arguments", function()
    scatter.run(function()
      local ch = scatter.channel(1)
      local t0 = scatter.now()
      local v, err = ch:receive(0.05)
      assert.is_nil(v)
      assert.equal("timeout", err)
      assert.is_true(scatter.now() - t0 >= 0.04)
      assert.is_true(ch:send(1))
      assert.same({ nil, "timeout" }, { ch:send(2, 0.02) })
      local waiter = scatter.spawn(function() return ch:send(3) end)
      scatter.sleep(0.01)
      ch:close()
      local ok, r1, r2 = scatter.wait_any(waiter)
      assert.is_true(ok ~= false)
      assert.same({ nil, "closed" }, { r1, r2 })
      assert.same({ nil, "closed" }, { ch:send(4) })
      assert.equal(1, ch:receive()) -- drained after close
      assert.same({ nil, "closed" }, { ch:receive() })
    end)
    assert.has_error(function() scatter.channel(-1) end)
    assert.has_error(function() scatter.channel(1.5) end)
    assert.has_error(function() scatter.channel(1):send(nil) end)
  end)
end)

describe("scatter.semaphore", function()
  it("bounds how many threads run a section at once", function()
    local max, now = 0, 0
    scatter.run(function()
      local sema = scatter.semaphore(3)
      local ths = {}
      for i = 1, 10 do
        ths[i] = scatter.spawn(function()
          assert(sema:wait())
          now = now + 1
          if now > max then max = now end
          scatter.sleep(0.01)
          now = now - 1
          sema:post()
        end)
      end
      scatter.wait_all(unpack(ths))
      assert.equal(3, sema:count())
    end)
    assert.equal(3, max)
  end)

  it("wait times out; count is negative while threads wait", function()
    scatter.run(function()
      local sema = scatter.semaphore(0)
      assert.same({ nil, "timeout" }, { sema:wait(0.02) })
      local th = scatter.spawn(function() return sema:wait(5) end)
      scatter.sleep(0.01)
      assert.equal(-1, sema:count())
      sema:post()
      local _, r = scatter.wait_any(th)
      assert.is_true(r)
      assert.equal(0, sema:count())
    end)
    assert.has_error(function() scatter.semaphore(-1) end)
  end)
end)
