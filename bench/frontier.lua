-- frontier: the embedded crawl queue (scatter.queue / scatter.crawl,
-- DESIGN.md section 8), four measurements:
--   push      200,000 URLs by push_many, 50,000 single push calls (a file)
--   memory    RSS with 1,000,000 queued items against the empty queue
--   overhead  N small responses through scatter.crawl on a queue file (with
--             a JSONL output) against the same N through plain pool:get,
--             both 200 in flight through the farm's good x10, best of 3
--             (FRONTIER_INFLIGHT=N: N in flight instead; FRONTIER_OUTPUT=0:
--             no output, as pool:get writes none; FRONTIER_MEMORY=1: the
--             crawl on scatter.queue{}, SQLite in memory: no file, no WAL,
--             no sync, what durability costs; a slow disk: an
--             LD_PRELOAD of bench/slow_sync.c, see bench/README.md)
--   recovery  a `scatter run` crawl of a 2,000-page site killed -9 twenty
--             times at random moments, then run to its end: every page done
--             once, its output line exactly once, responses handled
--             again per kill
--
--   luajit bench/frontier.lua [push|memory|overhead|recovery ...]
--   luajit bench/frontier.lua overhead instructions    (the overhead in
--             instructions, under callgrind: FRONTIER_INSTR_N, 5000;
--             FRONTIER_CG_KEEP=DIR keeps the callgrind outputs)
--   luajit bench/frontier.lua overhead waits    (the threads' waits and
--             the attempts started, per request)
local B = dofile("bench/lib.lua")
local env = B.env
local scatter = require("scatter")
local cjson = require("cjson")

local want = {}
for _, a in ipairs(arg) do want[a] = true end
local all = next(want) == nil

local dir = env.tmpdir()

