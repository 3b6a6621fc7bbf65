-- Warm restarts (issue 17, DESIGN.md sections 3, 5): the state file keeps
-- adaptive K's window of recent outcomes and the count of finished
-- attempts, so a restart skips the cold-start doubling of K; a version 1
-- file (no window) is still read and its pairs' outcomes stand in.
-- Assertions are on attempt counts, never on time.
local env = require("support.env")
local cjson = require("cjson")
local scatter = require("scatter")
local state = require("scatter.state")
local log = require("scatter.log")

local read, write = env.read_file, env.write_file

describe("warm restarts", function()
  local ng, farm, dir, sink, logged

  setup(function()
    ng = env.nginx()
    farm = env.farm({ "good count=10", "refuse count=10" })
    dir = env.tmpdir()
    sink = log.sink
  end)

  teardown(function()
    log.sink = sink
    scatter.close_all()
    env.cleanup()
  end)

  before_each(function()
    logged = {}
    log.sink = function(line) logged[#logged + 1] = line end
  end)

  after_each(function()
    log.sink = sink
    scatter.close_all()
  end)

  local function one_get(pool)
    local resp, err
    scatter.run(function() resp, err = pool:get(ng.url("/small.txt"), { timeout = 30 }) end)
    assert(resp, err)
    return resp
  end

  -- A state file by hand: two good proxies with full success windows.
  local function snapshot(version, extra)
    local wall = os.time()
    local sec = {
      proxies = { { farm.proxies[1], 40, 40, -1 }, { farm.proxies[2], 40, 40, -1 } },
      hosts = { ["127.0.0.1"] = {
        { 1, 30, 30, 0, wall - 5, 0, 0.01, 0.01, 0.02 },
        { 2, 30, 30, 0, wall - 5, 0, 0.01, 0.01, 0.02 },
      } },
    }
    for k, v in pairs(extra or {}) do sec[k] = v end
    return cjson.encode({
      format = state.FORMAT, version = version, saved_at = wall - 5,
      proxy_fields = state.PROXY_FIELDS, pair_fields = state.PAIR_FIELDS,
      pools = { default = sec },
    })
  end

  local function pool_of(path, extra)
    local c = { proxies = { farm.proxies[1], farm.proxies[2] }, state_file = path,
                metrics_log_interval = 0, max_concurrent_per_request = 1,
                rate_limit = { default_interval = 0 } }
    for k, v in pairs(extra or {}) do c[k] = v end
    return scatter.pool(c)
  end

  it("starts a restored pool past the cold start: K = 1 from the first task", function()
    local path = dir .. "/v2.json"
    write(path, snapshot(2, { recent = ("1"):rep(60), finished = 60 }))
    local pool = pool_of(path)
    local resp = one_get(pool)
    local m = pool:metrics()
    -- a cold pool doubles K (2 paths through the 2 good proxies)
    assert.equal(1, resp.attempts)
    assert.equal(1, m.attempts_started)
    assert.equal(0, m.attempts_cancelled)
    assert.equal(1, m.k_current)
    pool:close()
    assert.same({}, logged)
  end)

  it("still doubles K on a restored window that is too short to trust", function()
    local path = dir .. "/short.json"
    write(path, snapshot(2, { recent = "11", finished = 2 }))
    local pool = pool_of(path, { eviction_min_samples = 30 })
    one_get(pool)
    assert.equal(2, pool:metrics().attempts_started)
    pool:close()
  end)

  it("reads a version 1 file, counting its pairs' outcomes in place of the window", function()
    local path = dir .. "/v1.json"
    write(path, snapshot(1))
    local pool = pool_of(path)
    one_get(pool)
    assert.equal(1, pool:metrics().attempts_started)
    pool:close()
    assert.same({}, logged)
    -- and it is written back as version 2, with the window
    local doc = cjson.decode(read(path))
    assert.equal(2, doc.version)
    local sec = doc.pools.default
    assert.is_string(sec.recent)
    assert.equal(61, #sec.recent)      -- 60 restored + this run's one
    assert.equal(61, sec.finished)
    assert.equal(("1"):rep(61), sec.recent)
  end)

  it("refuses a bad window with a warning and starts cold", function()
    for name, case in pairs({
      letters = { { recent = "10x1" }, "recent is not a string of at most 256 0s and 1s" },
      long = { { recent = ("1"):rep(257) }, "recent is not a string of at most 256" },
      number = { { recent = 5 }, "recent is not a string" },
      finished = { { recent = "1", finished = -1 }, "finished is not a count" },
      fraction = { { recent = "1", finished = 1.5 }, "finished is not a count" },
    }) do
      logged = {}
      local path = dir .. "/bad-" .. name .. ".json"
      write(path, snapshot(2, case[1]))
      local pool = pool_of(path)
      assert.equal(1, #logged, name)
      assert.truthy(logged[1]:find(case[2], 1, true), name .. ": " .. logged[1])
      assert.truthy(logged[1]:find("starting cold", 1, true), name)
      pool:close()
    end
  end)

  it("keeps the window across restarts: what was saved is what comes back", function()
    local path = dir .. "/roundtrip.json"
    local pool = pool_of(path, { proxies = { farm.proxies[1], farm.proxies[11] },
                                 max_concurrent_per_request = 2 })
    scatter.run(function()
      for i = 1, 12 do assert(pool:get(ng.url("/small.txt?i=" .. i), { timeout = 30 })) end
    end)
    local m = pool:metrics()
    pool:close()
    local sec = cjson.decode(read(path)).pools.default
    assert.equal(m.attempts_finished, sec.finished)
    assert.truthy(sec.recent:find("0", 1, true), sec.recent) -- the refusals are in it
    assert.truthy(sec.recent:find("1", 1, true), sec.recent)
    local again = pool_of(path)
    again:close() -- no attempt: the window must come back as it was saved
    local sec2 = cjson.decode(read(path)).pools.default
    assert.equal(sec.recent, sec2.recent)
    assert.equal(sec.finished, sec2.finished)
  end)

  -- The issue's mix: 10 good and 10 refusing proxies, K = 1. A cold start
  -- doubles K until eviction_min_samples attempts have finished, and with
  -- many tasks at once that burst is most of a short run; before the fix a
  -- warm start did the same.
  it("makes a warm start take at most 0.8x the cold start's attempts per task", function()
    local path = dir .. "/mix.json"
    local function run(seed)
      local pool = scatter.pool({ proxies = farm.proxies, state_file = path, metrics_log_interval = 0,
                                  max_concurrent_per_request = 1, seed = seed,
                                  rate_limit = { default_interval = 0.1 } })
      scatter.run(function()
        local ths, next_i = {}, 0
        for w = 1, 100 do
          ths[w] = scatter.spawn(function()
            while next_i < 300 do
              next_i = next_i + 1
              assert(pool:get(ng.url("/small.txt?i=" .. next_i), { timeout = 60 }))
            end
          end)
        end
        for _, r in ipairs(scatter.wait_all(unpack(ths))) do assert(r[1], r[2]) end
      end)
      local m = pool:metrics()
      pool:close()
      assert.equal(300, m.completed_tasks)
      return m.attempts_started / m.completed_tasks, m.attempts_cancelled
    end
    local cold, cold_losers = run(1)
    local warm, warm_losers = run(2)
    local what = string.format("cold %.2f attempts per task (%d losers), warm %.2f (%d)",
      cold, cold_losers, warm, warm_losers)
    assert.is_true(warm <= 0.8 * cold, what)
    -- the burst: before the fix a warm start doubled K for its first
    -- eviction_min_samples outcomes (30 losers here, 0 after)
    assert.is_true(warm_losers <= cold_losers / 20, what)
  end)
end)
