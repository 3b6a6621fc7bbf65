-- Hedging past K (DESIGN.md section 10) with real libcurl through the
-- farm: an answer that came in while the loop was busy is read, and held
-- as an answer, before any hedge is started; a path that is truly slow
-- is still hedged.
local env = require("support.env")
local scatter = require("scatter")

describe("hedging through the loop", function()
  local ng, farm

  setup(function()
    ng = env.nginx()
    -- slow: a new connection answers after 1 s, a kept one after 0.1 s
    farm = env.farm({ "slow latency=1 jitter=0 count=12", "good count=4" })
  end)

  teardown(function()
    scatter.close_all()
    env.cleanup()
  end)

  local function pool_of(proxies)
    return scatter.pool{ proxies = proxies, metrics_log_interval = 0, proxy_timeout = 8,
                         max_concurrent_per_request = 1, rate_limit = { default_interval = 0 } }
  end

  -- n gets at once; `between` runs while they are on their way
  local function gets(pool, n, tag, between)
    local ths, bad = {}, {}
    for i = 1, n do
      ths[i] = scatter.spawn(function()
        local resp, err = pool:get(ng.url("/small.txt?" .. tag .. i), { timeout = 20 })
        if err or resp.body ~= ng.small_text then bad[#bad + 1] = tostring(err) end
      end)
    end
    if between then between() end
    scatter.wait_all(unpack(ths))
    return bad
  end

  it("reads the answers that came in during a busy stretch before it hedges", function()
    local pool = pool_of(farm.by_profile.slow)
    scatter.run(function()
      -- warm: two connections kept to each proxy, K is 1, the host's p95
      -- is about 1.1 s (the first answers came on new connections)
      for round = 1, 3 do assert.are.same({}, gets(pool, 24, "warm" .. round)) end
      assert.are.equal(1, pool:metrics().k_current)
      local before = pool:metrics()
      local bad = gets(pool, 8, "busy", function()
        -- every request is sent on a kept connection ...
        local deadline = scatter.now() + 10
        while pool:metrics().attempts_started < before.attempts_started + 8 do
          assert(scatter.now() < deadline, "the 8 requests never started")
          scatter.sleep(0.002)
        end
        scatter.sleep(0.02)
        -- ... then the loop is busy (a long handler, a commit) past every
        -- request's p95; the answers arrive meanwhile (after 0.1 s), unread
        local t = scatter.now() + 1.5
        while scatter.now() < t do end
      end)
      assert.are.same({}, bad)
      -- libuv runs due timers before it polls, and the classifier gives an
      -- answer's verdict after the poll: each of the 8 was hedged before
      assert.are.equal(before.attempts_hedged, pool:metrics().attempts_hedged)
      assert.are.equal(before.attempts_started + 8, pool:metrics().attempts_started)
    end)
    pool:close()
  end)

  it("still hedges a path that is slow, once past the host's p95", function()
    -- four fast proxies, rate-limited, so that tasks land on the slow ones
    -- (a new connection answers after 1 s), as the simulator's spec does
    local proxies = {}
    for i = 1, 4 do
      proxies[#proxies + 1] = farm.by_profile.good[i]
      proxies[#proxies + 1] = farm.by_profile.slow[i]
    end
    local pool = scatter.pool{ proxies = proxies, metrics_log_interval = 0, proxy_timeout = 8,
                               max_concurrent_per_request = 1, rate_limit = { default_interval = 0.3 } }
    scatter.run(function()
      for round = 1, 3 do assert.are.same({}, gets(pool, 6, "slow" .. round)) end
    end)
    -- the scheduler's timer, run after the poll, started them
    local m = pool:metrics()
    assert.is_true(m.attempts_hedged > 0, m.attempts_hedged)
    pool:close()
  end)
end)
