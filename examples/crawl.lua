-- A small crawler: start at a page, follow links on the same host, fetch
-- each page once through the pool, at most CONCURRENCY at a time.
--   scatter run examples/crawl.lua PROXY_LIST START_URL [MAX_PAGES] [CONCURRENCY]
local scatter = require("scatter")

local list, start, max_pages, concurrency = ...
max_pages = tonumber(max_pages) or 100
concurrency = tonumber(concurrency) or 20
if not list or not start then
  error("usage: scatter run examples/crawl.lua PROXY_LIST START_URL [MAX_PAGES] [CONCURRENCY]", 0)
end
local source = list:match("^%a+://") and list or ("file://" .. list)

local host = assert(scatter.parse_url(start))
local origin = start:match("^(%a+://[^/]+)")

local pool = scatter.pool({
  sources = { source },
  proxy_timeout = 5,
  -- an HTML page must be complete: block pages and truncated bodies fail
  classifier = function(resp)
    if resp.status == 404 or resp.status == 410 then return "final" end
    if resp.status >= 500 then return "target_error" end
    if resp.status ~= 200 then return "proxy_blocked" end
    local body = resp.body:lower()
    if body:find("captcha", 1, true) or not body:find("</html>", 1, true) then
      return "proxy_blocked"
    end
    return "success"
  end,
})

local seen, queue, head = { [start] = true }, { start }, 1
local fetched, failed, active = 0, 0, 0
local idle = scatter.spawn(function() end) -- a thread to wait on when idle

local function links(body)
  local out = {}
  for href in body:gmatch('href%s*=%s*"([^"#]+)"') do
    local url
    if href:match("^https?://") then url = href
    elseif href:sub(1, 1) == "/" then url = origin .. href
    else url = start:gsub("[^/]*$", "") .. href end
    if scatter.parse_url(url) == host then out[#out + 1] = url end
  end
  return out
end

local function worker(url)
  local resp, err = pool:get(url, { timeout = 60 })
  if resp then
    fetched = fetched + 1
    print(string.format("%3d %s (%d bytes, %d attempts, %.2fs via %s)", resp.status, url, #resp.body,
      resp.attempts, resp.elapsed, resp.proxy))
    for _, l in ipairs(links(resp.body)) do
      if not seen[l] and #queue < max_pages then
        seen[l] = true
        queue[#queue + 1] = l
      end
    end
  else
    failed = failed + 1
    io.stderr:write("failed ", url, ": ", err, "\n")
  end
end

local running = {}
while head <= #queue or #running > 0 do
  while head <= #queue and active < concurrency do
    local url = queue[head]
    head = head + 1
    active = active + 1
    running[#running + 1] = scatter.spawn(function()
      worker(url)
      active = active - 1
    end)
  end
  local th = table.remove(running, 1) or idle
  scatter.wait_any(th)
end
print(string.format("crawled %d pages, %d failed", fetched, failed))
