-- coordination cost of the Redis queue (DESIGN.md section 9): CPU seconds
-- of the worker processes per delivered item (the machine has 2 cores,
-- shared with the proxies, nginx and Redis: wall time says little), for
--   embedded   1 worker on the embedded queue (SQLite)     the baseline
--   redis x1   1 worker on the Redis queue
--   redis x3   3 workers on one Redis queue
--   x3 apart   3 workers at once, each on a queue of its own with a third
--              of the pages: the same processes competing for the two
--              cores, with nothing shared; x3 / x3 apart is what sharing
--              one queue costs, x3 apart / x1 what the machine's
--              contention costs (DESIGN.md section 9)
-- each crawling PAGES pages (spec/support/fleet_crawl.lua, no handler
-- delay) through dante-server SOCKS5 proxies to nginx.
-- Targets: redis x1 <= 1.2x embedded; redis x3 <= 1.15x redis x1.
--   luajit bench/redis_cost.lua [PAGES] [RUNS] [instructions]     (3000, 2)
-- With "instructions" the workers run under valgrind's callgrind and the
-- cost is instructions per item instead of CPU seconds: on this 2-core
-- machine three workers beside nginx, dante and Redis each run slower per
-- instruction (cache and scheduler contention), which CPU time counts and
-- instructions do not. A one-page crawl per setup measures the fixed
-- start-up, reported apart (slow: ~20 s per 1,000 pages; REDIS_CG_KEEP=DIR
-- keeps the callgrind outputs). With "perf"
-- each worker also runs under `perf stat`: user and system CPU and context
-- switches per setup, printed after the table, and the system calls
-- (all, and epoll_wait: the loop's passes) per delivered item.
local lib = dofile("bench/lib.lua")
local env = lib.env
local RS = require("support.redis")

local PAGES, RUNS = tonumber(arg[1] or "3000"), tonumber(arg[2] or "2")
local INSTR, PERF = arg[3] == "instructions", arg[3] == "perf"
if arg[3] and not INSTR and not PERF then
  error("bench/redis_cost.lua: the third argument is 'instructions', 'perf' or nothing", 0)
end
local tool = (PERF and "perf") or (INSTR and "valgrind")
if tool then
  if not lib.sh("command -v " .. tool) then
    error("bench/redis_cost.lua: " .. tool .. " is not installed (Debian: "
      .. (tool == "perf" and "linux-perf" or "valgrind") .. ")", 0)
  end
end
-- perf: each worker under `perf stat` as well; its user and system time
-- and context switches are summed per setup and printed after the table
local perf_sum = {}
-- attempts the workers' pools started, per setup (all runs): beyond one
-- an item they are hedges and replaced paths
local attempts = {}
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

-- The workers' whole cost (CPU seconds, or instructions with INSTR).
-- apart: each worker on a queue of its own (NAME1..NAMEn), pages / workers
-- pages each.
local function crawl(queue, name, workers, pages, apart)
  pages = pages or PAGES
  local ps, cg = {}, {}
  for i = 1, workers do
    local argv = { "env", "HOLD=0" }
    if PERF then
      cg[i] = env.tmpdir() .. "/perf.out"
      for _, a in ipairs({ "perf", "stat", "-x,", "-o", cg[i], "-e",
        "context-switches,user_time,system_time,raw_syscalls:sys_enter,syscalls:sys_enter_epoll_wait" }) do
        argv[#argv + 1] = a
      end
    elseif INSTR then
      cg[i] = env.tmpdir() .. "/callgrind.out"
      for _, a in ipairs({ "valgrind", "--tool=callgrind", "--callgrind-out-file=" .. cg[i] }) do argv[#argv + 1] = a end
    end
    for _, a in ipairs({ env.build_dir() .. "/scatter", "run", "spec/support/fleet_crawl.lua",
      queue, apart and name .. i or name, proxies, ng.url("/small.txt"),
      apart and math.floor(pages / workers) + (i <= pages % workers and 1 or 0) or pages, "0" }) do
      argv[#argv + 1] = a
    end
    ps[i] = env.spawn(argv, { name = "cost-worker" })
  end
  local done, cost = 0, 0
  for i, p in ipairs(ps) do
    env.wait_until(function() return not p:alive() end, "a worker to end", nil, 1800)
    local out = env.read_file(p.log) or ""
    local d, c, a = out:match("done (%d+) cpu ([%d.]+) attempts (%d+)")
    assert(d, out)
    local key = apart and "apart" or name -- (the setup's, over its runs)
    attempts[key] = (attempts[key] or 0) + tonumber(a)
    if INSTR then
      c = (env.read_file(cg[i]) or ""):match("\nsummary: (%d+)")
      assert(c, "no callgrind summary in " .. cg[i])
      -- REDIS_CG_KEEP=DIR keeps each worker's callgrind output for
      -- callgrind_annotate (DIR/cg_NAME_PAGES_I.out)
      local keep = os.getenv("REDIS_CG_KEEP")
      if keep then
        assert(os.execute(("cp %s %s/cg_%s_%d_%d.out"):format(cg[i], keep, name, pages, i)) == 0)
      end
    elseif PERF then
      local sum = perf_sum[key] or { ["context-switches"] = 0, user_time = 0, system_time = 0,
        ["raw_syscalls:sys_enter"] = 0, ["syscalls:sys_enter_epoll_wait"] = 0 }
      perf_sum[key] = sum
      for v, ev in (env.read_file(cg[i]) or ""):gmatch("([%d.]+),[^,\n]*,([%w_:-]+)") do
        if sum[ev] then sum[ev] = sum[ev] + tonumber(v) end
      end
    end
    done, cost = done + tonumber(d), cost + tonumber(c)
  end
  assert(done == pages, "delivered " .. done .. " of " .. pages)
  return cost
end

local res = { embedded = {}, x1 = {}, x3 = {}, apart = {} }
local fixed = { embedded = {}, x1 = {}, x3 = {}, apart = {} } -- INSTR: a one-page crawl's cost per worker
for run = 1, RUNS do
  local dir = env.tmpdir()
  res.embedded[run] = crawl(dir .. "/crawl.db", "c", 1) / PAGES
  local srv = RS.start()
  res.x1[run] = crawl(srv.url, "x1", 1) / PAGES
  res.x3[run] = crawl(srv.url, "x3", 3) / PAGES
  res.apart[run] = crawl(srv.url, "apart" .. run .. "_", 3, PAGES, true) / PAGES
  if INSTR then
    fixed.embedded[run] = crawl(dir .. "/one.db", "c", 1, 1)
    fixed.x1[run] = crawl(srv.url, "one" .. run, 1, 1)
    fixed.x3[run] = 3 * fixed.x1[run]
    fixed.apart[run] = fixed.x3[run]
  end
  srv:stop()
end
local function span(xs, scale, fmt)
  local lo, hi = math.huge, -math.huge
  for _, x in ipairs(xs) do lo, hi = math.min(lo, x), math.max(hi, x) end
  return (fmt .. "-" .. fmt):format(lo * scale, hi * scale)
end
local function ratio(a, b)
  local lo, hi = math.huge, 0
  for i = 1, #a do lo, hi = math.min(lo, a[i] / b[i]), math.max(hi, a[i] / b[i]) end
  return ("%.2f-%.2fx"):format(lo, hi)
end
if not INSTR then
  lib.banner(("Redis coordination cost: %d pages, CPU us per delivered item, %d runs"):format(PAGES, RUNS))
  lib.table({
    { "setup", "CPU us/item", "ratio", "target" },
    { "embedded x1", span(res.embedded, 1e6, "%.0f"), "1", "" },
    { "redis x1", span(res.x1, 1e6, "%.0f"), ratio(res.x1, res.embedded) .. " of embedded", "<= 1.2x" },
    { "redis x3", span(res.x3, 1e6, "%.0f"), ratio(res.x3, res.x1) .. " of redis x1", "<= 1.15x" },
    { "x3 apart", span(res.apart, 1e6, "%.0f"), ratio(res.apart, res.x1) .. " of redis x1",
      "(x3 " .. ratio(res.x3, res.apart) .. " of it)" },
  })
  print(("attempts an item: embedded x1 %.3f, redis x1 %.3f, redis x3 %.3f, x3 apart %.3f"):format(
    attempts.c / (RUNS * PAGES), attempts.x1 / (RUNS * PAGES), attempts.x3 / (RUNS * PAGES), attempts.apart / (RUNS * PAGES)))
  for _, name in ipairs({ "c", "x1", "x3", "apart" }) do
    local p = perf_sum[name]
    if p then -- (user_time and system_time are in ns; all runs summed)
      local items = RUNS * PAGES
      print(("perf stat, %s: user %.0f ms, system %.0f ms, %d context switches, %.2f system calls and %.3f "
        .. "epoll_waits an item (all workers, %d runs)"):format(
        ({ c = "embedded x1", apart = "x3 apart" })[name] or "redis " .. name, p.user_time / 1e6,
        p.system_time / 1e6, p["context-switches"], p["raw_syscalls:sys_enter"] / items,
        p["syscalls:sys_enter_epoll_wait"] / items, RUNS))
    end
  end
else
  -- past start-up: (whole - workers x one-page crawl) / pages
  local past = {}
  for k, xs in pairs(res) do
    past[k] = {}
    for i = 1, #xs do past[k][i] = xs[i] - fixed[k][i] / PAGES end
  end
  lib.banner(("Redis coordination cost: %d pages, instructions per delivered item (callgrind), %d runs")
    :format(PAGES, RUNS))
  lib.table({
    { "setup", "Ir/item", "ratio", "Ir/item past start-up", "ratio", "start-up Ir/worker" },
    { "embedded x1", span(res.embedded, 1e-3, "%.0fk"), "1", span(past.embedded, 1e-3, "%.0fk"), "1",
      span(fixed.embedded, 1e-6, "%.0fM") },
    { "redis x1", span(res.x1, 1e-3, "%.0fk"), ratio(res.x1, res.embedded) .. " of embedded",
      span(past.x1, 1e-3, "%.0fk"), ratio(past.x1, past.embedded), span(fixed.x1, 1e-6, "%.0fM") },
    { "redis x3", span(res.x3, 1e-3, "%.0fk"), ratio(res.x3, res.x1) .. " of redis x1",
      span(past.x3, 1e-3, "%.0fk"), ratio(past.x3, past.x1), span(fixed.x1, 1e-6, "%.0fM") },
    { "x3 apart", span(res.apart, 1e-3, "%.0fk"), ratio(res.apart, res.x1) .. " of redis x1",
      span(past.apart, 1e-3, "%.0fk"), ratio(past.apart, past.x1), span(fixed.x1, 1e-6, "%.0fM") },
  })
  print("targets (on CPU seconds): redis x1 <= 1.2x embedded, redis x3 <= 1.15x redis x1")
end
env.cleanup()
