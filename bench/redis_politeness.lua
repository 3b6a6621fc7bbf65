-- fleet-wide politeness (DESIGN.md section 9): 3 workers (`scatter run
-- spec/support/share_worker.lua`) send GETs to one nginx through the same
-- 6 SOCKS5 proxies, rate_limit.default_interval = IV; each proxy binds its
-- own source address (microsocks -b 127.0.0.N), so nginx's access log
-- shows every proxy's requests. Measured: the smallest gap between two
-- requests through one proxy to the host, from nginx's side, with share
-- (target >= 0.9 x IV) and, for contrast, the same pools without share.
--   luajit bench/redis_politeness.lua [REQUESTS_PER_WORKER] [IV]   (60, 0.25)
local lib = dofile("bench/lib.lua")
local env = lib.env
local RS = require("support.redis")

local N, IV = tonumber(arg[1] or "60"), tonumber(arg[2] or "0.25")
local srv = RS.start()
local ng = env.nginx()
local proxies = {}
for i = 1, 6 do
  local port = env.free_port()
  local p = env.spawn({ "/usr/bin/microsocks", "-i", "127.0.0.1", "-p", port, "-b", "127.0.0." .. (i + 1) },
    { name = "microsocks" })
  env.wait_port(port, p)
  proxies[i] = "socks5h://127.0.0.1:" .. port
end

local function run(tag, share)
  local t0 = lib.now()
  local ws = {}
  for i = 1, 3 do
    local argv = { env.build_dir() .. "/scatter", "run", "spec/support/share_worker.lua", srv.url,
      table.concat(proxies, ","), ng.url("/small.txt?run=" .. tag), N, IV }
    if not share then table.insert(argv, 1, "NO_SHARE=1") table.insert(argv, 1, "env") end
    ws[i] = env.spawn(argv, { name = "polite-worker" })
  end
  local ok = 0
  for _, w in ipairs(ws) do
    env.wait_until(function() return not w:alive() end, "a worker", nil, 300)
    ok = ok + tonumber((env.read_file(w.log) or ""):match("ok (%d+)") or 0)
  end
  local secs = lib.now() - t0
  local by, n = {}, 0
  for _, e in ipairs(ng.access_lines()) do
    if e.uri:find("run=" .. tag, 1, true) then
      by[e.addr] = by[e.addr] or {}
      table.insert(by[e.addr], e.msec - e.rt)
      n = n + 1
    end
  end
  local gaps = {}
  for _, ts in pairs(by) do
    table.sort(ts)
    for i = 2, #ts do gaps[#gaps + 1] = ts[i] - ts[i - 1] end
  end
  table.sort(gaps)
  return { tag, tostring(ok), tostring(n), ("%.1f"):format(secs), ("%.3f"):format(gaps[1]),
    ("%.2f"):format(gaps[1] / IV), ("%.3f"):format(lib.quantile(gaps, 0.01)) }
end

local rows = { { "run", "ok", "requests", "secs", "smallest gap", "/ interval", "p1 gap" } }
rows[#rows + 1] = run("share", true)
rows[#rows + 1] = run("noshare", false)
lib.banner(("fleet politeness: 3 workers x %d GETs, 6 proxies, interval %.2fs"):format(N, IV))
lib.table(rows)
env.cleanup()
