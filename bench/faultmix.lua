-- faultmix: 1,000 URLs through two farms of misbehaving SOCKS5 proxies,
--   pre-checked  40 proxies: 20% good, 15% slow, 20% blackhole, 20% refused,
--                10% blocking, 5% tampering, 5% flaky, 5% dropping mid-body
--   raw list     100 proxies, 95% dead in every form (refused, blackhole,
--                handshake failure, blocking, tampering, dropping, flaky 90%)
-- for three contenders with the same attempt timeout and concurrency:
--   scatter          defaults (K = 3, adaptive), rate limit off
--   scatter K=1      max_concurrent_per_request = 1 and race = false: one
--                    path at a time, the next proxy only after a failure
--   scatter rounds   defaults with racing = "rounds": the rule before
--                    continuous racing (DESIGN.md section 10), same run
--   crawlee          Crawlee 3 HttpCrawler through a proxy-chain bridge
--                    (bench/crawlee_run.cjs), its default retries
--   crawlee+serve    the same crawler with `scatter serve` (same proxies,
--                    scatter's defaults and the canary classifier) as its
--                    one HTTP proxy: Crawlee's own proxy support, no bridge
-- A delivered task is a 200 whose body holds the page's canary (tampered and
-- cut bodies do not). Printed: completion %, wall time, p50 / p99 task
-- latency (first attempt to delivery), attempts per task, and the wall-time
-- ratio of each contender to scatter.
--
--   luajit bench/faultmix.lua [urls] [repeat]
-- FAULTMIX_TIMEOUT=2 sets the attempt timeout (default 5); FAULTMIX_ONLY=name
-- runs scatter and that contender only; FAULTMIX_FARMS=1 the first farm only.
-- Crawlee is installed by bench/peers.sh (bash bench/run.sh faultmix does it).
local B = dofile("bench/lib.lua")
local env = B.env
local scatter = require("scatter")
local cjson = require("cjson")

local N = tonumber(arg[1]) or 1000
local REPEAT = tonumber(arg[2]) or 1
local CONCURRENCY = 50
local TIMEOUT = tonumber(os.getenv("FAULTMIX_TIMEOUT")) or 5 -- one attempt, seconds
local MARKER = "canary-data-ok"

B.banner(string.format("faultmix: %d URLs, %d in flight, %d s per attempt, %d run(s) each",
  N, CONCURRENCY, TIMEOUT, REPEAT))

local FARMS = {
  { name = "pre-checked", lines = {
    "good count=8", "slow latency=1.5 jitter=1 count=6", "blackhole count=8", "refuse count=8",
    "block count=4", "tamper count=2", "flaky p=0.5 count=2", "drop_mid bytes=512 count=2" } },
  { name = "raw list", lines = {
    "good count=5", "refuse count=30", "blackhole count=25", "handshake_fail count=15", "block count=10",
    "tamper count=5", "drop_mid bytes=512 count=5", "flaky p=0.9 count=5" } },
}

-- 4 KiB page: the canary near the end, so a body cut at 512 bytes lacks it
local page = string.rep("<p>lorem ipsum dolor sit amet</p>\n", 110) .. MARKER .. "\n"
local web = env.nginx({ files = { ["page.html"] = page } })
local dir = env.tmpdir()
local urls = {}
for i = 1, N do urls[i] = web:url("/page.html?i=" .. i) end

local function classify(resp)
  if resp.status == 200 then
    return resp.body:find(MARKER, 1, true) and "success" or "proxy_blocked"
  end
  return scatter.pool and require("scatter.classifier").default(resp)
end

local function scatter_run(proxies, k1, racing)
  local pool = scatter.pool{ racing = racing,
    proxies = proxies, max_concurrent_per_request = k1 and 1 or 3, max_inflight = CONCURRENCY,
    rate_limit = { default_interval = 0 }, proxy_timeout = TIMEOUT, metrics_log_interval = 0,
    classifier = classify,
  }
  local ok, lat
  local t0 = B.now()
  scatter.run(function()
    ok, lat = B.drive(scatter, CONCURRENCY, N, function(i)
      return pool:request{ url = urls[i], timeout = 600, race = not k1 }
    end)
  end)
  local wall = B.now() - t0
  local m = pool:metrics()
  local attempts = m.attempts_started
  io.stderr:write(string.format("    replaced %d, hedged %d, connect deadline %.0f ms (handshake p95 %.0f ms)\n",
    m.attempts_replaced or 0, m.attempts_hedged or 0, m.connect_timeout_ms or -1, m.handshake_p95_ms or -1))
  pool:close()
  return { ok = ok, wall = wall, lat = lat, attempts = attempts }
end

local function crawlee_run(proxies)
  local path = dir .. "/crawlee.json"
  B.write(path, cjson.encode({ urls = urls, proxies = proxies, concurrency = CONCURRENCY,
    timeout = TIMEOUT, marker = MARKER }))
  local ok, out = B.sh("node bench/crawlee_run.cjs " .. path)
  local line = out:match("({\"ok\".-})%s*$")
  if not ok or not line then error("crawlee failed:\n" .. out:sub(-2000), 0) end
  local r = cjson.decode(line)
  return { ok = r.ok, wall = r.wall, lat = r.latencies, attempts = r.attempts }
