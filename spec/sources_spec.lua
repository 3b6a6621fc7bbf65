-- Proxy sources: fetched directly without blocking pool creation, shared
-- between pools, refreshed, retired and revived, bad sources skipped, and
-- a probe for a dead proxy that is listed again. Lists are served by nginx
-- from files the specs rewrite; the proxies are the farm's.
local env = require("support.env")
local scatter = require("scatter")
local sources = require("scatter.sources")
local log = require("scatter.log")

local function write(path, text)
  local tmp = path .. ".new"
  local f = assert(io.open(tmp, "wb"))
  f:write(text)
  f:close()
  assert(os.rename(tmp, path)) -- nginx never serves half a file
end

-- Polls cond() from inside scatter (the loop keeps running) until it is
-- true; raises after `timeout` seconds with `what`.
local function eventually(cond, what, timeout)
  local deadline = scatter.now() + (timeout or 20)
  while not cond() do
    if scatter.now() > deadline then error("timed out waiting for " .. what, 2) end
    scatter.sleep(0.05)
  end
end

local function by_key(pool)
  local out = {}
  for _, p in ipairs(pool:proxies()) do out[p.key] = p end
  return out
end

describe("proxy sources", function()
  local ng, farm, logged, sink, timeout

  setup(function()
    ng = env.nginx()
    farm = env.farm({
      "good count=4",   -- 1..4
      "blackhole",      -- 5: a source that never answers
      "refuse",         -- 6: dies, then comes back (profile good)
      "slow latency=0.4", -- 7
    })
    sink, timeout = log.sink, sources.FETCH_TIMEOUT
  end)

  teardown(function()
    log.sink, sources.FETCH_TIMEOUT = sink, timeout
    scatter.close_all()
    env.cleanup()
  end)

  before_each(function()
    logged = {}
    log.sink = function(line) logged[#logged + 1] = line end
    sources.forget()
  end)

  after_each(function()
    log.sink = sink
    scatter.close_all()
  end)

  local function warnings(pattern)
    local n = 0
    for _, line in ipairs(logged) do
      if line:find("WARN", 1, true) and line:find(pattern, 1, true) then n = n + 1 end
    end
    return n
  end

  local slow_url = function() return "http://" .. farm.proxies[5] .. "/list.txt" end

  it("creates the pool at once and holds the first dispatch until the initial fetch ends", function()
    sources.FETCH_TIMEOUT = 5
    write(ng.root .. "/hold.txt", farm.proxies[1] .. "\n")
    local pool = scatter.pool({
      sources = { ng.url("/hold.txt"), slow_url() }, proxies = { farm.proxies[2] },
      metrics_log_interval = 0,
    })
    -- nothing fetched yet: creation did not wait for either source, and
    -- the fetches are no threads that would keep scatter.run waiting
    assert.equal(1, pool:metrics().total_proxies)
    assert.equal(0, require("scatter.runtime").live())
    scatter.run(function()
      local h = pool:submit({ url = ng.url("/small.txt") })
      scatter.sleep(0.3)
      local m = pool:metrics()
      assert.equal(0, m.attempts_started) -- held: the slow source is not in
      assert.equal(1, m.pending_tasks)
      local resp, err = h:wait(60)
      assert(resp, err)
      assert.equal(ng.small_text, resp.body)
    end)
    assert.equal(2, pool:metrics().total_proxies)
    assert.equal(1, warnings("source 2 skipped: " .. slow_url() .. ": timeout"))
  end)

  it("fetches a source once for pools that open together, and reuses a fresh list", function()
    write(ng.root .. "/shared.txt", farm.proxies[1] .. "\n" .. farm.proxies[2] .. "\n")
    local url = ng.url("/shared.txt")
    local function fetches()
      local n = 0
      for _, e in ipairs(ng.access_lines()) do
        if e.uri == "/shared.txt" then n = n + 1 end
      end
      return n
    end
    local a = scatter.pool({ name = "a.test", sources = { url }, metrics_log_interval = 0 })
    local b = scatter.pool({ name = "b.test", sources = { url }, metrics_log_interval = 0 })
    scatter.run(function()
      eventually(function()
        return a:metrics().total_proxies == 2 and b:metrics().total_proxies == 2
      end, "both pools to get the list")
      -- concurrent loads share one fetch; max_age reuses it
      local ths = {}
      for i = 1, 4 do ths[i] = scatter.spawn(sources.load, url) end
      scatter.wait_all(unpack(ths))
      assert(sources.load(url, { max_age = 60 }))
    end)
    env.wait_until(function() return fetches() == 2 end, "nginx to log the fetches", nil, 10)
    scatter.sleep(0.2)
    assert.equal(2, fetches()) -- one for the two pools, one for the four loads
  end)

  it("merges duplicates and warns once per fetch about bad lines", function()
    write(ng.root .. "/dups.txt", table.concat({
      "# comment", farm.proxies[1], "socks5h://" .. farm.proxies[1], " " .. farm.proxies[2] .. " \r",
      "not a proxy", "ftp://1.2.3.4:8080", "",
    }, "\n"))
    local pool = scatter.pool({ sources = { ng.url("/dups.txt") }, metrics_log_interval = 0 })
    scatter.run(function()
      eventually(function() return pool:metrics().total_proxies == 2 end, "the list")
    end)
    assert.equal(1, warnings('skipped 2 bad line(s), first: "not a proxy"'))
  end)

  it("skips a source that answers 404, garbage or too slowly, and a failed refresh keeps the list", function()
    sources.FETCH_TIMEOUT = 1
    write(ng.root .. "/keep.txt", farm.proxies[1] .. "\n" .. farm.proxies[2] .. "\n")
    write(ng.root .. "/garbage.html", "<html>\n<body>Attention Required</body>\n</html>\n")
    local pool = scatter.pool({
      sources = { ng.url("/keep.txt"), ng.url("/missing.txt"), ng.url("/garbage.html"), slow_url() },
      source_refresh_interval = 0.2, metrics_log_interval = 0,
    })
    scatter.run(function()
      eventually(function() return pool:metrics().total_proxies == 2 end, "the good list")
      eventually(function() return warnings("source 4 skipped") > 0 end, "the slow source to time out")
      assert.is_true(warnings("source 2 skipped: " .. ng.url("/missing.txt") .. ": HTTP 404") > 0)
      assert.is_true(warnings("source 3 skipped: " .. ng.url("/garbage.html")
        .. ': no proxies in 3 line(s) (not a proxy list?), first: "<html>"') > 0)
      assert.is_true(warnings("source 4 skipped: " .. slow_url() .. ": timeout") > 0)

      -- the good source breaks: its last list stays, nothing is retired
      write(ng.root .. "/keep.txt", "<html>captcha</html>\n")
      eventually(function() return warnings("source 1 skipped") > 0 end, "a garbage refresh")
      assert.is_true(warnings("(keeping its last list)") > 0)
      os.remove(ng.root .. "/keep.txt")
      local before = warnings("HTTP 404 (keeping its last list)")
      eventually(function() return warnings("HTTP 404 (keeping its last list)") > before end,
        "a 404 refresh")
      local m = pool:metrics()
      assert.equal(2, m.total_proxies)
      assert.equal(0, m.retired_proxies)
      local resp, err = pool:get(ng.url("/small.txt"), { timeout = 30 })
      assert(resp, err)
    end)
  end)

  it("picks up added proxies, retires removed ones and revives them when listed again", function()
    local p1, p2, p3 = farm.proxies[1], farm.proxies[2], farm.proxies[3]
    local path = ng.root .. "/members.txt"
    write(path, p1 .. "\n" .. p2 .. "\n")
    local pool = scatter.pool({
      sources = { ng.url("/members.txt") }, source_refresh_interval = 0.2,
      metrics_log_interval = 0, rate_limit = { default_interval = 0 },
    })
    scatter.run(function()
      eventually(function() return pool:metrics().total_proxies == 2 end, "the first list")
      write(path, p2 .. "\n" .. p3 .. "\n")
      eventually(function()
        local k = by_key(pool)
        return k[p3] and not k[p3].retired and k[p1].retired
      end, "p3 added and p1 retired")
      assert.is_false(by_key(pool)[p2].retired)
      assert.equal(1, pool:metrics().retired_proxies)
      local before = by_key(pool)[p1].attempts
      for i = 1, 12 do
        local resp, err = pool:get(ng.url("/small.txt?r=" .. i), { timeout = 30 })
        assert(resp, err)
        assert.are_not.equal(p1, resp.proxy)
      end
      assert.equal(before, by_key(pool)[p1].attempts) -- retired: no attempt at all

      write(path, p1 .. "\n")
      eventually(function()
        local k = by_key(pool)
        return not k[p1].retired and k[p2].retired and k[p3].retired
      end, "p1 revived, p2 and p3 retired")
      local resp, err = pool:get(ng.url("/small.txt?back"), { timeout = 30 })
      assert(resp, err)
      assert.equal(p1, resp.proxy)
    end)
  end)

  it("gives a dead proxy that is listed again one probe after cooldown_max", function()
    local dead, slow = farm.proxies[6], farm.proxies[7]
    write(ng.root .. "/probe.txt", dead .. "\n" .. slow .. "\n")
    local pool = scatter.pool({
      sources = { ng.url("/probe.txt") }, source_refresh_interval = 0.2,
      eviction_min_samples = 2, cooldown_base = 0, cooldown_max = 0.5,
      cooldown_consecutive_fails = 100, rate_limit = { default_interval = 0 },
      metrics_log_interval = 0,
    })
    scatter.run(function()
      eventually(function() return pool:metrics().total_proxies == 2 end, "the list")
      local i = 0
      while pool:metrics().dead_proxies == 0 do
        i = i + 1
        local resp, err = pool:get(ng.url("/small.txt?d=" .. i), { timeout = 30 })
        assert(resp, err)
        assert(i < 50, "the refusing proxy was never evicted")
      end
      assert.is_true(by_key(pool)[dead].dead)
      assert.equal("OK profile 5 good listening", farm.control("profile 5 good"))
      -- still listed: after cooldown_max a refresh arms the probe, and the
      -- probe (faster than the slow proxy) wins a race
      local via
      for j = 1, 60 do
        local resp, err = pool:get(ng.url("/small.txt?p=" .. j), { timeout = 30 })
        assert(resp, err)
        if resp.proxy == dead then via = j break end
        scatter.sleep(0.1)
      end
      assert.truthy(via, "the revived proxy never served a request")
      assert.is_false(by_key(pool)[dead].dead)
      assert.equal(0, pool:metrics().dead_proxies)
    end)
    local probes = 0
    for _, line in ipairs(logged) do
      if line:find("dead proxies listed again get a probe", 1, true) then probes = probes + 1 end
    end
    assert.is_true(probes >= 1)
  end)
end)
