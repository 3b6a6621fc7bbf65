-- Chaos: a crawl through a farm whose proxies are killed, restarted and
-- switched between profiles at random while it runs (through the farm's
-- control port). Every task must end with its own correct body, and once
-- the pool is closed the process holds no more descriptors and no more Lua
-- memory than after a first, smaller chaos run (the warm-up).
local env = require("support.env")
local scatter = require("scatter")

local TASKS = tonumber(os.getenv("SCATTER_CHAOS_TASKS")) or 5000
local WARMUP = 500
local FILES = 64
local NPROXIES = 16

-- Every body is distinct, mostly 'a's (the tamper profile turns them into
-- '4's) and long enough that drop_mid cuts it.
local function body_of(i)
  return ("file %d\n"):format(i) .. ("abcdefgh"):rep(40 + i * 7) .. "\n"
end

local rss_kib = env.rss_kib

local function sanitized()
  local f = io.open("/proc/self/maps")
  local maps = f:read("*a")
  f:close()
  return maps:find("libasan", 1, true) ~= nil
end

local function lua_kib()
  collectgarbage()
  collectgarbage()
  return collectgarbage("count")
end

-- Profiles a proxy may be switched to mid-run: healthy ones and broken ones.
local PROFILES = {
  "good", "good", "good", "slow latency=0.05 jitter=0.02", "flaky p=0.5",
  "tamper", "drop_mid bytes=200", "block", "blackhole", "handshake_fail",
  "die_after n=3",
}

