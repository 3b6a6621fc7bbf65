-- Security properties: no local DNS with socks5h, TLS verified by default,
-- never a direct connection to a target, credentials never shown.
local env = require("support.env")
local scatter = require("scatter")

local q = env.shell_quote

local function slurp(path) return env.read_file(path) or "" end

describe("security", function()
  local ng, farm, dir

  setup(function()
    ng = env.nginx()
    farm = env.farm({ "good", "refuse", "blackhole", "handshake_fail", "good user=bob pass=hunter2" })
    dir = env.tmpdir()
  end)

  teardown(function()
    scatter.close_all()
    env.cleanup()
  end)

  -- Runs a script under the CLI with the resolver spy preloaded; returns
  -- the exit code and the names the process asked the local resolver for.
  local function with_spy(name, code)
    local script = dir .. "/" .. name .. ".lua"
    local f = assert(io.open(script, "w"))
    f:write(code)
    f:close()
    local log = dir .. "/" .. name .. ".resolver"
    local spy = env.build_dir() .. "/spec/support/libresolvespy.so"
    local preload = ((env.asan_preload or "") .. " " .. spy):gsub("^ ", "")
    local cmd = string.format("SCATTER_RESOLVESPY_LOG=%s LD_PRELOAD=%s %s run %s %s %s >%s 2>&1; echo $?",
      q(log), q(preload), q(env.build_dir() .. "/scatter"), q(script), q(farm.proxies[1]), q(ng.port),
      q(dir .. "/" .. name .. ".out"))
    local p = io.popen(cmd)
    local rc = tonumber(p:read("*a"):match("(%d+)"))
    p:close()
    return rc, slurp(log), slurp(dir .. "/" .. name .. ".out")
  end

  it("never asks the local resolver for a target name with socks5h", function()
    local rc, names, out = with_spy("remote", [[
      local scatter = require("scatter")
      local proxy, port = ...
      local pool = scatter.pool({ proxies = { proxy }, metrics_log_interval = 0 })
      local resp, err = pool:get("http://secret-name.test:" .. port .. "/small.txt", { timeout = 10 })
      assert(resp and resp.status == 200, err)
    ]])
    assert.equal(0, rc, out)
    assert.falsy(names:find("secret-name", 1, true), "the local resolver was asked: " .. names)
  end)

  it("does ask it with prefer_remote_dns = false (the spy works)", function()
    local rc, names, out = with_spy("local", [[
      local scatter = require("scatter")
      local proxy, port = ...
      local pool = scatter.pool({ proxies = { proxy }, prefer_remote_dns = false, metrics_log_interval = 0 })
      local _, err = pool:get("http://local-name.test:" .. port .. "/small.txt", { timeout = 1 })
      assert(err)
    ]])
    assert.equal(0, rc, out)
    assert.truthy(names:find("local-name.test", 1, true), "the spy saw: " .. names)
  end)

  it("verifies TLS by default: a certificate from an unknown CA fails", function()
    local pool = scatter.pool({ proxies = { farm.proxies[1] }, metrics_log_interval = 0 })
    local _, err = pool:get(ng.tls_url("anything.test", "/small.txt"), { timeout = 1 })
    assert.truthy(err:match("^timeout: last error: tls_error: "), err)
    pool:close()
  end)

  it("never connects to the target directly, even with every proxy dead", function()
    local before = #ng.access_lines()
    local pool = scatter.pool({ proxies = { farm.proxies[2], farm.proxies[3], farm.proxies[4] },
      proxy_timeout = 0.5, metrics_log_interval = 0 })
    local _, err = pool:get(ng.url("/small.txt?direct-check"), { timeout = 1.5 })
    assert.truthy(err:match("^timeout"), err)
    pool:close()
    env.sleep(0.2)
    for _, l in ipairs(ng.access_lines()) do
      assert.falsy(l.uri:find("direct-check", 1, true), "the target saw a request")
    end
    assert.equal(before, #ng.access_lines())
  end)

  it("never shows proxy credentials in responses, errors, metrics or logs", function()
    local lines = {}
    local log = require("scatter.log")
    local sink = log.sink
    log.sink = function(l) lines[#lines + 1] = l end
    local addr = farm.proxies[5]
    local pool = scatter.pool({ proxies = { "bob:hunter2@" .. addr }, metrics_log_interval = 0.05 })
    local resp = assert(pool:get(ng.url("/small.txt"), { timeout = 10 }))
    assert.equal("***@" .. addr, resp.proxy)
    scatter.sleep(0.1)
    local bad = scatter.pool({ proxies = { "bob:wrong-hunter2@" .. addr }, metrics_log_interval = 0.05 })
    local _, err = bad:get(ng.url("/small.txt"), { timeout = 1 })
    log.sink = sink
    local seen = { err, resp.proxy, require("cjson").encode(pool:metrics()), table.concat(lines, "\n") }
    for _, p in ipairs(pool:proxies()) do seen[#seen + 1] = p.redacted end
    for _, s in ipairs(seen) do
      assert.falsy(s:find("hunter2", 1, true), "credentials leaked in: " .. s)
    end
    assert.is_true(#lines > 0, "no metrics line was logged")
    pool:close()
    bad:close()
  end)
end)
