-- State files (DESIGN.md section 5): mode 0600, health restored across a
-- restart, every kind of bad file, periodic saves, one file shared by
-- several pools, a warm start against a cold one on a fault mix, and kill -9
-- at random moments during a crawl.
local env = require("support.env")
local ffi = require("ffi")
local cjson = require("cjson")
local scatter = require("scatter")
local state = require("scatter.state")
local log = require("scatter.log")

pcall(ffi.cdef, "unsigned int umask(unsigned int mask);")
pcall(ffi.cdef, "int kill(int pid, int sig);")

local read, write = env.read_file, env.write_file

local function mode_of(path)
  local p = io.popen("stat -c %a '" .. path .. "'")
  local m = p:read("*l")
  p:close()
  return m
end

local function totals(pool)
  local out = {}
  for _, p in ipairs(pool:proxies()) do
    out[p.key] = { attempts = p.attempts, successes = p.successes, dead = p.dead }
  end
  return out
end

describe("state files", function()
  local ng, farm, dir, logged, sink

  setup(function()
    ng = env.nginx()
    farm = env.farm({
      "good count=3",           -- 1..3
      "refuse count=6",         -- 4..9
      "blackhole count=3",      -- 10..12
      "block count=3",          -- 13..15
      "handshake_fail count=3", -- 16..18
    })
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

  local function cfg(path, extra)
    local c = {
      proxies = { farm.proxies[1], farm.proxies[2], farm.proxies[4], farm.proxies[13] },
      state_file = path, metrics_log_interval = 0, proxy_timeout = 2,
      eviction_min_samples = 3, rate_limit = { default_interval = 0 },
    }
    for k, v in pairs(extra or {}) do c[k] = v end
    return c
  end

  local function crawl(pool, n, workers)
    scatter.run(function()
      local ths = {}
      for w = 1, workers or 3 do
        ths[w] = scatter.spawn(function()
          for i = w, n, workers or 3 do
            local resp, err = pool:get(ng.url("/small.txt?i=" .. i), { timeout = 60 })
            assert(resp, err)
          end
        end)
      end
      for _, r in ipairs(scatter.wait_all(unpack(ths))) do assert(r[1], r[2]) end
    end)
  end

  it("is written mode 0600 whatever the umask, and restores health after a restart", function()
    local path = dir .. "/health.json"
    local old = ffi.C.umask(0)
    local pool = scatter.pool(cfg(path))
    crawl(pool, 12)
    local before = totals(pool)
    pool:close()
    ffi.C.umask(old)
    assert.equal("600", mode_of(path))
    local sections = assert(state.read(path))
    assert.equal(4, #sections.default.proxies)
    assert.is_true(before[farm.proxies[4]].dead) -- refused three times: evicted

    local dead = 0
    for _, t in pairs(before) do dead = dead + (t.dead and 1 or 0) end
    local again = scatter.pool(cfg(path))
    assert.same(before, totals(again))
    assert.equal(dead, again:metrics().dead_proxies)
    assert.equal(0, #logged)
    again:close()
  end)

  it("starts cold on a missing file without a word", function()
    local path = dir .. "/missing.json"
    local pool = scatter.pool(cfg(path))
    assert.equal(4, pool:metrics().total_proxies)
    assert.equal(0, #logged)
    pool:close()
    assert(state.read(path))
  end)

  it("starts cold with a warning on a bad file, and leaves it alone until a good snapshot replaces it", function()
    local good = dir .. "/good.json"
    local p = scatter.pool(cfg(good))
    crawl(p, 3)
    p:close()
    local text = read(good)
    local doc = cjson.decode(text)
    local function variant(edit)
      local d = cjson.decode(text)
      edit(d)
      return cjson.encode(d)
    end
    local bad = {
      truncated = { text:sub(1, math.floor(#text / 2)), "not JSON" },
      empty = { "", "not JSON" },
      not_json = { "proxies: 127.0.0.1:1080\n", "not JSON" },
      foreign = { '{"name":"something else","version":1}', "not a scatter state file" },
      array = { "[1,2,3]", "not a scatter state file" },
      wrong_version = { variant(function(d) d.version = 3 end), "version 3, this scatter reads versions 1 to 2" },
      version_zero = { variant(function(d) d.version = 0 end), "version 0, this scatter reads versions 1 to 2" },
      version_string = { variant(function(d) d.version = "1" end), 'version "1", this scatter' },
      layout = { variant(function(d) d.pair_fields[2] = "tries" end), "unknown row layout" },
      pools_array = { variant(function(d) d.pools = { 1 } end), "pools has a key that is not a name" },
      attempts_string = { variant(function(d) d.pools.default.proxies[1][2] = "3" end),
                          "pools[default]: proxies[1][2] (attempts) is not a count" },
      successes_over = { variant(function(d) d.pools.default.proxies[1][3] = 99 end),
                         "proxies[1][3] (successes) is not a count <= attempts" },
      bad_key = { variant(function(d) d.pools.default.proxies[2][1] = "socks6://x:1" end),
                  "proxies[2][1] is not a proxy key" },
      short_row = { variant(function(d) d.pools.default.proxies[1][4] = nil end),
                    "proxies[1] is not an array of 4 fields" },
      pair_type = { variant(function(d)
        local _, rows = next(d.pools.default.hosts)
        rows[1][5] = "yesterday"
      end), "][5] is out of range or not a number" },
      pair_proxy = { variant(function(d)
        local _, rows = next(d.pools.default.hosts)
        rows[1][1] = 99
      end), "][1] is out of range or not a number" },
      hosts_array = { variant(function(d) d.pools.default.hosts = { { 1 } } end),
                      "hosts has a key that is not a host name" },
      sources_row = { variant(function(d) d.pools.default.sources = { ["file:///x"] = { 42 } } end),
                      "has a bad proxy row" },
    }
    assert.is_table(doc.pools.default)
    for name, case in pairs(bad) do
      logged = {}
      local path = dir .. "/bad-" .. name .. ".json"
      write(path, case[1])
      local pool = scatter.pool(cfg(path))
      assert.equal(1, #logged, name)
      assert.truthy(logged[1]:find("WARN", 1, true), name)
      assert.truthy(logged[1]:find("state file " .. path .. ": ", 1, true), name .. ": " .. logged[1])
      assert.truthy(logged[1]:find(case[2], 1, true), name .. ": " .. logged[1])
      assert.truthy(logged[1]:find("; starting cold", 1, true), name)
      local t = totals(pool)
      for _, v in pairs(t) do assert.equal(0, v.attempts, name) end -- nothing restored
      scatter.sleep(0.05)
      assert.equal(case[1], read(path), name .. ": the bad file was touched")
      pool:close()
      assert(state.read(path), name .. ": not replaced by a good snapshot")
    end
  end)

  it("saves every state_save_interval while the pool runs", function()
    local path = dir .. "/periodic.json"
    local pool = scatter.pool(cfg(path, { state_save_interval = 0.1 }))
    local seen = {}
    scatter.run(function()
      local deadline = scatter.now() + 20
      while #seen < 3 and scatter.now() < deadline do
        local t = read(path)
        local d = t and cjson.decode(t)
        if d and d.saved_at ~= seen[#seen] then seen[#seen + 1] = d.saved_at end
        scatter.sleep(0.02)
      end
    end)
    assert.equal(3, #seen)
    assert.is_true(seen[1] < seen[2] and seen[2] < seen[3])
    pool:close()
  end)

  it("lets pools that name the same file share it, one section each, written as one", function()
    local path = dir .. "/shared.json"
    local a = scatter.pool(cfg(path, { name = "a.test", proxies = { farm.proxies[1], farm.proxies[4] } }))
    local b = scatter.pool(cfg(path, { name = "b.test", proxies = { farm.proxies[2], farm.proxies[5] } }))
    assert.has_error(function() scatter.pool(cfg(path, { name = "a.test" })) end,
      'scatter.pool: state_file "' .. path .. '" is already used by an open pool named "a.test" (give each pool its own name)')
    crawl(a, 6)
    crawl(b, 4)
    local ta, tb = totals(a), totals(b)
    a:close()
    local s = assert(state.read(path))
    assert.is_table(s["a.test"])
    assert.is_table(s["b.test"]) -- b still open: its section is there too
    b:close()
    s = assert(state.read(path))
    assert.equal(2, #s["a.test"].proxies)
    assert.equal(2, #s["b.test"].proxies)

    -- only a comes back: b's section is kept as it was
    a = scatter.pool(cfg(path, { name = "a.test", proxies = { farm.proxies[1], farm.proxies[4] } }))
    assert.same(ta, totals(a))
    a:close()
    b = scatter.pool(cfg(path, { name = "b.test", proxies = { farm.proxies[2], farm.proxies[5] } }))
    assert.same(tb, totals(b))
    b:close()
  end)

  it("makes a warm restart need fewer attempts per delivered task than a cold start", function()
    local path = dir .. "/warm.json"
    local mix = {}
    for i = 1, 18 do mix[i] = farm.proxies[i] end
    local c = cfg(path, { proxies = mix, proxy_timeout = 1, max_concurrent_per_request = 2,
                          rate_limit = { default_interval = 0.05 } })
    local function run()
      local pool = scatter.pool(c)
      crawl(pool, 30)
      local m = pool:metrics()
      pool:close()
      assert.equal(30, m.completed_tasks)
      return m.attempts_started / m.completed_tasks
    end
    local cold = run()
    local warm = run()
    assert.is_true(warm < cold, string.format("warm %.2f attempts per task, cold %.2f", warm, cold))
  end)

  it("always holds the old or the new snapshot when the process is killed with SIGKILL", function()
    local path = dir .. "/killed.json"
    -- a big section to write: proxies from an earlier list, retired (no
    -- source lists them), so never dialled but saved every time
    local wall = os.time()
    local proxies, pairs_ = {}, {}
    for i = 1, 30000 do
      proxies[i] = { string.format("10.%d.%d.1:1080", math.floor(i / 200), i % 200), 40, 10, -1 }
      pairs_[i] = { i, 30, 10, 0, wall - i, 0, 0.25, 0.2, 0.9 }
    end
    write(path, cjson.encode({
      format = state.FORMAT, version = state.VERSION, saved_at = wall - 10,
      proxy_fields = state.PROXY_FIELDS, pair_fields = state.PAIR_FIELDS,
      pools = { default = { proxies = proxies, hosts = { ["127.0.0.1"] = pairs_ } } },
    }))
    local script = dir .. "/crawl.lua"
    write(script, [[
      local scatter = require("scatter")
      local path, target, mode = arg[1], arg[2], arg[3]
      local proxies = {}
      for i = 4, #arg do proxies[#proxies + 1] = arg[i] end
      local pool = scatter.pool({ proxies = proxies, state_file = path, state_save_interval = 0.03,
                                  metrics_log_interval = 0, rate_limit = { default_interval = 0 } })
      local n = mode == "once" and 3 or math.huge
      for w = 1, 3 do
        scatter.spawn(function()
          local i = 0
          while i < n do
            i = i + 1
            assert(pool:get(target .. "?w=" .. w .. "&i=" .. i, { timeout = 30 }))
          end
        end)
      end
      print("ready")
      io.stdout:flush()
    ]])
    local bin = env.build_dir() .. "/scatter"
    local function start(mode)
      local out = dir .. "/crawl-" .. mode .. ".out"
      os.remove(out)
      local argv = { bin, "run", script, path, ng.url("/small.txt"), mode }
      for i = 1, 3 do argv[#argv + 1] = farm.proxies[i] end
      local proc = env.spawn(argv, { log = out, name = "scatter-crawl" })
      env.wait_until(function() return (read(out) or ""):find("ready", 1, true) end, "the crawl to start", proc, 30)
      return proc, out
    end
    -- the temp file of a write in progress, if there is one
    local function writing(pid)
      for seq = 0, 400 do
        local f = io.open(path .. "." .. pid .. "-" .. seq .. ".tmp", "rb")
        if f then
          f:close()
          return true
        end
      end
    end
    math.randomseed(42)
    local last, caught, stale = wall - 10, 0, 0
    for round = 1, 8 do
      local proc, out = start("loop")
      if round % 2 == 0 then
        -- a snapshot of this run first (on a loaded machine the first
        -- write of this big section can outlast the sleep, and then no
        -- round would ever land one), then any moment
        local before, deadline = read(path), os.time() + 20
        while read(path) == before and os.time() <= deadline do env.sleep(0.02) end
        env.sleep(0.05 + math.random() * 0.5)
      else
        -- the moment a snapshot is being written
        local deadline, seen = os.time() + 20, nil
        while not seen and os.time() <= deadline do seen = writing(proc.pid) end
        if seen then caught = caught + 1 end
      end
      assert.equal(0, ffi.C.kill(proc.pid, 9))
      env.wait_until(function() return proc:reap() end, "the crawl to die", nil, 10)
      assert.equal("signal 9", proc.status)
      if writing(proc.pid) then stale = stale + 1 end -- swept by the next run
      local text = read(path)
      local sections, why = state.read(path)
      assert(sections, "round " .. round .. ": " .. tostring(why))
      local saved_at = cjson.decode(text).saved_at
      -- the seeded file, or one of ours (with the three farm proxies too)
      assert.equal(saved_at == wall - 10 and 30000 or 30003, #sections.default.proxies, "round " .. round)
      assert.is_true(saved_at >= last, "round " .. round .. ": an older snapshot came back")
      last = saved_at
      assert.falsy((read(out) or ""):find("starting cold", 1, true), "round " .. round)
    end
    assert.is_true(last > wall - 10, "no snapshot was ever written")
    assert.is_true(caught > 0, "no kill landed during a write")
    -- a clean run saves at exit and sweeps the temp files of killed writers
    local proc = start("once")
    env.wait_until(function() return proc:reap() end, "the crawl to end", nil, 60)
    assert.equal("exit 0", proc.status)
    local p = io.popen("ls -a '" .. dir .. "'")
    local listing = p:read("*a")
    p:close()
    assert.falsy(listing:find("killed.json.", 1, true), listing)
    assert(state.read(path))
  end)
end)