describe("chaos", function()
  local ng, farm

  setup(function()
    local files = {}
    for i = 1, FILES do files["c" .. i .. ".txt"] = body_of(i) end
    ng = env.nginx({ files = files })
    local lines = { "good count=6", "slow latency=0.05 count=2", "flaky p=0.3 count=2",
      "tamper count=2", "drop_mid bytes=300 count=2", "block", "die_after n=20" }
    farm = env.farm(lines, { seed = 42 })
    assert.equal(NPROXIES, #farm.proxies)
  end)

  teardown(function()
    scatter.close_all()
    env.cleanup()
  end)

  -- One chaos step, taken by the workers every few tasks (so the amount of
  -- chaos per task does not depend on the machine's speed): one random
  -- proxy goes down, or gets a new profile, and a proxy that has been down
  -- for 40 steps comes back up. Returns the step function and a finisher
  -- that brings every proxy back up and returns the counts.
  local function chaos(rng)
    local downed, step = {}, 0
    local counts = { down = 0, up = 0, profile = 0, errors = 0 }
    local function ctl(cmd)
      local reply = farm.control(cmd)
      if not (reply and reply:match("^OK")) then counts.errors = counts.errors + 1 end
    end
    local function one()
      step = step + 1
      for i, at in pairs(downed) do
        if step - at >= 40 then
          ctl("up " .. i)
          downed[i] = nil
          counts.up = counts.up + 1
        end
      end
      local i = rng(NPROXIES) - 1
      if downed[i] then return end
      if rng(10) <= 3 then
        ctl("down " .. i)
        downed[i] = step
        counts.down = counts.down + 1
      else
        ctl("profile " .. i .. " " .. PROFILES[rng(#PROFILES)])
        counts.profile = counts.profile + 1
      end
    end
    local function finish()
      for i in pairs(downed) do
        ctl("up " .. i)
        counts.up = counts.up + 1
      end
      return counts
    end
    return one, finish
  end

  -- Runs n tasks under chaos; returns the number of correct bodies, the
  -- failures (url -> error or wrong body) and the chaos counts.
  local function crawl(n, seed)
    local pool = scatter.pool({
      proxies = farm.proxies, name = "chaos", metrics_log_interval = 0,
      max_inflight = 200, max_concurrent_per_request = 3, task_pool_capacity = n,
      proxy_timeout = 1, cooldown_base = 0.1, cooldown_max = 0.5,
      -- a proxy that is down for a while is not gone for good here
      eviction_min_samples = 1000000,
      rate_limit = { default_interval = 0 },
      classifier = function(resp)
        local i = tonumber(resp.url:match("/c(%d+)%.txt"))
        if resp.status == 200 and i and resp.body == body_of(i) then return "success" end
        return "proxy_blocked"
      end,
    })
    local good, failures = 0, {}
    local state, seq = seed, 0
    local function rng(m) -- deterministic per run, independent of math.random
      state = (state * 1103515245 + 12345) % 2147483648
      return math.floor(state / 65536) % m + 1
    end
    local step, finish = chaos(rng)
    scatter.run(function()
      local workers = {}
      for w = 1, 250 do
        workers[w] = scatter.spawn(function()
          while seq < n do
            seq = seq + 1
            if seq % 5 == 0 then step() end
            local i = seq % FILES + 1
            local url = ng.url("/c" .. i .. ".txt?t=" .. seq)
            local resp, err = pool:get(url, { timeout = 120 })
            if resp and resp.status == 200 and resp.body == body_of(i) then
              good = good + 1
            else
              failures[url] = err or ("status " .. tostring(resp.status) .. ", " .. #resp.body .. " bytes")
            end
          end
        end)
      end
      scatter.wait_all(unpack(workers))
    end)
    local counts = finish()
    pool:close()
    return good, failures, counts
  end

  -- Found by bench/soak.lua: the runtime's weak-keyed coroutine -> thread
  -- map kept every ended thread, since the thread holds its coroutine.
  it("lets ended threads be collected", function()
    local weak = setmetatable({}, { __mode = "k" })
    scatter.run(function()
      for _ = 1, 100 do weak[scatter.spawn(function() scatter.sleep(0) end)] = true end
    end)
    collectgarbage()
    collectgarbage()
    local n = 0
    for _ in pairs(weak) do n = n + 1 end
    assert.equal(0, n)
  end)

  -- Also found by bench/soak.lua: a cancelled timer left the heap only at
  -- its due time when a live timer sat before it, so every ended task's
  -- 120 s timeout kept its closure (and response) that long.
  it("lets cancelled timers be collected before their due time", function()
    local runtime = require("scatter.runtime")
    local live = runtime.after(3600, function() end)
    local weak = setmetatable({}, { __mode = "k" })
    -- rising times (the FIFO) and falling ones (the heap)
    for i = 1, 5000 do
      local payload = {}
      weak[payload] = true
      local after = i % 2 == 0 and 7200 + i or 7200 - i
      runtime.after(after, function() return payload end).cancelled = true
    end
    live.cancelled = true
    collectgarbage()
    collectgarbage()
    local n = 0
    for _ in pairs(weak) do n = n + 1 end
    assert.is_true(n < 1000, n .. " of 5000 cancelled timers still held")
  end)

  it("loses no task and returns every body intact while proxies die and change", function()
    local g0, f0 = crawl(WARMUP, 7)
    assert.equal(WARMUP, g0, next(f0) and (next(f0) .. ": " .. f0[next(f0)]))
    local fds0, list0 = env.open_fds()
    local lua0, rss0 = lua_kib(), rss_kib()

    local good, failures, counts = crawl(TASKS, 1234)
    local first = next(failures)
    assert.equal(TASKS, good, first and (first .. ": " .. failures[first]))
    assert.is_true(counts.down > TASKS / 50 and counts.up > TASKS / 50 and counts.profile > TASKS / 20,
      ("chaos too mild: %d down, %d up, %d profile switches"):format(counts.down, counts.up, counts.profile))
    assert.equal(0, counts.errors)

    local fds1, list1 = env.open_fds()
    local lua1, rss1 = lua_kib(), rss_kib()
    assert.equal(fds0, fds1, "descriptors before: " .. list0 .. "\nafter: " .. list1)
    -- the Lua heap after a full collection: what a closed pool left behind
    assert.is_true(lua1 < lua0 + 512, ("Lua heap grew from %d to %d KiB"):format(lua0, lua1))
    -- RSS only outside sanitizer builds (ASan keeps freed memory in
    -- quarantine); a leak of a few hundred bytes per task would show as MBs
    if not sanitized() then
      assert.is_true(rss1 < rss0 + 32 * 1024, ("RSS grew from %d to %d KiB"):format(rss0, rss1))
    end
    io.stderr:write(("chaos: %d tasks, %d down, %d up, %d switches; fds %d->%d, lua %dK->%dK, rss %dK->%dK\n")
      :format(TASKS, counts.down, counts.up, counts.profile, fds0, fds1, lua0, lua1, rss0, rss1))
  end)
end)
