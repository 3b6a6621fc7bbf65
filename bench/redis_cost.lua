-- coordination cost of the Redis queue (DESIGN.md section 9): CPU seconds
-- of the worker processes per delivered item (the machine has 2 cores,
-- shared with the proxies, nginx and Redis: wall time says little), for
--   embedded   1 worker on the embedded queue (SQLite)     the baseline
--   redis x1   1 worker on the Redis queue
--   redis x3   3 workers on one Redis queue
-- each crawling PAGES pages (spec/support/fleet_crawl.lua, no handler
-- delay) through dante-server SOCKS5 proxies to nginx.
-- Targets: redis x1 <= 1.2x embedded; redis x3 <= 1.15x redis x1.
--   luajit bench/redis_cost.lua [PAGES] [RUNS]     (3000, 2)
local lib = dofile("bench/lib.lua")
local env = lib.env
local RS = require("support.redis")

local PAGES, RUNS = tonumber(arg[1] or "3000"), tonumber(arg[2] or "2")
local ng = env.nginx()

-- dante as a fast SOCKS5 proxy (microsocks relays in 1 KiB chunks)
local function dante()
  local dir = env.tmpdir()
  local port = env.free_port()
  env.write_file(dir .. "/danted.conf", ([[
logoutput: %s/danted.log
internal: 127.0.0.1 port = %d
external: 127.0.0.1
socksmethod: none
clientmethod: none
user.privileged: root
user.unprivileged: nobody
client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }
socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }
]]):format(dir, port))
  local p = env.spawn({ "/usr/sbin/danted", "-f", dir .. "/danted.conf", "-p", dir .. "/danted.pid" }, { name = "danted" })
  env.wait_port(port, p)
  return "socks5h://127.0.0.1:" .. port
end
local proxies = table.concat({ dante(), dante() }, ",")

local function crawl(queue, name, workers)
  local ps = {}
  for i = 1, workers do
    ps[i] = env.spawn({ "env", "HOLD=0", env.build_dir() .. "/scatter", "run", "spec/support/fleet_crawl.lua",
      queue, name, proxies, ng.url("/small.txt"), PAGES, "0" }, { name = "cost-worker" })
  end
  local done, cpu = 0, 0
  for _, p in ipairs(ps) do
    env.wait_until(function() return not p:alive() end, "a worker to end", nil, 600)
    local out = env.read_file(p.log) or ""
    local d, c = out:match("done (%d+) cpu ([%d.]+)")
    assert(d, out)
    done, cpu = done + tonumber(d), cpu + tonumber(c)
  end
  assert(done == PAGES, "delivered " .. done .. " of " .. PAGES)
  return cpu / done
end

local res = { embedded = {}, x1 = {}, x3 = {} }
for run = 1, RUNS do
  local dir = env.tmpdir()
  res.embedded[run] = crawl(dir .. "/crawl.db", "c", 1)
  local srv = RS.start()
  res.x1[run] = crawl(srv.url, "x1", 1)
  res.x3[run] = crawl(srv.url, "x3", 3)
  srv:stop()
end
local function us(xs)
  local lo, hi = math.huge, 0
  for _, x in ipairs(xs) do lo, hi = math.min(lo, x), math.max(hi, x) end
  return ("%.0f-%.0f"):format(lo * 1e6, hi * 1e6)
end
local function ratio(a, b)
  local lo, hi = math.huge, 0
  for i = 1, #a do lo, hi = math.min(lo, a[i] / b[i]), math.max(hi, a[i] / b[i]) end
  return ("%.2f-%.2fx"):format(lo, hi)
end
lib.banner(("Redis coordination cost: %d pages, CPU us per delivered item, %d runs"):format(PAGES, RUNS))
lib.table({
  { "setup", "CPU us/item", "ratio", "target" },
  { "embedded x1", us(res.embedded), "1", "" },
  { "redis x1", us(res.x1), ratio(res.x1, res.embedded) .. " of embedded", "<= 1.2x" },
  { "redis x3", us(res.x3), ratio(res.x3, res.x1) .. " of redis x1", "<= 1.15x" },
})
env.cleanup()
