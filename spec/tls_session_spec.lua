-- TLS sessions shared across a pool's connections (DESIGN.md section 10):
-- real libcurl through the farm's SOCKS5 proxies to a real nginx, which logs
-- $ssl_session_reused for every request. nginx keeps its default: no
-- session cache, so only a session ticket can resume (TLS 1.2).
local env = require("support.env")
local scatter = require("scatter")

describe("TLS sessions", function()
  local ng, farm

  setup(function()
    ng = env.nginx()
    farm = env.farm({ "good count=16" })
  end)

  teardown(function()
    scatter.close_all()
    env.cleanup()
  end)

  -- One GET, then `n` at once, through a fresh pool of the 16 proxies:
  -- the ramp-up of a crawl. Returns the new TLS connections nginx saw for
  -- the `n` and how many of them resumed a session.
  local function run(tag, n, sharing)
    local pool = scatter.pool{ proxies = farm.by_profile.good, ca_file = ng.ca, metrics_log_interval = 0,
                               max_concurrent_per_request = 1, tls_session_sharing = sharing }
    local function get(i)
      local resp, err = pool:get(ng.tls_url("anything.test", "/small.txt?" .. tag .. i), { timeout = 10 })
      assert.is_nil(err)
      assert.equal(ng.small_text, resp.body)
    end
    scatter.run(function()
      get(0)
      local ths = {}
      for i = 1, n do ths[i] = scatter.spawn(get, i) end
      scatter.wait_all(unpack(ths))
    end)
    pool:close()
    local function mine(e) return e.uri:find("?" .. tag, 1, true) and not e.uri:find("?" .. tag .. "0", 1, true) end
    env.wait_until(function()
      local count = 0
      for _, e in ipairs(ng.access_lines()) do if mine(e) then count = count + 1 end end
      return count >= n
    end, "the access log")
    local conns, resumed = 0, 0
    for _, e in ipairs(ng.access_lines()) do
      if mine(e) and e.conn_requests == 1 then
        conns = conns + 1
        if e.tls_reused == "r" then resumed = resumed + 1 end
      end
    end
    return conns, resumed
  end

  local on_share

  it("resumes the session of the first connection through every proxy", function()
    local conns, resumed = run("on", 16, true)
    assert.is_true(conns >= 10, conns) -- new connections through most proxies
    assert.is_true(resumed >= 0.8 * conns, resumed .. " of " .. conns .. " resumed")
    on_share = resumed / conns
  end)

  it("keeps sessions per connection handle with tls_session_sharing = false", function()
    local conns, resumed = run("off", 16, false)
    assert.is_true(conns >= 10, conns)
    -- only handles that made an earlier connection hold a session: how many
    -- of the 16 reuse one depends on how fast the first ones end (a
    -- sanitizer build is slower), but fresh handles always make full
    -- handshakes, so fewer resume than with the pool's shared cache
    assert.is_true(resumed < conns, resumed .. " of " .. conns .. " resumed")
    if on_share then assert.is_true(resumed / conns < on_share, resumed .. " of " .. conns .. " resumed") end
  end)
end)