end

-- scatter serve over the same proxies, for Crawlee to use as its proxy
local function crawlee_serve_run(proxies)
  local plist = {}
  for i, a in ipairs(proxies) do plist[i] = ("%q"):format(a) end
  local cfgf = dir .. "/serve_pool.lua"
  B.write(cfgf, "local M = " .. ("%q"):format(MARKER) .. "\n"
    .. "return { proxies = {" .. table.concat(plist, ",") .. "}, max_inflight = " .. CONCURRENCY * 3
    .. ", rate_limit = { default_interval = 0 }, proxy_timeout = " .. TIMEOUT
    .. ", metrics_log_interval = 0, connect_ports = { " .. web.port .. ", 443 },"
    .. " classifier = function(r) if r.status == 200 then"
    .. " return r.body:find(M, 1, true) and 'success' or 'proxy_blocked' end"
    .. " return r.status >= 500 and 'target_error' or 'proxy_blocked' end }\n")
  local p = env.spawn({ env.build_dir() .. "/scatter", "serve", "--listen", "127.0.0.1:0",
                        "--config", cfgf, "--quiet", "--timeout", "60" }, { name = "serve" })
  local port = env.wait_until(function()
    return tonumber((env.read_file(p.log) or ""):match("listening on http://127%.0%.0%.1:(%d+)"))
  end, "scatter serve", p)
  local path = dir .. "/crawlee_serve.json"
  -- one attempt through serve may race several proxies: serve's timeout
  B.write(path, cjson.encode({ urls = urls, proxies = proxies, concurrency = CONCURRENCY,
    timeout = 60, marker = MARKER, serve = "http://127.0.0.1:" .. port }))
  local ok, out = B.sh("node bench/crawlee_run.cjs " .. path)
  p:stop()
  local line = out:match("({\"ok\".-})%s*$")
  if not ok or not line then error("crawlee+serve failed:\n" .. out:sub(-2000), 0) end
  local r = cjson.decode(line)
  return { ok = r.ok, wall = r.wall, lat = r.latencies, attempts = r.attempts }
end

local CONTENDERS = {
  { name = "scatter", run = function(p) return scatter_run(p, false) end },
  { name = "scatter K=1", run = function(p) return scatter_run(p, true) end },
  { name = "scatter rounds", run = function(p) return scatter_run(p, false, "rounds") end },
  { name = "crawlee", run = crawlee_run },
  { name = "crawlee+serve", run = crawlee_serve_run },
}
local only = os.getenv("FAULTMIX_ONLY")

local rows = { { "pool", "contender", "done %", "wall s (range)", "p50 ms", "p99 ms", "attempts/task", "wall vs scatter" } }
local notes = {}
for fi, fm in ipairs(FARMS) do
  if fi > (tonumber(os.getenv("FAULTMIX_FARMS")) or #FARMS) then break end
  local farm = env.farm(fm.lines, { seed = 7 })
  local res = {}
  for _ = 1, REPEAT do
    for _, c in ipairs(CONTENDERS) do
      if not only or c.name == only or c.name == "scatter" then
        res[c.name] = res[c.name] or {}
        table.insert(res[c.name], c.run(farm.proxies))
        io.stderr:write(string.format("  %s / %s: %.1f s\n", fm.name, c.name, res[c.name][#res[c.name]].wall))
      end
    end
  end
  local function best(name)
    local b
    for _, r in ipairs(res[name]) do if not b or r.wall < b.wall then b = r end end
    return b
  end
  local sb = best("scatter")
  for _, c in ipairs(CONTENDERS) do
    if res[c.name] then
      local walls = {}
      for i, r in ipairs(res[c.name]) do walls[i] = r.wall end
      local lo, hi = B.range(walls)
      local b = best(c.name)
      rows[#rows + 1] = { fm.name, c.name, string.format("%.1f", 100 * b.ok / N),
        string.format("%.1f (%.1f-%.1f)", b.wall, lo, hi),
        string.format("%.0f", 1000 * B.quantile(b.lat, 0.5)), string.format("%.0f", 1000 * B.quantile(b.lat, 0.99)),
        string.format("%.2f", b.attempts / N), string.format("%.2fx", b.wall / sb.wall) }
    end
  end
  if res.crawlee and res["crawlee+serve"] then
    local cs = best("crawlee+serve")
    notes[#notes + 1] = string.format("%s: Crawlee through scatter serve delivered %.1f%%, %.1fx faster than Crawlee through proxy-chain",
      fm.name, 100 * cs.ok / N, best("crawlee").wall / cs.wall)
  end
  if res.crawlee then
    notes[#notes + 1] = string.format("%s: scatter delivered %.1f%%, %.1fx faster than Crawlee (%.1f%% delivered)",
      fm.name, 100 * sb.ok / N, best("crawlee").wall / sb.wall, 100 * best("crawlee").ok / N)
  end
  farm:stop()
end
B.table(rows)
for _, s in ipairs(notes) do print(s) end
print("targets (pre-checked): scatter 100% delivered and >= 10x faster than Crawlee;"
  .. " Crawlee through scatter serve 100% and >= 10x faster than through proxy-chain")
env.cleanup()
