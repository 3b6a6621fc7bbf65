-- Racing without waiting for the slowest path (DESIGN.md section 10), exact,
-- through the simulator: a failed path is replaced at once, an attempt's
-- connect has a deadline learnt from the pool's handshakes, and a task whose
-- live paths are all past the host's p95 latency gets one more path.
local scatter = require("scatter")
local simulate = scatter.simulate

-- Per (task, proxy) path: start and end (done or cancel) times, verdict.
local function paths(r)
  local open, out = {}, {}
  for _, e in ipairs(r.trace) do
    local key = e.task .. ":" .. e.proxy
    if e.kind == "start" then
      local p = { task = e.task, proxy = e.proxy, start = e.t }
      open[key] = p
      out[#out + 1] = p
    else
      local p = assert(open[key], "an end without a start")
      p.stop, p.kind, p.verdict = e.t, e.kind, e.verdict
      open[key] = nil
    end
  end
  return out
end

local function near(a, b) return math.abs(a - b) < 1e-6 end

describe("continuous racing", function()
  describe("replacement", function()
    -- 5 dead proxies (refuse after 0.1 s) and 3 good ones (1 s); K = 4
    -- (cold start); each proxy usable once in the test (rate limit 10 s)
    local function run(racing)
      return simulate{ tasks = 1, trace = true,
        config = { max_concurrent_per_request = 2, racing = racing, rate_limit = { default_interval = 10 } },
        proxies = { { count = 5, profile = "dead", latency = 0.1 }, { count = 3, latency = 1 } } }
    end

    it("replaces a failed path at the instant it fails", function()
      local r = run()
      assert.are.equal(1, r.delivered)
      local ps = paths(r)
      local starts, failures = {}, 0
      for _, p in ipairs(ps) do starts[#starts + 1] = p.start end
      for _, p in ipairs(ps) do
        if p.verdict == "transport" then
          failures = failures + 1
          local replaced = false
          for _, s in ipairs(starts) do replaced = replaced or near(s, p.stop) end
          -- every failure before the last proxy was used is replaced at once
          if failures + 4 <= 8 then assert.is_true(replaced, "failure at " .. p.stop .. " not replaced") end
        end
      end
      assert.is_true(failures >= 1) -- 4 of 8 proxies, 5 dead: at least one
      assert.are.equal(8, #ps)     -- every proxy tried within the first second
      assert.are.equal(#ps - 4, r.metrics.attempts_replaced)
      -- the task never waited for the slowest path to start the next
      for _, p in ipairs(ps) do assert.is_true(p.start < 0.5 + 1e-9, "a path started at " .. p.start) end
    end)

    it("is not what the round rule does (racing = \"rounds\")", function()
      local r = run("rounds")
      local late = 0
      for _, p in ipairs(paths(r)) do if p.start > 0 then late = late + 1 end end
      assert.are.equal(0, late) -- its 4 paths, then nothing until the round ends
      assert.are.equal(0, r.metrics.attempts_replaced)
    end)

    it("keeps K live paths over a fault mix and delivers everything", function()
      local r = simulate{ seed = 5, tasks = 3000, config = { max_inflight = 300 },
        proxies = { { count = 100, profile = "dead", latency = 0.05 }, { count = 50, profile = "blackhole" },
                    { count = 50, profile = "block", latency = 0.1 }, { count = 100, latency = 0.3, jitter = 0.1 } } }
      assert.are.equal(3000, r.delivered)
      assert.are.equal(0, r.metrics.pending_tasks)
      assert.is_true(r.metrics.attempts_replaced > 0)
    end)
  end)

  describe("connect deadline", function()
    -- good proxies answer in 0.2 s (their handshake: 0.1 s); blackholes
    -- never finish a handshake; proxy_timeout 2
    local proxies = { { count = 40, latency = 0.2 }, { count = 10, profile = "blackhole" },
                      { count = 10, latency = 1.6 } } -- handshake 0.8 s: slower than the deadline
    local function run(cfg)
      cfg.proxy_timeout, cfg.task_pool_capacity = 2, 10
      return simulate{ seed = 3, tasks = 300, config = cfg, trace = true, proxies = proxies }
    end

    it("is 3 x the pool's handshake p95, at least 0.3 s, once learnt", function()
      local r = run{}
      assert.are.equal(300, r.delivered)
      assert.is_true(r.metrics.handshakes >= 20)
      assert.is_true(math.abs(r.metrics.handshake_p95_ms - 100) < 1e-3, r.metrics.handshake_p95_ms)
      assert.is_true(math.abs(r.metrics.connect_timeout_ms - 300) < 1e-3) -- 3 x 0.1 s, the 0.3 s floor
      local cut, full = 0, 0
      for _, p in ipairs(paths(r)) do
        if p.proxy > 40 and p.kind == "done" then
          local took = p.stop - p.start
          if near(took, 0.3) then cut = cut + 1 elseif near(took, 2) then full = full + 1 end
          assert.is_true(near(took, 0.3) or near(took, 2), "a blackhole or slow-handshake path took " .. took)
        end
      end
      -- before 10 handshakes were seen, proxy_timeout held; after, the deadline
      assert.is_true(cut > 5 * full and cut > 20, cut .. " cut, " .. full .. " at proxy_timeout")
    end)

    it("is connect_timeout when the config says so, at most proxy_timeout", function()
      local r = run{ connect_timeout = 0.5 }
      assert.are.equal(500, r.metrics.connect_timeout_ms)
      for _, p in ipairs(paths(r)) do
        if p.proxy > 40 and p.proxy <= 50 and p.kind == "done" then assert.is_true(near(p.stop - p.start, 0.5)) end
      end
      assert.are.equal(2000, run{ connect_timeout = 5 }.metrics.connect_timeout_ms)
    end)

    it("is proxy_timeout under the round rule", function()
      local r = run{ racing = "rounds" }
      assert.are.equal(2000, r.metrics.connect_timeout_ms)
      for _, p in ipairs(paths(r)) do
        if p.proxy > 40 and p.proxy <= 50 and p.kind == "done" then assert.is_true(near(p.stop - p.start, 2)) end
      end
    end)

    it("rejects a connect_timeout that is not a duration > 0", function()
      local ok, e = pcall(simulate, { tasks = 1, proxies = { { count = 1 } }, config = { connect_timeout = 0 } })
      assert.is_false(ok)
      assert.matches("connect_timeout", e)
      ok, e = pcall(simulate, { tasks = 1, proxies = { { count = 1 } }, config = { racing = "round" } })
      assert.is_false(ok)
      assert.matches("racing", e)
    end)
  end)

  describe("hedging past K", function()
    -- a healthy pool (K is 1) whose 4 fast proxies are often rate-limited,
    -- so a task lands on the one that takes 3 s
    local proxies = { { count = 4, latency = 0.1, jitter = 0.02 }, { count = 1, latency = 3 } }
    local function run(racing)
      return simulate{ seed = 11, tasks = 1000, trace = true, proxies = proxies,
        config = { racing = racing, task_pool_capacity = 1, eviction_min_samples = 1,
                   rate_limit = { default_interval = 0.5 } } }
    end

    it("starts one more path when every live path is older than the host's p95", function()
      local r, old = run(), run("rounds")
      assert.are.equal(1000, r.delivered)
      assert.are.equal(1, r.metrics.k_current)
      assert.is_true(r.metrics.attempts_hedged > 10, r.metrics.attempts_hedged)
      assert.are.equal(0, old.metrics.attempts_hedged)
      -- nobody waits out the slow proxy any more
      assert.is_true(old.latency_max > 2.9, old.latency_max)
      assert.is_true(r.latency_max < 1, r.latency_max)
      assert.is_true(r.latency_mean < old.latency_mean / 4, r.latency_mean .. " vs " .. old.latency_mean)
      -- the extra path only starts once the first is past the p95 (>= 0.08 s)
      local first = {}
      for _, p in ipairs(paths(r)) do
        if not first[p.task] then first[p.task] = p.start
        elseif p.start > first[p.task] then assert.is_true(p.start - first[p.task] > 0.08) end
      end
    end)

    it("hedges a task that started on blackholes before any latency was known", function()
      local function cold(racing)
        return simulate{ seed = 4, tasks = 40, config = { racing = racing, max_concurrent_per_request = 1,
            proxy_timeout = 8, rate_limit = { default_interval = 0 } },
          proxies = { { count = 10, profile = "blackhole" }, { count = 10, latency = 0.1 } } }
      end
      local r, old = cold(), cold("rounds")
      assert.are.equal(40, r.delivered)
      assert.is_true(old.latency_max >= 8 - 1e-9, old.latency_max) -- waited out a blackhole
      -- looked again a tenth of proxy_timeout later, when a p95 was known
      assert.is_true(r.latency_max < 1, r.latency_max)
      assert.is_true(r.metrics.attempts_hedged > 0)
    end)

    it("never runs more than 2 x K paths of a task", function()
      -- every proxy slow: each live path passes the p95, again and again
      local r = simulate{ seed = 2, tasks = 200, trace = true,
        -- connect_timeout = proxy_timeout: no path fails, so K stays 1
        config = { max_concurrent_per_request = 2, task_pool_capacity = 5, eviction_min_samples = 5,
                   connect_timeout = 8, rate_limit = { default_interval = 0 } },
        proxies = { { count = 60, latency = 1, jitter = 0.9 } } }
      assert.are.equal(200, r.delivered)
      assert.is_true(r.metrics.attempts_hedged > 0)
      assert.is_true(r.max_task_parallel <= 2 * 4, r.max_task_parallel) -- cold-start K is 4
      local live, most = {}, {}
      for _, e in ipairs(r.trace) do
        live[e.task] = (live[e.task] or 0) + (e.kind == "start" and 1 or -1)
        most[e.task] = math.max(most[e.task] or 0, live[e.task])
      end
      -- after the cold start, K follows the success rate (1 here): 2 paths
      for task = 50, 200 do assert.is_true((most[task] or 0) <= 2, "task " .. task .. ": " .. tostring(most[task])) end
    end)
  end)
end)
