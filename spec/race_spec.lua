-- Racing, cancellation and never-fail, end to end through the real farm.
local env = require("support.env")
local cjson = require("cjson")
local scatter = require("scatter")

describe("racing through the farm", function()
  local ng, farm

  setup(function()
    ng = env.nginx()
    farm = env.farm({
      "good count=4",
      "slow latency=0.3 jitter=0.1 count=3",
      "refuse count=3",
      "blackhole count=2",
      "block count=2",
      "tamper count=2",
      "flaky p=0.5 count=2",
      "drop_mid bytes=2000 count=2",
      "blackhole",   -- index 20: for the cancel specs
      "slow latency=5", -- index 21
    })
  end)

  teardown(function()
    scatter.close_all()
    env.cleanup()
  end)

  local function stats()
    local line = assert(farm.control("stats"))
    return cjson.decode(line:match("^OK (.*)$"))
  end

  local function active_on(index)
    return stats().per_proxy[index + 1].active
  end

  local function wait_idle(indexes, what)
    env.wait_until(function()
      for _, i in ipairs(indexes) do
        if active_on(i) ~= 0 then return false end
      end
      return true
    end, what, nil, 5)
  end

  it("delivers every task with the right body across a fault mix", function()
    local mix = {}
    for i = 1, 20 do mix[i] = farm.proxies[i] end
    local big = env.big_content()
    local pool = scatter.pool({
      proxies = mix, proxy_timeout = 2, max_inflight = 60,
      rate_limit = { default_interval = 0.05 }, metrics_log_interval = 0,
      classifier = function(resp)
        if resp.status ~= 200 then return "proxy_blocked" end
        if resp.body:sub(1, 6) == "hello " then
          return resp.body == ng.small_text and "success" or "proxy_blocked"
        end
        return resp.body == big and "success" or "proxy_blocked"
      end,
    })
    local n, ok = 300, 0
    scatter.run(function()
      local ths = {}
      for i = 1, n do
        ths[i] = scatter.spawn(function()
          local path = (i % 10 == 0) and "/big.bin" or "/small.txt"
          local resp, err = pool:get(ng.url(path .. "?task=" .. i), { timeout = 60 })
          assert(resp, err)
          assert(resp.body == (path == "/big.bin" and big or ng.small_text), "wrong body for task " .. i)
          return true
        end)
      end
      for _, r in ipairs(scatter.wait_all(unpack(ths))) do
        if r[1] and r[2] then ok = ok + 1 end
      end
    end)
    assert.equal(n, ok)
    local m = pool:metrics()
    assert.equal(n, m.completed_tasks)
    assert.equal(0, m.inflight)
    assert.is_true(m.verdicts.proxy_blocked > 0, "the blocking and tampering proxies were never judged")
    assert.is_true(m.verdicts.transport > 0)
    assert.is_true(m.attempts_cancelled > 0, "no race was ever cancelled")
    pool:close()
    -- the losers' connections are closed, not left to finish
    local idx = {}
    for i = 0, 19 do idx[#idx + 1] = i end
    wait_idle(idx, "every farm connection closed")
  end)

  it("cancels in-flight attempts when the caller's timeout passes", function()
    local pool = scatter.pool({ proxies = { farm.proxies[21] }, metrics_log_interval = 0 })
    env.wait_until(function() return active_on(20) == 0 end, "blackhole idle")
    local resp, err = pool:get(ng.url("/small.txt"), { timeout = 0.3 })
    assert.is_nil(resp)
    assert.equal("timeout", err)
    local m = pool:metrics()
    assert.equal(1, m.attempts_started)
    assert.equal(1, m.attempts_cancelled)
    assert.equal(0, m.inflight)
    wait_idle({ 20 }, "the blackholed connection closed")
    pool:close()
  end)

  it("keeps a handle valid after wait times out, then delivers", function()
    local pool = scatter.pool({ proxies = { farm.proxies[22] }, metrics_log_interval = 0, proxy_timeout = 10 })
    local h = pool:submit({ url = ng.url("/small.txt") })
    local resp, err = h:wait(0.1)
    assert.is_nil(resp)
    assert.equal("timeout", err)
    resp, err = h:wait(20)
    assert.is_nil(err)
    assert.equal(ng.small_text, resp.body)
    -- a finished handle answers at once, again
    assert.equal(resp, (h:wait(0)))
    pool:close()
  end)

  it("cancel stops every attempt and ends the task as cancelled", function()
    local pool = scatter.pool({ proxies = { farm.proxies[22] }, metrics_log_interval = 0, proxy_timeout = 10 })
    local h = pool:submit({ url = ng.url("/small.txt") })
    scatter.sleep(0.1)
    assert.equal(1, active_on(21))
    h:cancel()
    local resp, err = h:wait(1)
    assert.is_nil(resp)
    assert.equal("cancelled", err)
    assert.equal(1, pool:metrics().attempts_cancelled)
    wait_idle({ 21 }, "the cancelled connection closed")
    pool:close()
  end)

  it("applies backpressure: try_submit says pool_full, submit waits for room", function()
    local pool = scatter.pool({ proxies = { farm.proxies[1] }, task_pool_capacity = 2,
      rate_limit = { default_interval = 0 }, metrics_log_interval = 0 })
    local h1 = assert(pool:try_submit({ url = ng.url("/small.txt") }))
    local h2 = assert(pool:try_submit({ url = ng.url("/small.txt") }))
    local h3, err = pool:try_submit({ url = ng.url("/small.txt") })
    assert.is_nil(h3)
    assert.equal("pool_full", err)
    -- submit waits until one of the two finishes, then goes in
    local h4 = pool:submit({ url = ng.url("/small.txt") })
    assert.truthy(h1:done() or h2:done())
    assert.equal(ng.small_text, h4:wait(10).body)
    assert.equal(ng.small_text, h1:wait(10).body)
    assert.equal(ng.small_text, h2:wait(10).body)
    pool:close()
  end)

  it("takes one path at a time for a POST, K paths when it says race = true", function()
    local pool = scatter.pool({ proxies = { farm.proxies[1], farm.proxies[2], farm.proxies[3], farm.proxies[4] },
      metrics_log_interval = 0 })
    local resp = assert(pool:request({ method = "POST", url = ng.url("/echo"), body = "x", timeout = 10 }))
    assert.equal(1, resp.attempts)
    assert.equal(1, pool:metrics().attempts_started)
    resp = assert(pool:request({ method = "POST", url = ng.url("/echo"), body = "y", race = true, timeout = 10 }))
    assert.is_true(resp.attempts > 1, "a racing POST used " .. resp.attempts .. " path(s)")
    pool:close()
  end)

  it("ends pending tasks with closed when the pool closes", function()
    local pool = scatter.pool({ proxies = { farm.proxies[21] }, metrics_log_interval = 0 })
    local h = pool:submit({ url = ng.url("/small.txt") })
    pool:close()
    local resp, err = h:wait(1)
    assert.is_nil(resp)
    assert.equal("closed", err)
    local h2, err2 = pool:try_submit({ url = ng.url("/small.txt") })
    assert.is_nil(h2)
    assert.equal("closed", err2)
    wait_idle({ 20 }, "close cancels the attempt")
  end)
end)
