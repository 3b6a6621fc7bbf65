-- A crawl worker for the fleet spec and the chaos bench, run with
-- `scatter run`:
--   scatter run fleet_crawl.lua REDIS_URL NAME PROXIES BASE PAGES [HOLD]
-- Crawls BASE?p=0 and, from page k, pages 3k+1..3k+3 below PAGES, through
-- a pool on PROXIES (comma-separated), sharing the Redis queue NAME; each
-- handler takes HOLD seconds (default 0.02). REDIS_URL may be a file path
-- instead (the embedded queue, for comparisons). Prints "done <n> cpu <s>"
-- (the process's CPU seconds, os.clock).
local scatter = require("scatter")

local url, name, proxies, base, pages, hold = ...
pages, hold = tonumber(pages), tonumber(hold or "0.02")
local list = {}
for p in proxies:gmatch("[^,]+") do list[#list + 1] = p end
local q
if url:match("^redis://") then
  q = assert(scatter.queue({ redis = url, name = name, lease = tonumber(os.getenv("LEASE") or "2") }))
else
  q = assert(scatter.queue({ path = url }))
end
local pool = scatter.pool({ proxies = list, rate_limit = { default_interval = 0 }, metrics_log_interval = 0,
  max_concurrent_per_request = 1 })
q:push(base .. "?p=0")
local summary = scatter.crawl({
  queue = q, pool = pool, concurrency = tonumber(os.getenv("CONCURRENCY") or "8"), max_tries = 50,
  output = os.getenv("OUT") or (url:match("^redis://") and "unused.jsonl" or url .. ".jsonl"),
  handle = function(resp, item)
    local k = tonumber(item.url:match("p=(%d+)"))
    for j = 3 * k + 1, 3 * k + 3 do
      if j < pages then item:push(base .. "?p=" .. j) end
    end
    if hold > 0 then scatter.sleep(hold) end
    return { k = k, status = resp.status, tries = item.tries }
  end,
})
q:close()
local attempts = pool:metrics().attempts_started
pool:close()
print(("done %d cpu %.3f attempts %d"):format(summary.done, os.clock(), attempts))
