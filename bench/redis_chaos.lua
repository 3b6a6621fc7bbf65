-- chaos on a shared Redis queue (DESIGN.md section 9): 3 workers (`scatter
-- run spec/support/fleet_crawl.lua`) crawl a 3,000-page site through a
-- SOCKS5 proxy to nginx while, every second, a random worker is killed -9
-- and a new one started. Checks: every page done once, its output kept
-- exactly once, nothing left leased or queued.
--   luajit bench/redis_chaos.lua [PAGES] [LEASE]     (3000, 2 s)
local lib = dofile("bench/lib.lua")
local env = lib.env
local RS = require("support.redis")
local scatter = require("scatter")

local PAGES, LEASE = tonumber(arg[1] or "3000"), arg[2] or "2"
local srv, ng = RS.start(), env.nginx()
local proxy = env.microsocks().url
require("support.env") -- ffi kill declared there
local ffi = require("ffi")

local function start()
  return env.spawn({ "env", "LEASE=" .. LEASE, env.build_dir() .. "/scatter", "run", "spec/support/fleet_crawl.lua",
    srv.url, "chaos", proxy, ng.url("/small.txt"), PAGES }, { name = "chaos-worker" })
end

local q = assert(scatter.queue({ redis = srv.url, name = "chaos" }))
local ws = { start(), start(), start() }
local t0, kills = lib.now(), 0
math.randomseed(os.time())
while true do
  env.sleep(1)
  local s = q:stats()
  if s.done >= PAGES and s.leased == 0 and s.queued == 0 then break end
  local live = {}
  for i, w in ipairs(ws) do if w:alive() then live[#live + 1] = i end end
  if #live > 0 and s.done < PAGES then
    local i = live[math.random(#live)]
    ffi.C.kill(ws[i].pid, 9)
    ws[i]:stop()
    kills = kills + 1
    ws[i] = start()
  end
  if lib.now() - t0 > 600 then error("chaos: no end after 600 s: " .. require("cjson").encode(s)) end
end
local secs = lib.now() - t0
for _, w in ipairs(ws) do w:stop() end
local s = q:stats()
local path = os.tmpname()
local fh = io.open(path, "w")
local exported = q:export(fh)
fh:close()
local seen, dup, retried = {}, 0, 0
for line in io.lines(path) do
  local k = tonumber(line:match('"k":(%d+)'))
  if seen[k] then dup = dup + 1 end
  seen[k] = true
  if tonumber(line:match('"tries":(%d+)')) > 1 then retried = retried + 1 end
end
os.remove(path)
local missing = 0
for k = 0, PAGES - 1 do if not seen[k] then missing = missing + 1 end end
q:close()
lib.banner(("Redis chaos: %d pages, 3 workers, a kill -9 every second, lease %ss"):format(PAGES, LEASE))
lib.table({
  { "secs", "kills", "done", "exported", "duplicates", "missing", "leased", "queued", "retried pages" },
  { ("%.1f"):format(secs), tostring(kills), tostring(s.done), tostring(exported), tostring(dup), tostring(missing),
    tostring(s.leased), tostring(s.queued), tostring(retried) },
})
env.cleanup()
if dup > 0 or missing > 0 or s.leased > 0 or s.queued > 0 or exported ~= PAGES then os.exit(1) end
