-- The connect + proxy handshake deadline of an attempt (DESIGN.md section
-- 10) with real libcurl through the farm: a blackholed proxy costs the
-- deadline, not proxy_timeout, and the learnt deadline is in the metrics.
local env = require("support.env")
local scatter = require("scatter")

describe("connect deadline", function()
  local ng, farm

  setup(function()
    ng = env.nginx()
    farm = env.farm({ "good count=24", "blackhole count=2" })
  end)

  teardown(function()
    scatter.close_all()
    env.cleanup()
  end)

  it("cuts a blackholed proxy at connect_timeout, not at proxy_timeout", function()
    local pool = scatter.pool{ proxies = farm.by_profile.blackhole, metrics_log_interval = 0,
                               proxy_timeout = 5, connect_timeout = 0.4, max_concurrent_per_request = 1 }
    local t0 = scatter.now()
    local _, err = pool:get(ng.url("/small.txt"), { timeout = 1.5 })
    -- two proxies, each cut after 0.4 s, then their cooldown: a timeout
    -- whose last error is the connect deadline; at proxy_timeout it would
    -- have been nothing but the caller's timeout
    assert.truthy(err:match("^timeout: last error: proxy_timeout"), err)
    assert.is_true(scatter.now() - t0 < 2)
    local m = pool:metrics()
    assert.are.equal(400, m.connect_timeout_ms)
    assert.is_true(m.verdicts.transport >= 2, m.verdicts.transport)
    pool:close()
  end)

  it("learns the deadline from the pool's handshakes", function()
    local pool = scatter.pool{ proxies = farm.by_profile.good, metrics_log_interval = 0,
                               proxy_timeout = 5, rate_limit = { default_interval = 0 } }
    assert.are.equal(5000, pool:metrics().connect_timeout_ms) -- nothing learnt yet
    scatter.run(function()
      local ths = {}
      for i = 1, 48 do
        ths[i] = scatter.spawn(function()
          local resp, err = pool:get(ng.url("/small.txt?d" .. i), { timeout = 10 })
          assert.is_nil(err)
          assert.equal(ng.small_text, resp.body)
        end)
      end
      scatter.wait_all(unpack(ths))
    end)
    local m = pool:metrics()
    assert.is_true(m.handshakes >= 20, m.handshakes)
    assert.is_true(m.handshake_p95_ms > 0 and m.handshake_p95_ms < 1000, m.handshake_p95_ms)
    -- 3 x p95 of what it saw, with a 0.3 s floor: loopback handshakes take
    -- milliseconds, so the floor, unless a loaded machine (a parallel CI
    -- with ASan) made them slower; either way learnt, not proxy_timeout
    local want = math.max(300, 3 * m.handshake_p95_ms)
    assert.is_true(math.abs(m.connect_timeout_ms - want) < 1, m.connect_timeout_ms .. " ms, want " .. want)
    assert.is_true(m.connect_timeout_ms < 5000, m.connect_timeout_ms)
    pool:close()
  end)
end)
