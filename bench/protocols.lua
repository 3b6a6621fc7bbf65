-- protocols: the same requests through each proxy protocol of the farm
-- (profile `good`, 10 proxies per protocol), a scatter pool with K = 1 and
-- rate limit off; wall time and the ratio to SOCKS5h, all in one run,
-- interleaved REPEAT times. Targets are plain http (absolute-form through
-- the HTTP proxies: the farm forwards with "Connection: close", one TCP
-- connection to the proxy per request) and, with PROTO_TLS=1, https
-- (CONNECT for the HTTP proxies, kept-alive tunnels everywhere).
--
--   luajit bench/protocols.lua [requests] [inflight] [repeat]
local B = dofile("bench/lib.lua")
local env = B.env
local scatter = require("scatter")

local N = tonumber(arg[1]) or 20000
local INFLIGHT = tonumber(arg[2]) or 100
local REPEAT = tonumber(arg[3]) or 2
local TLS = os.getenv("PROTO_TLS") == "1"

B.banner(string.format("protocols: %d %s GETs, %d in flight, best of %d", N, TLS and "https" or "http",
  INFLIGHT, REPEAT))

local web = env.nginx()
local lines = {}
for _, p in ipairs({ "socks5", "socks4", "http", "https" }) do lines[#lines + 1] = "good count=10 proto=" .. p end
local farm = env.farm(lines)

local by = {}
for i, e in ipairs(farm.entries) do
  by[e.proto] = by[e.proto] or {}
  table.insert(by[e.proto], farm.proxies[i])
end
local function with_scheme(list, scheme)
  local out = {}
  for i, p in ipairs(list) do out[i] = scheme .. "://" .. p:gsub("^%a[%w]*://", "") end
  return out
end

local SETS = {
  { name = "socks5h", proxies = with_scheme(by.socks5, "socks5h") },
  { name = "socks5", proxies = with_scheme(by.socks5, "socks5"), extra = { prefer_remote_dns = false } },
  { name = "socks4", proxies = by.socks4, extra = { prefer_remote_dns = false } },
  { name = "socks4a", proxies = with_scheme(by.socks4, "socks4a") },
  { name = "http", proxies = by.http },
  { name = "https", proxies = by.https },
}

local function url(i)
  if TLS then return web:tls_url("127.0.0.1", "/small.txt?i=" .. i) end
  return web:url("/small.txt?i=" .. i)
end

local function run(set)
  local cfg = {
    proxies = set.proxies, max_concurrent_per_request = 1, max_inflight = INFLIGHT,
    rate_limit = { default_interval = 0 }, proxy_timeout = 30, metrics_log_interval = 0,
    ca_file = web.ca, proxy_ca_file = web.ca,
  }
  for k, v in pairs(set.extra or {}) do cfg[k] = v end
  local pool = scatter.pool(cfg)
  local ok
  local t0 = B.now()
  scatter.run(function()
    ok = B.drive(scatter, INFLIGHT, N, function(i) return pool:get(url(i), { timeout = 60 }) end)
  end)
  local wall = B.now() - t0
  local attempts = pool:metrics().attempts_started
  pool:close()
  if ok ~= N then error(set.name .. ": " .. ok .. " of " .. N .. " answered 200", 0) end
  return wall, attempts
end

local walls, att = {}, {}
for _ = 1, REPEAT do
  for _, set in ipairs(SETS) do
    walls[set.name] = walls[set.name] or {}
    local w, a = run(set)
    table.insert(walls[set.name], w)
    att[set.name] = a
    collectgarbage()
  end
end

local base = (B.range(walls.socks5h))
local rows = { { "protocol", "best wall s", "range s", "req/s", "attempts/task", "vs socks5h" } }
for _, set in ipairs(SETS) do
  local lo, hi = B.range(walls[set.name])
  rows[#rows + 1] = { set.name, string.format("%.3f", lo), string.format("%.3f-%.3f", lo, hi),
    string.format("%.0f", N / lo), string.format("%.3f", att[set.name] / N), string.format("%.2fx", lo / base) }
end
B.table(rows)
env.cleanup()
