-- `scatter stats STATE.json`: per-host proxy health from a state file, as
-- tables and as JSON; a snapshot written by a real pool; bad files.
local env = require("support.env")
local cjson = require("cjson")
local scatter = require("scatter")

local q = env.shell_quote


local write = env.write_file

-- A snapshot in the layout of lua/scatter/state.lua, saved at t = 1e6.
local SNAPSHOT = {
  format = "scatter-state", version = 1, saved_at = 1000000,
  proxy_fields = { "key", "attempts", "successes", "dead_since" },
  pair_fields = {
    "proxy", "outcomes", "successes", "consecutive_fails", "last_success",
    "cooldown_until", "latency_ewma", "latency_p50", "latency_p95",
  },
  pools = {
    main = {
      proxies = {
        { "10.0.0.1:1080", 30, 30, -1 },
        { "bob:hunter2@10.0.0.2:1080", 10, 9, -1 },
        { "10.0.0.3:1080", 5, 0, -1 },
        { "10.0.0.4:1080", 30, 0, 999000 },
        { "10.0.0.5:1080", 0, 0, -1 },
      },
      hosts = {
        ["x.test"] = {
          { 4, 30, 0, 30, -1, 0, -1, -1, -1 },
          { 3, 5, 0, 5, -1, 1000030, -1, -1, -1 },
          { 2, 10, 9, 0, 999900, 0, 0.2, 0.15, 0.4 },
          { 1, 30, 30, 0, 999990, 0, 0.05, 0.042, 0.12 },
        },
        ["y.test"] = { { 1, 3, 2, 1, 999999.5, 0, 0.01, 0.0123, 0.02 } },
      },
      sources = {},
    },
    idle = { proxies = { { "10.0.0.9:1080", 0, 0, -1 } }, hosts = {}, sources = {} },
  },
}