local function push_bench()
  B.banner("frontier push: 200,000 by push_many, 50,000 by push (queue file)")
  local rows = { { "run", "push_many /s", "push /s" } }
  for run = 1, 2 do
    local path = dir .. "/push" .. run .. ".db"
    local q = assert(scatter.queue({ path = path }))
    local list = {}
    for i = 1, 200000 do list[i] = "http://shop.example/item/" .. i end
    local t0 = B.now()
    assert(q:push_many(list) == 200000)
    q:flush()
    local many = 200000 / (B.now() - t0)
    t0 = B.now()
    for i = 1, 50000 do q:push("http://shop.example/single/" .. i) end
    q:flush()
    local single = 50000 / (B.now() - t0)
    q:close()
    rows[#rows + 1] = { tostring(run), string.format("%.0f", many), string.format("%.0f", single) }
  end
  B.table(rows)
  print("targets: push_many >= 100,000/s, push >= 30,000/s")
end

local function memory_bench()
  B.banner("frontier memory: RSS with 1,000,000 queued items")
  local q = assert(scatter.queue({ path = dir .. "/mem.db" }))
  collectgarbage()
  local before = env.rss_kib()
  local list = {}
  for chunk = 0, 99 do
    for i = 1, 10000 do list[i] = "http://shop.example/p/" .. (chunk * 10000 + i) end
    q:push_many(list)
  end
  q:flush()
  collectgarbage()
  local after = env.rss_kib()
  assert(q:stats().queued == 1000000)
  -- and taking from the front of a million does not load them
  local got = q.b:lease(100, scatter.now())
  assert(#got == 100)
  collectgarbage()
  local leased = env.rss_kib()
  q:close()
  print(string.format("empty queue %.1f MiB, 1,000,000 queued %.1f MiB (+%.1f MiB), after a lease %.1f MiB; "
    .. "file %.0f MiB", before / 1024, after / 1024, (after - before) / 1024, leased / 1024,
    (io.open(dir .. "/mem.db"):seek("end")) / 2 ^ 20))
  print("target: within 64 MiB of the empty queue")
end

local OVH_INFLIGHT = tonumber(os.getenv("FRONTIER_INFLIGHT") or "200")
-- FRONTIER_OUTPUT=0: the crawl's handle returns nothing and no output is
-- attached (pool:get writes none either): the queue's own cost alone
local OVH_OUTPUT = os.getenv("FRONTIER_OUTPUT") ~= "0"
local OVH_MEMORY = os.getenv("FRONTIER_MEMORY") == "1"
local function ovh_pool(proxies)
  return scatter.pool({ proxies = proxies, max_concurrent_per_request = 1, max_inflight = OVH_INFLIGHT,
    rate_limit = { default_interval = 0 }, proxy_timeout = 30, metrics_log_interval = 0 })
end

-- The first n of urls through plain pool:get, OVH_INFLIGHT at a time.
local function ovh_plain(pool, urls, n)
  local ok
  scatter.run(function()
    ok = B.drive(scatter, OVH_INFLIGHT, n, function(i) return pool:get(urls[i], { timeout = 60 }) end, true)
  end)
  assert(ok == n, "plain: " .. ok .. " of " .. n)
end

-- The same through scatter.crawl on queue q (filled by the caller).
local function ovh_crawl(pool, q, out, n)
  local s
  scatter.run(function()
    s = scatter.crawl({ queue = q, pool = pool, concurrency = OVH_INFLIGHT, output = OVH_OUTPUT and out or nil,
      handle = function(resp, item)
        if OVH_OUTPUT then return { url = item.url, status = resp.status, n = #resp.body } end
      end })
  end)
  assert(s.done == n, "crawl: " .. s.done .. " of " .. n)
end

-- One contender in a process of its own (run under callgrind by
-- overhead_instructions): MODE plain|crawl, or plain0|crawl0 for the same
-- set-up (pool; queue filled) with nothing requested.
local function overhead_child(mode, n, proxies, base, db)
  -- FRONTIER_COUNT=1 (overhead waits): count the threads' waits
  local waits = 0
  if os.getenv("FRONTIER_COUNT") then
    local runtime = require("scatter.runtime")
    local block = runtime.block
    runtime.block = function(...)
      waits = waits + 1
      return block(...)
    end
  end
  local urls, list = {}, {}
  for i = 1, n do urls[i] = base .. "?i=" .. i end
  for p in proxies:gmatch("[^,]+") do list[#list + 1] = p end
  local pool = ovh_pool(list)
  if mode:match("^crawl") then
    local q = assert(scatter.queue(OVH_MEMORY and {} or { path = db }))
    q:push_many(urls)
    q:flush()
    if mode == "crawl" then ovh_crawl(pool, q, db .. ".jsonl", n) end
    q:close()
  elseif mode == "plain" then
    ovh_plain(pool, urls, n)
  end
  if os.getenv("FRONTIER_COUNT") then
    print(string.format("counted %s waits %d attempts %d", mode, waits, pool:metrics().attempts_started))
  end
  pool:close()
end

-- The threads' waits (runtime.block calls) and the attempts started per
-- request, each contender once in a process of its own.
local function overhead_waits(web, farm)
  local N = 20000
  B.banner(string.format("frontier overhead, waits and attempts: %d small responses, %d in flight", N,
    OVH_INFLIGHT))
  local rows = { { "contender", "waits/request", "attempts/request" } }
  for _, mode in ipairs({ "plain", "crawl" }) do
    local d = env.tmpdir()
    local p = env.spawn({ "env", "FRONTIER_COUNT=1", "luajit", "bench/frontier.lua", "overhead-child", mode,
      tostring(N), table.concat(farm.proxies, ","), web:url("/small.txt"), d .. "/q.db" }, { name = "frontier-" .. mode })
    env.wait_until(function() return not p:alive() end, "the " .. mode .. " contender to end", nil, 600)
    local w, a = (env.read_file(p.log) or ""):match("counted %S+ waits (%d+) attempts (%d+)")
    assert(w and p.status == "exit 0", mode .. " failed (" .. tostring(p.status) .. "): " .. p:tail(20))
    rows[#rows + 1] = { mode == "plain" and "pool:get" or "scatter.crawl", string.format("%.2f", w / N),
      string.format("%.3f", a / N) }
  end
  B.table(rows)
end

-- Instructions (callgrind) instead of time: this machine's noise moves the
-- timed ratio by tens of percent, an instruction count by a few.
local function overhead_instructions(web, farm)
  local N = tonumber(os.getenv("FRONTIER_INSTR_N") or "5000")
  B.banner(string.format("frontier overhead in instructions: %d small responses, %d in flight, callgrind", N,
    OVH_INFLIGHT))
  local ir = {}
  for _, mode in ipairs({ "plain0", "plain", "crawl0", "crawl" }) do
    local d = env.tmpdir()
    local p = env.spawn({ "valgrind", "--tool=callgrind", "--callgrind-out-file=" .. d .. "/cg.out", "luajit",
      "bench/frontier.lua", "overhead-child", mode, tostring(N), table.concat(farm.proxies, ","),
      web:url("/small.txt"), d .. "/q.db" }, { name = "frontier-" .. mode })
    env.wait_until(function() return not p:alive() end, "the " .. mode .. " contender to end", nil, 1800)
    local c = (env.read_file(d .. "/cg.out") or ""):match("\nsummary: (%d+)")
    assert(c and p.status == "exit 0", mode .. " failed (" .. tostring(p.status) .. "): " .. p:tail(20))
    ir[mode] = tonumber(c)
    -- FRONTIER_CG_KEEP=DIR keeps each contender's callgrind output (DIR/cg_MODE.out) for callgrind_annotate
    local keep = os.getenv("FRONTIER_CG_KEEP")
    if keep then assert(os.execute("cp " .. d .. "/cg.out " .. keep .. "/cg_" .. mode .. ".out") == 0) end
  end
  local plain, crawl = (ir.plain - ir.plain0) / N, (ir.crawl - ir.crawl0) / N
  B.table({ { "contender", "Ir/request", "set-up Ir" },
    { "pool:get", string.format("%.0fk", plain / 1e3), string.format("%.0fM", ir.plain0 / 1e6) },
    { "scatter.crawl", string.format("%.0fk", crawl / 1e3), string.format("%.0fM", ir.crawl0 / 1e6) } })
  print(string.format("scatter.crawl %.2fx of pool:get in instructions (the target, <= 1.15x, is on time)",
    crawl / plain))
end

local function overhead_bench()
  local N = 20000
  local web = env.nginx()
  local farm = env.farm({ "good count=10" })
  if want.instructions then return overhead_instructions(web, farm) end
  if want.waits then return overhead_waits(web, farm) end
  B.banner(string.format("frontier overhead: %d small responses, %d in flight, farm good x10, best of 3", N,
    OVH_INFLIGHT))
  local urls = {}
  for i = 1, N do urls[i] = web:url("/small.txt?i=" .. i) end
  -- attempts started, over all runs: a hedge is an attempt beyond the
  -- request's one (max_concurrent_per_request = 1)
  local attempts = { plain = 0, crawl = 0 }
  local function plain()
    local pool = ovh_pool(farm.proxies)
    local t0, c0 = B.now(), os.clock()
    ovh_plain(pool, urls, N)
    local wall, cpu = B.now() - t0, os.clock() - c0
    attempts.plain = attempts.plain + pool:metrics().attempts_started
    pool:close()
    return wall, cpu
  end
  local runs, commits = 0, 0
  local function crawl()
    runs = runs + 1
    local pool = ovh_pool(farm.proxies)
    local q = assert(scatter.queue(OVH_MEMORY and {} or { path = dir .. "/ovh" .. runs .. ".db" }))
    q:push_many(urls)
    q:flush()
    -- the commits the crawl made (each an fdatasync of the output and a
    -- WAL commit), as the backend announces them
    local function counted() commits = commits + 1 end
    q.b:on_commit(counted, true)
    local t0, c0 = B.now(), os.clock()
    ovh_crawl(pool, q, dir .. "/ovh" .. runs .. ".jsonl", N)
    local wall, cpu = B.now() - t0, os.clock() - c0
    q.b:on_commit(counted, false)
    q:close()
    attempts.crawl = attempts.crawl + pool:metrics().attempts_started
    pool:close()
    return wall, cpu
  end
  -- (CPU s of this process too: it is CPU-bound, and its CPU moves less
  -- than the wall when other work shares the two cores)
  local p, c, pc, cc = {}, {}, {}, {}
  local RUNS = 3
  for i = 1, RUNS do
    p[i], pc[i] = plain()
    collectgarbage()
    c[i], cc[i] = crawl()
    collectgarbage()
  end
  local plo, phi = B.range(p)
  local clo, chi = B.range(c)
  local pclo, pchi = B.range(pc)
  local cclo, cchi = B.range(cc)
  B.table({ { "contender", "best wall s", "range s", "req/s", "cpu s", "attempts/request" },
    { "pool:get", string.format("%.3f", plo), string.format("%.3f-%.3f", plo, phi), string.format("%.0f", N / plo),
      string.format("%.3f-%.3f", pclo, pchi), string.format("%.3f", attempts.plain / (RUNS * N)) },
    { "scatter.crawl", string.format("%.3f", clo), string.format("%.3f-%.3f", clo, chi), string.format("%.0f", N / clo),
      string.format("%.3f-%.3f", cclo, cchi), string.format("%.3f", attempts.crawl / (RUNS * N)) } })
  print(string.format("scatter.crawl %.2fx of pool:get (target <= 1.15x); least CPU %.2fx; %.0f commits a crawl "
    .. "(%.0f items each)", clo / plo, cclo / pclo, commits / runs, N * runs / math.max(commits, 1)))
end

local function recovery_bench()
  local PAGES, KILLS, CONC = 2000, 20, 16
  B.banner(string.format("frontier recovery: %d pages, %d kills -9, concurrency %d", PAGES, KILLS, CONC))
  local files = {}
  for i = 0, PAGES - 1 do
    local links = {}
    for _, j in ipairs({ 2 * i + 1, 2 * i + 2 }) do
      if j < PAGES then links[#links + 1] = ('<a href="p%d.html">p%d</a>'):format(j, j) end
    end
    files["p" .. i .. ".html"] = "<html><body>" .. table.concat(links) .. "</body></html>"
  end
  local web = env.nginx({ files = files })
  local farm = env.farm({ "good count=4" })
  local db, out = dir .. "/rec.db", dir .. "/rec.jsonl"
  local script = env.script("recover.lua", [[
    local scatter = require("scatter")
    local db, out, start, proxies, handled = ...
    -- every response handed to handle, and every request made, written
    -- at once (a kill -9 loses none): what kills made redo, whatever
    -- tries says (a lease whose tries+1 was not committed yet comes back
    -- with its old count)
    local h = assert(io.open(handled, "a"))
    h:setvbuf("no")
    h:write("# run\n") -- (env.redone tells the runs apart)
    local r = assert(io.open(handled .. ".requests", "a"))
    r:setvbuf("no")
    r:write("# run\n")
    local list = {}
    for p in proxies:gmatch("[^,]+") do list[#list + 1] = p end
    local pool = scatter.pool{ proxies = list, metrics_log_interval = 0, rate_limit = { default_interval = 0 } }
    local request = pool.request
    pool.request = function(self, req)
      r:write(req.url .. "\n")
      return request(self, req)
    end
    local q = assert(scatter.queue{ path = db })
    q:push(start)
    local s = scatter.crawl{ queue = q, pool = pool, concurrency = ]] .. CONC .. [[, output = out,
      handle = function(resp, item)
        h:write(item.url .. "\n") -- (one write(2): a kill cannot split it)
        for _, u in ipairs(scatter.links(resp)) do item:push(u) end
        scatter.sleep(0.15 * math.random()) -- a page's own work
        return { url = item.url, tries = item.tries }
      end }
    print("summary", s.done, s.failed)
    q:close()
  ]])
  local handled = dir .. "/rec.handled"
  local argv = { env.build_dir() .. "/scatter", "run", script, db, out, web:url("/p0.html"),
    table.concat(farm.proxies, ","), handled }
  math.randomseed(os.time())
  local t0, kills = B.now(), 0
  for _ = 1, KILLS do
    local child = env.spawn(argv)
    env.sleep(0.2 + 0.6 * math.random())
    if child:alive() then
      require("ffi").C.kill(child.pid, 9)
      child:stop(0)
      kills = kills + 1
    end
  end
  local final = env.spawn(argv)
  env.wait_until(function() return not final:alive() end, "the last run", nil, 300)
  local wall = B.now() - t0
  local seen, refetched, lines = {}, 0, 0
  for line in io.lines(out) do
    local r = cjson.decode(line)
    assert(not seen[r.url], "written twice: " .. r.url)
    seen[r.url] = true
    lines = lines + 1
    if r.tries > 1 then refetched = refetched + 1 end
  end
  local redone, most = env.redone(handled)
  local rerequested, rmost = env.redone(handled .. ".requests")
  local q = assert(scatter.queue({ path = db, readonly = true }))
  local s = q:stats()
  q:close()
  print(string.format("%d kills, %.1f s in all; %d lines for %d pages (each once), done %d, failed %d; "
    .. "%d responses handled again (%.1f per kill, at most %d after one kill); %d requested again (%.1f per kill, "
    .. "at most %d after one kill; bound %d); %d pages done at a try > 1",
    kills, wall, lines, PAGES, s.done, s.failed, redone, redone / math.max(kills, 1), most, rerequested,
    rerequested / math.max(kills, 1), rmost, CONC, refetched))
  assert(lines == PAGES and s.done == PAGES)
end

if arg[1] == "overhead-child" then
  overhead_child(arg[2], tonumber(arg[3]), arg[4], arg[5], arg[6])
  os.exit(0)
end
if all or want.push then push_bench() end
if all or want.memory then memory_bench() end
if all or want.overhead then overhead_bench() end
if all or want.recovery then recovery_bench() end
env.cleanup()
