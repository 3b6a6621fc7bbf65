-- Scheduling rules (DESIGN.md section 3), exact, through the simulator:
-- the real scheduler on a virtual clock with simulated proxies.
local scatter = require("scatter")
local simulate = scatter.simulate

-- Start times (or other events) from a trace, optionally for one proxy/task.
local function times(r, kind, f)
  local out = {}
  for _, e in ipairs(r.trace) do
    if e.kind == kind and (not f or f(e)) then out[#out + 1] = e.t end
  end
  return out
end

local function near_list(got, want)
  assert.are.equal(#want, #got, "count: " .. table.concat(got, " "))
  for i = 1, #want do
    assert(math.abs(got[i] - want[i]) < 1e-9,
      ("event %d at %.12g, want %.12g (all: %s)"):format(i, got[i], want[i], table.concat(got, " ")))
  end
end

local function expected_k(s, base)
  local k
  if s >= 1 then k = 1 elseif s <= 0 then k = 2 * base else
    k = math.ceil(math.log(0.05) / math.log(1 - s) - 1e-9)
  end
  return math.max(1, math.min(2 * base, k))
end

describe("scatter.simulate", function()
  describe("input", function()
    local function err(opts)
      local ok, e = pcall(simulate, opts)
      assert.is_false(ok, "should have raised")
      return e
    end
    local good = { { count = 1 } }

    it("names the field in every error", function()
      assert.matches("proxies%[2%]%.profile must be one of good, dead, blackhole, block",
        err{ tasks = 1, proxies = { { count = 1 }, { count = 1, profile = "zombie" } } })
      assert.matches("tasks must be an integer >= 0", err{ proxies = good })
      assert.matches("tasks must be an integer >= 0", err{ tasks = 1.5, proxies = good })
      assert.matches("hosts%[2%] must be a host name", err{ tasks = 1, hosts = { "a.test", "a b" }, proxies = good })
      assert.matches("hosts must not be empty", err{ tasks = 1, hosts = {}, proxies = good })
      assert.matches("proxies must be a list", err{ tasks = 1 })
      assert.matches("proxies%[1%]%.count must be an integer >= 0", err{ tasks = 1, proxies = { { count = -1 } } })
      assert.matches("proxies%[1%]%.success must be a number from 0 to 1",
        err{ tasks = 1, proxies = { { success = 1.5 } } })
      assert.matches("proxies%[1%]%.jitter must be <= latency",
        err{ tasks = 1, proxies = { { latency = 0.1, jitter = 0.2 } } })
      assert.matches("proxies%[1%]%.latency must be a number >= 0",
        err{ tasks = 1, proxies = { { latency = -1 } } })
      assert.matches("proxies%[1%]%.success does not apply to profile dead",
        err{ tasks = 1, proxies = { { profile = "dead", success = 0.5 } } })
      assert.matches("proxies%[1%]%.script must be a string of outcome letters",
        err{ tasks = 1, proxies = { { profile = "script", script = "sxb" } } })
      assert.matches("proxies%[1%]: unknown field \"sucess\"",
        err{ tasks = 1, proxies = { { sucess = 1 } } })
      assert.matches("unknown field \"task\"", err{ task = 1, proxies = good })
      assert.matches("trace%.proxy must be a proxy number from 1 to 1",
        err{ tasks = 1, proxies = good, trace = { proxy = 2 } })
      assert.matches("trace%.host must be one of hosts",
        err{ tasks = 1, proxies = good, trace = { host = "x.test" } })
      assert.matches("time_limit must be > 0", err{ tasks = 1, proxies = good, time_limit = 0 })
    end)

    it("validates config as scatter.pool does", function()
      assert.matches("^scatter%.simulate: unknown field 'max_concurent_per_request' %(did you mean 'max_concurrent_per_request'%?%)",
        err{ tasks = 1, proxies = good, config = { max_concurent_per_request = 2 } })
      assert.matches("^scatter%.simulate: field 'max_concurrent_per_request' must be an integer",
        err{ tasks = 1, proxies = good, config = { max_concurrent_per_request = 0 } })
      assert.matches("^scatter%.simulate: config must be a table", err{ tasks = 1, proxies = good, config = 3 })
      assert.matches("bad argument #1", select(2, pcall(simulate, 5)))
    end)

    it("reads a young pool's throughput over its own life, not a full window", function()
      -- (every window divided by its full length: a pool a few seconds old
      -- showed a fraction of its rate in the summary line and the gauge)
      local r = simulate{ seed = 3, tasks = 300, proxies = { { count = 50, latency = 0.2, jitter = 0.05 } } }
      assert.are.equal(300, r.delivered)
      assert.is_true(r.virtual_seconds > 1 and r.virtual_seconds < 9, tostring(r.virtual_seconds))
      local rate = 300 / r.virtual_seconds
      assert.is_true(math.abs(r.metrics.throughput_10s - rate) < 0.02 * rate,
        ("throughput_10s %.1f, delivered %.1f/s"):format(r.metrics.throughput_10s, rate))
      assert.are.equal(r.metrics.throughput_10s, r.metrics.throughput_60s)
    end)

    it("accepts a pool config with fields that only matter to real traffic", function()
      local r = simulate{ tasks = 3, proxies = good,
        config = { sources = { "file:///x" }, proxies = { "1.2.3.4:1080" }, name = "x", metrics_log_interval = 0 } }
      assert.are.equal(3, r.delivered)
    end)
  end)

  describe("report", function()
    it("has the documented fields", function()
      local r = simulate{ seed = 1, tasks = 2000, hosts = { "a.test", "b.test" },
        proxies = { { count = 900, profile = "dead" }, { count = 100, latency = 0.3, jitter = 0.1, success = 0.8 } } }
      for _, k in ipairs{ "delivered", "attempts", "cancelled", "virtual_seconds", "dispatches",
                          "zero_available_events", "k_mean", "latency_max", "latency_mean",
                          "max_inflight_seen", "max_task_parallel", "events", "wakes", "submitted" } do
        assert.is_number(r[k], k)
      end
      assert.are.equal("done", r.stopped)
      assert.are.equal(2000, r.delivered)
      assert.are.equal(r.attempts, r.attempts_by_profile.dead + r.attempts_by_profile.good)
      assert.are.equal(0, r.attempts_by_profile.block + r.attempts_by_profile.blackhole)
      -- every attempt either finished with a verdict or was cancelled
      local finished = 0
      for _, n in pairs(r.verdicts) do finished = finished + n end
      assert.are.equal(r.attempts, finished + r.cancelled)
      -- a dead proxy's path can be cancelled: its replacement (DESIGN.md
      -- section 10) may start the instant another path wins
      assert.is_true(r.verdicts.transport <= r.attempts_by_profile.dead)
      assert.is_true(r.verdicts.transport > 0.99 * r.attempts_by_profile.dead)
      assert.are.equal(2000, r.verdicts.success)
      assert.are.equal(r.attempts, r.metrics.attempts_started)
      assert.are.equal(r.cancelled, r.metrics.attempts_cancelled)
      assert.are.equal(1000, r.metrics.total_proxies)
      assert.is_true(r.k_mean >= 1 and r.k_mean <= 6)
      assert.is_true(r.latency_max >= r.latency_mean and r.latency_mean > 0)
    end)

    it("is identical for the same seed, different for another", function()
      local function run(seed)
        return simulate{ seed = seed, tasks = 3000, hosts = { "a.test", "b.test", "c.test" },
          config = { max_inflight = 50, hedge_delay = "auto" },
          proxies = { { count = 200, profile = "dead" }, { count = 50, profile = "blackhole" },
                      { count = 50, profile = "block" }, { count = 20, profile = "slow" },
                      { count = 80, latency = 0.3, jitter = 0.2, success = 0.7, target_error = 0.05 } },
          trace = { limit = 500 } }
      end
      local a, b, c = run(7), run(7), run(8)
      assert.are.same(a, b)
      assert.are_not.same(a.trace, c.trace)
      assert.are.equal(3000, c.delivered)
    end)
  end)

  describe("profiles", function()
    it("dead fails at once, blackhole at proxy_timeout, slow past the timeout is a timeout", function()
      local r = simulate{ tasks = 1, config = { proxy_timeout = 5, eviction_min_samples = 1 },
        proxies = { { profile = "dead" } }, trace = true }
      assert.are.equal("stalled", r.stopped) -- its only proxy evicted at once
      near_list(times(r, "done"), { 0.001 })
      assert.are.equal("transport", r.trace[2].verdict)

      r = simulate{ tasks = 1, config = { proxy_timeout = 5, eviction_min_samples = 1 },
        proxies = { { profile = "blackhole" } }, trace = true }
      near_list(times(r, "done"), { 5 })
      assert.are.equal("transport", r.trace[2].verdict)

      r = simulate{ tasks = 1, config = { proxy_timeout = 5, eviction_min_samples = 1 },
        proxies = { { profile = "slow", latency = 6, jitter = 0 } }, trace = true }
      near_list(times(r, "done"), { 5 })
      assert.are.equal("transport", r.trace[2].verdict)

      r = simulate{ tasks = 1, config = { eviction_min_samples = 1 },
        proxies = { { profile = "block", latency = 0.7 } }, trace = true }
      near_list(times(r, "done"), { 0.7 })
      assert.are.equal("proxy_blocked", r.trace[2].verdict)
    end)

    it("draws good latencies within latency +- jitter", function()
      local r = simulate{ tasks = 300, config = { max_concurrent_per_request = 1 },
        proxies = { { count = 50, latency = 1, jitter = 0.25 } }, trace = true }
      local starts = {}
      local lo, hi = math.huge, 0
      for _, e in ipairs(r.trace) do
        if e.kind == "start" then starts[e.proxy .. "/" .. e.task] = e.t end
        if e.kind == "done" then
          local d = e.t - starts[e.proxy .. "/" .. e.task]
          lo, hi = math.min(lo, d), math.max(hi, d)
        end
      end
      assert.is_true(lo >= 0.75 - 1e-9 and hi <= 1.25 + 1e-9, lo .. " " .. hi)
      assert.is_true(hi - lo > 0.4, "spread " .. (hi - lo))
    end)
  end)

  describe("cooldown", function()
    local base = { max_concurrent_per_request = 1, rate_limit = { default_interval = 0 },
                   eviction_min_samples = 1000, task_pool_capacity = 1 }

    it("rests a pair 30 s after 3 consecutive failures, then 60, 120, 240, capped at 300", function()
      local r = simulate{ tasks = 1, config = base, time_limit = 800, trace = true,
        proxies = { { profile = "block", latency = 1 } } }
      -- fails at 1, 2, 3 -> rests until 33; fails at 34 -> 94; 95 -> 215; 216 -> 456; 457 -> 757
      near_list(times(r, "start"), { 0, 1, 2, 33, 94, 215, 456, 757 })
      assert.are.equal("time_limit", r.stopped)
      assert.are.equal(800, r.virtual_seconds)
      -- no hot loop: one dispatch per retry, two per rest (the wait, the wake)
      assert.are.equal(14, r.dispatches)
      assert.are.equal(5, r.wakes)
      assert.are.equal(6, r.zero_available_events)
      assert.are.equal(1, r.metrics.pending_tasks) -- never dropped
    end)

    it("follows cooldown_base and cooldown_max", function()
      local cfg = { max_concurrent_per_request = 1, rate_limit = { default_interval = 0 },
                    eviction_min_samples = 1000, cooldown_base = 10, cooldown_max = 25,
                    cooldown_consecutive_fails = 2 }
      local r = simulate{ tasks = 1, config = cfg, time_limit = 100, trace = true,
        proxies = { { profile = "block", latency = 1 } } }
      -- fails at 1, 2 -> 12; 13 -> 33; 34 -> 59 (25, capped); 60 -> 85
      near_list(times(r, "start"), { 0, 1, 12, 33, 59, 85 })
    end)

    it("is reset by one success", function()
      local r = simulate{ tasks = 2, config = base, time_limit = 140, trace = true,
        proxies = { { profile = "script", script = "bbbbsbbb", latency = 1 } } }
      -- b b b (rest 30) b (rest 60) s: delivered at 95; then b b b rests 30 again, not 120
      near_list(times(r, "start"), { 0, 1, 2, 33, 94, 95, 96, 97, 128 })
    end)
  end)

  describe("eviction", function()
    it("kills a proxy with 0 successes at its 30th finished attempt; it is never chosen again", function()
      local cfg = { max_concurrent_per_request = 1, rate_limit = { default_interval = 0 },
                    cooldown_consecutive_fails = 1000, task_pool_capacity = 1 }
      local r = simulate{ tasks = 50, config = cfg, trace = { proxy = 1 }, proxy_stats = true,
        proxies = { { profile = "block", latency = 0.05 }, { latency = 0.1 } } }
      assert.are.equal("done", r.stopped)
      assert.are.equal(30, #times(r, "start"))
      assert.are.equal(30, #times(r, "done"))
      assert.is_true(r.proxies[1].dead)
      assert.are.equal(30, r.proxies[1].attempts)
      assert.is_false(r.proxies[2].dead)
      assert.are.equal(50, r.proxies[2].starts)
      assert.are.equal(1, r.metrics.dead_proxies)
      -- its last attempt belonged to task 30: nothing after
      assert.are.equal(30, r.trace[#r.trace].task)
    end)

    it("keeps a proxy that has succeeded once", function()
      local cfg = { max_concurrent_per_request = 1, rate_limit = { default_interval = 0 },
                    cooldown_consecutive_fails = 1000, task_pool_capacity = 1 }
      local r = simulate{ tasks = 5, config = cfg, proxy_stats = true,
        proxies = { { profile = "script", script = "s" .. ("b"):rep(39) } } }
      assert.are.equal("done", r.stopped)
      assert.is_false(r.proxies[1].dead)
      assert.are.equal(5 + 4 * 39, r.proxies[1].attempts)
    end)

    it("leaves a task waiting, not dropped, when every proxy is dead", function()
      local r = simulate{ tasks = 3, config = { eviction_min_samples = 5 },
        proxies = { { count = 4, profile = "dead" } } }
      assert.are.equal("stalled", r.stopped)
      assert.are.equal(0, r.delivered)
      assert.are.equal(4, r.metrics.dead_proxies)
      assert.are.equal(3, r.metrics.pending_tasks)
      assert.are.equal(0, r.metrics.failed_tasks)
    end)
  end)

  describe("adaptive K", function()
    it("doubles K during cold start, then follows the success rate", function()
      local r = simulate{ tasks = 10, trace = true,
        config = { max_concurrent_per_request = 2, eviction_min_samples = 5, task_pool_capacity = 1,
                   rate_limit = { default_interval = 0 } },
        proxies = { { count = 10, latency = 1 } } }
      -- one task at a time; the losers are cancelled, so each task finishes
      -- one attempt: tasks 1..5 are the cold start. Paths started at the
      -- dispatch only: a hedge past K may add one later (section 10)
      local at_dispatch, first = {}, {}
      for _, e in ipairs(r.trace) do
        if e.kind == "start" then
          first[e.task] = first[e.task] or e.t
          if e.t == first[e.task] then at_dispatch[e.task] = (at_dispatch[e.task] or 0) + 1 end
        end
      end
      assert.are.same({ 4, 4, 4, 4, 4, 1, 1, 1, 1, 1 }, at_dispatch)
      assert.are.equal(2.5, r.k_mean)
      assert.are.equal(15 + r.metrics.attempts_hedged, r.cancelled)
      assert.are.equal(1, r.metrics.k_current)
    end)

    it("is ceil(log 0.05 / log(1 - s)) clamped to [1, 2 * base]", function()
      for _, case in ipairs{ { "s", 1 }, { "sb", 0.5 }, { "sbbb", 0.25 }, { "sssb", 0.75 },
                             { "ssssssb", 6 / 7 }, { "ssb", 2 / 3 } } do
        for base = 1, 3 do
          -- one proxy, one task at a time: the pool's outcomes are the script
          local r = simulate{ tasks = 300, proxies = { { profile = "script", script = case[1] } },
            config = { max_concurrent_per_request = base, task_pool_capacity = 1,
                       rate_limit = { default_interval = 0 }, cooldown_consecutive_fails = 100 } }
          assert.are.equal(expected_k(case[2], base), r.metrics.k_current,
            ("script %s, base %d"):format(case[1], base))
        end
      end
    end)

    it("uses fewer paths on a healthy pool than on a poor one", function()
      local function k(success)
        return simulate{ seed = 3, tasks = 5000, config = { max_concurrent_per_request = 3 },
          proxies = { { count = 500, latency = 0.2, success = success } } }.k_mean
      end
      local healthy, poor = k(0.99), k(0.3)
      assert.is_true(healthy < 1.2, "healthy " .. healthy)
      assert.is_true(poor > 5.5, "poor " .. poor)
    end)
  end)

  describe("rate limit", function()
    it("spaces attempts through one pair by the interval; the waiting task wakes exactly then", function()
      local r = simulate{ tasks = 5, config = { task_pool_capacity = 1 },
        proxies = { { latency = 0.1 } }, trace = true }
      near_list(times(r, "start"), { 0, 0.5, 1, 1.5, 2 })
      -- each later task waits once (the earliest eligible time), then goes
      assert.are.equal(9, r.dispatches)
      assert.are.equal(4, r.zero_available_events)
      assert.are.equal(4, r.wakes)
      assert.are.equal(0.5, r.min_pair_gap["example.test"])
    end)

    it("applies host_overrides per host", function()
      local r = simulate{ tasks = 5, hosts = { "a.test", "B.test" }, trace = true,
        config = { task_pool_capacity = 1, rate_limit = { host_overrides = { ["b.test"] = 2 } } },
        proxies = { { latency = 0.1 } } }
      near_list(times(r, "start", function(e) return e.host == "a.test" end), { 0, 0.5, 2.2 })
      near_list(times(r, "start", function(e) return e.host == "b.test" end), { 0.1, 2.1 })
      assert.are.equal(0.5, r.min_pair_gap["a.test"])
      assert.are.equal(2, r.min_pair_gap["b.test"])
    end)

    it("holds on a large fault mix", function()
      local r = simulate{ seed = 5, tasks = 20000, hosts = { "a.test", "b.test" },
        config = { max_inflight = 300, rate_limit = { default_interval = 1, host_overrides = { ["b.test"] = 3 } } },
        proxies = { { count = 300, profile = "dead" }, { count = 200, latency = 0.3, jitter = 0.2, success = 0.7 },
                    { count = 50, profile = "block" } } }
      assert.are.equal(20000, r.delivered)
      assert.is_true(r.min_pair_gap["a.test"] >= 1 - 1e-9, r.min_pair_gap["a.test"])
      assert.is_true(r.min_pair_gap["b.test"] >= 3 - 1e-9, r.min_pair_gap["b.test"])
    end)
  end)

  describe("limits and paths", function()
    it("never exceeds max_inflight", function()
      local r = simulate{ tasks = 5000, config = { max_inflight = 7 },
        proxies = { { count = 100, profile = "blackhole" }, { count = 100, latency = 0.5, success = 0.5 } } }
      assert.are.equal(5000, r.delivered)
      assert.are.equal(7, r.max_inflight_seen)
      assert.is_true(r.metrics.skipped_no_permit > 0)
    end)

    it("uses one path at a time for non-idempotent tasks", function()
      local function run(norace)
        return simulate{ tasks = 500, norace = norace, trace = { limit = 100000 },
          proxies = { { count = 20, profile = "dead" }, { count = 20, latency = 0.3, success = 0.5 } } }
      end
      local r = run(true)
      assert.are.equal(500, r.delivered)
      assert.are.equal(1, r.max_task_parallel)
      assert.are.equal(0, r.cancelled)
      -- each task's attempts are sequential: a start only after the previous ended
      local open = {}
      for _, e in ipairs(r.trace) do
        if e.kind == "start" then
          assert.is_nil(open[e.task], "task " .. e.task .. " has two paths at " .. e.t)
          open[e.task] = true
        else
          open[e.task] = nil
        end
      end
      assert.is_true(run(false).max_task_parallel > 1)
    end)

    it("retries a target_error after the backoff without penalising the proxy", function()
      local r = simulate{ tasks = 1, trace = true, proxy_stats = true,
        config = { max_concurrent_per_request = 1, rate_limit = { default_interval = 0 },
                   eviction_min_samples = 2, cooldown_consecutive_fails = 1 },
        proxies = { { profile = "script", script = "eeeeeees", latency = 0.1 } } }
      -- backoff 0.5, 1, 2, 4, 8, 16, then 30 (capped)
      near_list(times(r, "start"), { 0, 0.6, 1.7, 3.8, 7.9, 16, 32.1, 62.2 })
      assert.are.equal(7, r.verdicts.target_error)
      assert.is_false(r.proxies[1].dead)
      assert.are.equal(1, r.proxies[1].attempts) -- only the success is on its record
      assert.are.equal(1, r.proxies[1].successes)
    end)

    it("delivers final as is", function()
      local r = simulate{ tasks = 3, proxies = { { profile = "script", script = "f" } } }
      assert.are.equal(3, r.delivered)
      assert.are.equal(3, r.verdicts.final)
    end)

    it("cancels the losers the moment the race is won", function()
      local r = simulate{ tasks = 1, trace = true, config = { max_concurrent_per_request = 2 },
        proxies = { { count = 4, latency = 1 } } }
      near_list(times(r, "start"), { 0, 0, 0, 0 })
      near_list(times(r, "done"), { 1 })
      near_list(times(r, "cancel"), { 1, 1, 1 })
      assert.are.equal(3, r.cancelled)
    end)

    it("starts the extra paths hedge_delay apart", function()
      local r = simulate{ tasks = 1, trace = true, proxies = { { count = 4, latency = 1 } },
        config = { max_concurrent_per_request = 2, hedge_delay = 0.25, rate_limit = { default_interval = 0 } } }
      near_list(times(r, "start"), { 0, 0.25, 0.5, 0.75 })
      near_list(times(r, "cancel"), { 1, 1, 1 })
    end)

    it("hedge_delay auto waits the host's p95 latency before an extra path", function()
      local r = simulate{ tasks = 400, trace = true, proxies = { { count = 50, latency = 1, success = 0.5 } },
        config = { hedge_delay = "auto", max_concurrent_per_request = 2, task_pool_capacity = 20,
                   rate_limit = { default_interval = 0 } } }
      local first, second = {}, {}
      for _, e in ipairs(r.trace) do
        if e.kind == "start" then
          if not first[e.task] then first[e.task] = e.t elseif not second[e.task] then second[e.task] = e.t end
        end
      end
      assert.are.equal(first[1], second[1]) -- no latency known yet: all at once
      local n = 0
      for t = 100, 400 do
        if second[t] then
          n = n + 1
          local gap = second[t] - first[t]
          assert(gap > 0.9 and gap <= 1 + 1e-9, "task " .. t .. ": second path after " .. gap)
        end
      end
      assert.is_true(n > 50, n)
    end)

    it("keeps hedging in a healthy pool, where adaptive K alone drops to 1", function()
      -- every attempt succeeds, but half the proxies take 2 s; the fast
      -- half is often rate-limited, so single paths land on slow proxies
      local proxies = { { count = 20, latency = 0.05, jitter = 0.01 }, { count = 20, latency = 2 } }
      local cfg = { task_pool_capacity = 20, max_inflight = 1000, rate_limit = { default_interval = 0.5 } }
      -- the round rule: continuous racing's hedges past K would hedge too
      cfg.racing = "rounds"
      local plain = simulate{ tasks = 2000, proxies = proxies, config = cfg }
      cfg.hedge_delay = 0.2
      local hedged = simulate{ tasks = 2000, proxies = proxies, config = cfg }
      assert.are.equal(1, plain.metrics.k_current) -- no racing left without hedging
      assert.are.equal(2000, hedged.delivered)
      assert.is_true(hedged.attempts > plain.attempts * 1.2, "the hedges never fired")
      assert.is_true(hedged.latency_mean < plain.latency_mean * 0.7,
        hedged.latency_mean .. " vs " .. plain.latency_mean)
    end)

    it("fires the next hedge at once when the only running path fails", function()
      local r = simulate{ tasks = 1, trace = true,
        proxies = { { count = 4, profile = "dead", latency = 0.1 }, { count = 4, latency = 1 } },
        config = { max_concurrent_per_request = 2, hedge_delay = 0.25, rate_limit = { default_interval = 0 } } }
      local starts = times(r, "start")
      assert.are.equal(0, starts[1])
      -- whatever the order, no gap longer than hedge_delay between starts
      for i = 2, #starts do assert.is_true(starts[i] - starts[i - 1] <= 0.25 + 1e-9) end
      -- K paths hedge_delay apart; each failed one replaced at once
      -- (section 10), and a hedge past K once all are older than the p95
      assert.are.equal(4, #starts - r.metrics.attempts_replaced - r.metrics.attempts_hedged)
    end)
  end)

  describe("never-fail", function()
    it("delivers every one of 100,000 tasks on a fault mix", function()
      local r = simulate{ seed = 42, tasks = 100000, hosts = { "a.test", "b.test", "c.test" },
        config = { max_inflight = 500, task_pool_capacity = 2000 },
        proxies = { { count = 2000, profile = "dead" }, { count = 500, profile = "blackhole" },
                    { count = 500, profile = "block" }, { count = 200, profile = "slow", success = 0.5 },
                    { count = 300, latency = 0.3, jitter = 0.2, success = 0.4, target_error = 0.1 },
                    { count = 100, profile = "script", script = "sbbtesf" } } }
      assert.are.equal("done", r.stopped)
      assert.are.equal(100000, r.submitted)
      assert.are.equal(100000, r.delivered)
      assert.are.equal(100000, r.metrics.completed_tasks)
      assert.are.equal(0, r.metrics.pending_tasks)
      assert.are.equal(0, r.metrics.inflight)
      assert.are.equal(100000, r.verdicts.success + r.verdicts.final)
      assert.is_true(r.max_inflight_seen <= 500)
      -- the faults were exercised, not dodged
      for _, v in ipairs{ "proxy_blocked", "transport", "target_error" } do
        assert.is_true(r.verdicts[v] > 1000, v .. " " .. r.verdicts[v])
      end
      assert.is_true(r.attempts > 2 * r.delivered)
    end)
  end)

  describe("trace", function()
    it("is bounded and filters by proxy and host", function()
      local r = simulate{ tasks = 200, hosts = { "a.test", "b.test" }, trace = { limit = 10 },
        proxies = { { count = 10 } } }
      assert.are.equal(10, #r.trace)
      assert.is_true(r.trace_dropped > 0)
      r = simulate{ tasks = 200, hosts = { "a.test", "b.test" }, trace = { proxy = 3, host = "B.TEST" },
        proxies = { { count = 10 } } }
      assert.is_true(#r.trace > 0)
      for _, e in ipairs(r.trace) do
        assert.are.equal(3, e.proxy)
        assert.are.equal("b.test", e.host)
      end
    end)
  end)

  describe("memory", function()
    local asan = (os.getenv("LD_PRELOAD") or ""):find("asan")
    local check = asan and pending or it
    check("stays within 64 bytes per health record and 256 per pending task", function()
      local r = simulate{ tasks = 0, proxies = { { count = 1 } }, memory = true }
      assert.is_table(r.memory)
      -- 64 bytes of record plus its slot in the host's index
      assert.is_true(r.memory.bytes_per_pair <= 64 + 8, r.memory.bytes_per_pair)
      assert.is_true(r.memory.bytes_per_task <= 256, r.memory.bytes_per_task)
      assert.is_true(r.memory.bytes_per_attempt <= 256, r.memory.bytes_per_attempt)
    end)
  end)
end)