describe("scatter stats", function()
  local dir

  setup(function() dir = env.tmpdir() end)
  teardown(function()
    scatter.close_all()
    env.cleanup()
  end)

  local function stats(args) return env.cli("stats " .. args) end

  local function snapshot_file()
    local path = dir .. "/state.json"
    write(path, cjson.encode(SNAPSHOT))
    return path
  end

  it("shows each pool's hosts with their proxies by health, best first", function()
    local rc, out, err = stats(q(snapshot_file()))
    assert.equal(0, rc, err)
    local x = assert(out:match("(%[main%] x%.test:.-)\n\n"), out)
    assert.truthy(out:find("[main] x.test: 2 healthy, 0 failing, 1 cooldown, 1 dead, 1 untested\n", 1, true), out)
    assert.truthy(out:find("[main] y.test: 1 healthy, 0 failing, 0 cooldown, 0 dead, 4 untested\n", 1, true), out)
    assert.truthy(out:find("[idle] no host has been tried yet", 1, true), out)
    local rows = {}
    for line in x:gmatch("[^\n]+") do
      if line:match("^%S+%s+%a+%s+") and not line:match("^PROXY") and not line:match("^%[") then
        local cols = {}
        for c in line:gmatch("%S+") do cols[#cols + 1] = c end
        rows[#rows + 1] = cols
      end
    end
    assert.equal(4, #rows, x)
    -- PROXY STATE SUCCESS SAMPLES P50 ms P95 ms FAILS COOLDOWN LAST OK
    assert.same({ "10.0.0.1:1080", "healthy", "100%", "30", "42", "ms", "120", "ms", "0", "-", "10s", "ago" }, rows[1])
    assert.same({ "***@10.0.0.2:1080", "healthy", "90%", "10", "150", "ms", "400", "ms", "0", "-", "100s", "ago" },
      rows[2])
    assert.same({ "10.0.0.3:1080", "cooldown", "0%", "5", "-", "-", "5", "30s", "never" }, rows[3])
    assert.same({ "10.0.0.4:1080", "dead", "0%", "30", "-", "-", "30", "-", "never" }, rows[4])
    assert.is_nil(out:find("hunter2", 1, true))
  end)

  it("writes JSON with --json and filters with --pool, --host and --top", function()
    local rc, out, err = stats(q(snapshot_file()) .. " --json --pool main --host X.test --top 3")
    assert.equal(0, rc, err)
    local doc = cjson.decode(out)
    assert.equal(1000000, doc.saved_at)
    assert.equal(1, #doc.pools)
    assert.equal("main", doc.pools[1].name)
    local h = doc.pools[1].hosts
    assert.equal(1, #h)
    assert.same({ "x.test", 2, 1, 1, 1, 1 }, { h[1].host, h[1].healthy, h[1].cooldown, h[1].dead, h[1].untried,
      h[1].untested })
    assert.equal(3, #h[1].proxies)
    local b = h[1].proxies[2]
    assert.same({ "***@10.0.0.2:1080", "healthy", 0.9, 10, 150, 400, 100 },
      { b.proxy, b.state, b.success_rate, b.outcomes, b.p50_ms, b.p95_ms, b.last_success_ago })
    assert.equal(30, h[1].proxies[3].cooldown_left)
    assert.is_nil(out:find("hunter2", 1, true))

    rc, out = stats(q(snapshot_file()) .. " --json --pool idle")
    assert.equal(0, rc)
    assert.truthy(out:find('"hosts":[]', 1, true), out)
  end)

  it("reads the snapshot a real pool writes", function()
    local ng = env.nginx()
    -- slow good proxies: every refusal lands before a winner could cancel it
    local farm = env.farm({ "slow latency=0.2 user=eve pass=pa55word", "slow latency=0.2", "refuse" })
    local path = dir .. "/real.json"
    local pool = scatter.pool({
      name = "real", state_file = path, metrics_log_interval = 0, rate_limit = { default_interval = 0 },
      proxies = { "eve:pa55word@" .. farm.proxies[1], farm.proxies[2], farm.proxies[3] },
      cooldown_consecutive_fails = 2, cooldown_base = 600, cooldown_max = 600, eviction_min_samples = 1000,
    })
    local m
    for _ = 1, 60 do
      assert(pool:get(ng.url("/small.txt"), { timeout = 30 }))
      m = pool:metrics()
      if m.cooldown_proxies == 1 then break end
    end
    assert.equal(1, m.cooldown_proxies)
    pool:close()
    local rc, out, err = stats(q(path) .. " --json")
    assert.equal(0, rc, err)
    local doc = cjson.decode(out)
    assert.equal("real", doc.pools[1].name)
    local h = doc.pools[1].hosts[1]
    assert.equal("127.0.0.1", h.host)
    assert.equal(1, h.cooldown)
    assert.equal(0, h.dead)
    assert.equal(3, h.healthy + h.cooldown + h.dead + h.untried)
    local by = {}
    for _, p in ipairs(h.proxies) do by[p.proxy] = p end
    assert.equal("cooldown", by[farm.proxies[3]].state)
    assert.is_true(by[farm.proxies[3]].cooldown_left > 500)
    assert.is_nil(out:find("pa55word", 1, true))
    rc, out = stats(q(path))
    assert.equal(0, rc)
    assert.truthy(out:find(farm.proxies[3] .. "%s+cooldown%s+0%%"), out)
  end)

  it("fails with exit 1 on a missing, broken or foreign file, 2 on a bad command line", function()
    local rc, _, err = stats(q(dir .. "/nope.json"))
    assert.equal(1, rc)
    assert.truthy(err:find("nope.json", 1, true), err)
    write(dir .. "/trunc.json", cjson.encode(SNAPSHOT):sub(1, 100))
    rc, _, err = stats(q(dir .. "/trunc.json"))
    assert.equal(1, rc)
    assert.truthy(err:find("not JSON", 1, true), err)
    write(dir .. "/foreign.json", '{"hello":"world"}')
    rc, _, err = stats(q(dir .. "/foreign.json"))
    assert.equal(1, rc)
    assert.truthy(err:find("not a scatter state file", 1, true), err)
    for _, args in ipairs({ "", "a.json b.json", q(snapshot_file()) .. " --top 0", q(snapshot_file()) .. " --x" }) do
      local code, _, e = stats(args)
      assert.equal(2, code, args)
      assert.truthy(e:find("usage: scatter stats", 1, true), e)
    end
  end)
end)
