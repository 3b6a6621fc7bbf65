-- A worker process for the Redis queue specs, run with `scatter run`:
--   scatter run redis_worker.lua MODE URL NAME [ARGS...]
-- MODE push N FROM: pushes keys FROM..FROM+N-1 in shuffled batches of 25,
--   prints "new <count>"
-- MODE crawl FANOUT LIMIT HOLD: leases and completes until the queue is
--   empty; item k pushes k*FANOUT+1..k*FANOUT+FANOUT below LIMIT; each
--   handler takes HOLD seconds; prints "done <count>"
-- MODE hold N: leases N items, prints "held <count>", then sleeps (to be
--   killed)
-- MODE scrawl: scatter.crawl on the queue with a pool that answers 200 at
--   once and a handler that returns {url =}; prints "done <count>", and
--   " stopped" after it when a signal ended it
local scatter = require("scatter")
local QR = require("scatter.queue_redis")

local mode, url, name = ...
local args = { select(4, ...) }
local lease = tonumber(os.getenv("LEASE") or "1")
local b = mode ~= "scrawl" and assert(QR.open({ redis = url, name = name, lease = lease }))

local function rec(k)
  local u = "http://site.test/p/" .. k
  return { key = "GET " .. u, url = u, method = "GET", priority = 0, meta = "{}" }
end

if mode == "push" then
  local n, from = tonumber(args[1]), tonumber(args[2])
  local keys = {}
  for k = from, from + n - 1 do keys[#keys + 1] = k end
  math.randomseed(os.time() + from)
  for i = #keys, 2, -1 do
    local j = math.random(i)
    keys[i], keys[j] = keys[j], keys[i]
  end
  local total = 0
  for i = 1, #keys, 25 do
    local batch = {}
    for j = i, math.min(i + 24, #keys) do batch[#batch + 1] = rec(keys[j]) end
    total = total + assert(b:push(batch))
  end
  print("new " .. total)
elseif mode == "crawl" then
  local fanout, limit, hold = tonumber(args[1]), tonumber(args[2]), tonumber(args[3])
  local done, inflight = 0, 0
  while true do
    local items = inflight < 8 and assert(b:lease(8 - inflight)) or {}
    for _, it in ipairs(items) do
      inflight = inflight + 1
      scatter.spawn(function()
        if hold > 0 then scatter.sleep(hold) end
        local k = tonumber(it.url:match("(%d+)$"))
        local kids = {}
        for j = k * fanout + 1, k * fanout + fanout do
          if j < limit then kids[#kids + 1] = rec(j) end
        end
        assert(b:complete(it, kids, ('{"k":%d,"by":%d}'):format(k, it.tries)))
        done = done + 1
        inflight = inflight - 1
      end)
    end
    if #items == 0 then
      local due = 0.01
      if inflight < 8 then due = b:next_due() end
      if due == nil and inflight == 0 then break end
      scatter.sleep(math.min(due or 0.05, 0.05))
    end
  end
  b:close()
  print("done " .. done)
elseif mode == "scrawl" then
  local q = assert(scatter.queue({ redis = url, name = name, lease = lease }))
  local pool = { request = function() return { status = 200 } end }
  local summary = scatter.crawl({ queue = q, pool = pool, concurrency = 4, output = "unused",
    handle = function(_, item) return { url = item.url } end })
  q:close()
  print("done " .. summary.done .. (summary.stopped and " stopped" or ""))
elseif mode == "hold" then
  local items = assert(b:lease(tonumber(args[1])))
  print("held " .. #items)
  io.stdout:flush()
  scatter.sleep(3600)
end
