-- tls: HTTPS through 16 SOCKS5 proxies (the farm's `good`) to nginx, with
-- the pool's TLS session sharing on and off (tls_session_sharing), in one
-- run, interleaved. Every request asks `Connection: close`, so each one is a
-- new TLS connection through its proxy: the case sharing is for (a crawl
-- over thousands of proxies rarely reuses a connection). Printed: new TLS
-- connections nginx saw and the share resumed ($ssl_session_reused), wall
-- time, and CPU per request of scatter's process and of nginx, with the
-- ratio on/off.
--
--   luajit bench/tls.lua [requests] [inflight] [repeat]     # 2000 32 2
local B = dofile("bench/lib.lua")
local env = B.env
local scatter = require("scatter")

local N = tonumber(arg[1]) or 2000
local INFLIGHT = tonumber(arg[2]) or 32
local REPEAT = tonumber(arg[3]) or 2

B.banner(string.format("tls: %d HTTPS requests, each a new connection, %d in flight, 16 proxies, %d run(s) each",
  N, INFLIGHT, REPEAT))

local web = env.nginx()
local farm = env.farm({ "good count=16" })

-- CPU seconds (user + system) of a process, from /proc
local function cpu_of(pid)
  local f = assert(io.open("/proc/" .. pid .. "/stat"))
  local s = f:read("*a")
  f:close()
  local fields = {}
  for x in s:match("%) (.*)"):gmatch("%S+") do fields[#fields + 1] = x end
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100 -- utime, stime in ticks (USER_HZ 100)
end

local function run(tag, sharing)
  local pool = scatter.pool{ proxies = farm.by_profile.good, ca_file = web.ca, metrics_log_interval = 0,
    max_concurrent_per_request = 1, max_inflight = INFLIGHT, rate_limit = { default_interval = 0 },
    tls_session_sharing = sharing }
  local c0, n0, t0 = os.clock(), cpu_of(web.pid), B.now()
  local ok
  scatter.run(function()
    ok = B.drive(scatter, INFLIGHT, N, function(i)
      return pool:get(web.tls_url("anything.test", "/small.txt?" .. tag .. "-" .. i),
        { timeout = 30, headers = { connection = "close" } })
    end)
  end)
  local wall, cpu, ncpu = B.now() - t0, os.clock() - c0, cpu_of(web.pid) - n0
  pool:close()
  assert(ok == N, tag .. ": " .. ok .. " of " .. N .. " answered")
  local conns, resumed = 0, 0
  env.wait_until(function()
    conns, resumed = 0, 0
    for _, e in ipairs(web.access_lines()) do
      if e.uri:find("?" .. tag .. "-", 1, true) and e.conn_requests == 1 then
        conns = conns + 1
        if e.tls_reused == "r" then resumed = resumed + 1 end
      end
    end
    return conns >= N
  end, "the access log")
  return { wall = wall, cpu = cpu, ncpu = ncpu, conns = conns, resumed = resumed }
end

local res = { on = {}, off = {} }
for r = 1, REPEAT do
  for _, mode in ipairs{ "off", "on" } do
    local x = run(mode .. r, mode == "on")
    table.insert(res[mode], x)
    io.stderr:write(string.format("  %s: %.2f s, %d of %d resumed\n", mode, x.wall, x.resumed, x.conns))
  end
end

local rows = { { "sharing", "resumed (range)", "wall s (range)", "scatter CPU us/req (range)",
                 "nginx CPU us/req (range)" } }
local best = {}
for _, mode in ipairs{ "off", "on" } do
  local share, wall, cpu, ncpu = {}, {}, {}, {}
  for i, x in ipairs(res[mode]) do
    share[i] = 100 * x.resumed / x.conns
    wall[i], cpu[i], ncpu[i] = x.wall, 1e6 * x.cpu / N, 1e6 * x.ncpu / N
  end
  local function cell(xs, fmt)
    local lo, hi = B.range(xs)
    return string.format(fmt .. " (" .. fmt .. "-" .. fmt .. ")", lo, lo, hi)
  end
  best[mode] = { cpu = (B.range(cpu)), ncpu = (B.range(ncpu)) }
  rows[#rows + 1] = { mode, cell(share, "%.0f%%"), cell(wall, "%.2f"), cell(cpu, "%.0f"), cell(ncpu, "%.0f") }
end
B.table(rows)
print(string.format("CPU per request, on/off (best runs): scatter %.2fx, nginx %.2fx",
  best.on.cpu / best.off.cpu, best.on.ncpu / best.off.ncpu))
print("targets: >= 80% of new TLS connections resumed; CPU per HTTPS request <= 0.7x")
env.cleanup()
