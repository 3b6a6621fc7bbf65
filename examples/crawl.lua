-- A resumable crawler: start at a page, follow links on the same host,
-- fetch each page once through the pool, write one JSON line per page.
-- The frontier is a file: kill it (even -9) and run it again, and it goes
-- on where it stopped, every page in the output exactly once.
--   scatter run examples/crawl.lua PROXY_LIST START_URL [MAX_DEPTH] [CONCURRENCY]
-- (state in crawl.db, output in crawl.jsonl; `scatter queue stats crawl.db`)
local scatter = require("scatter")

local list, start, max_depth, concurrency = ...
max_depth = tonumber(max_depth) or 3
concurrency = tonumber(concurrency) or 20
if not list or not start then
  error("usage: scatter run examples/crawl.lua PROXY_LIST START_URL [MAX_DEPTH] [CONCURRENCY]", 0)
end
-- said now, not as requests that time out for minutes with no proxy
if not list:match("^%a+://") then
  local f, ferr = io.open(list, "r")
  if not f then error("PROXY_LIST: " .. ferr, 0) end
  f:close()
end
local _, why = scatter.url.canonical(start)
if why then error(("START_URL %q: %s"):format(start, why), 0) end

local pool = scatter.pool({
  sources = { list:match("^%a+://") and list or ("file://" .. list) },
  proxy_timeout = 5,
  -- an HTML page must be complete: block pages and truncated bodies fail
  classifier = function(resp)
    if resp.status == 404 or resp.status == 410 then return "final" end
    if resp.status >= 500 then return "target_error" end
    if resp.status ~= 200 then return "proxy_blocked" end
    local body = resp.body:lower()
    if body:find("captcha", 1, true) or not body:find("</html>", 1, true) then return "proxy_blocked" end
    return "success"
  end,
})

-- A page's text as UTF-8 (an output line must be): kept when it is UTF-8
-- (RFC 3629), else read as Latin-1, as older sites write. Without this a
-- Latin-1 title failed the page every try, and its links were lost.
local function utf8_text(s)
  local i, n = 1, #s
  while i <= n do
    local c = s:byte(i)
    local len, lo, hi = 1, 0x80, 0xBF
    if c >= 0xC2 and c <= 0xDF then len = 2
    elseif c >= 0xE0 and c <= 0xEF then len, lo, hi = 3, c == 0xE0 and 0xA0 or 0x80, c == 0xED and 0x9F or 0xBF
    elseif c >= 0xF0 and c <= 0xF4 then len, lo, hi = 4, c == 0xF0 and 0x90 or 0x80, c == 0xF4 and 0x8F or 0xBF
    elseif c >= 0x80 then len = nil end
    for j = 1, (len or 1) - 1 do
      local d = s:byte(i + j)
      if not d or d < (j == 1 and lo or 0x80) or d > (j == 1 and hi or 0xBF) then len = nil break end
    end
    if not len then
      return (s:gsub("[\128-\255]", function(b)
        b = b:byte()
        return string.char(0xC0 + math.floor(b / 64), 0x80 + b % 64)
      end))
    end
    i = i + len
  end
  return s
end

local q = assert(scatter.queue({ path = "crawl.db" }))
q:push(start, { meta = { depth = 0 } }) -- false when resuming: seen already

local summary = scatter.crawl({
  queue = q, pool = pool, concurrency = concurrency, max_tries = 5, output = "crawl.jsonl",
  handle = function(resp, item)
    if resp.status == 200 and item.meta.depth < max_depth then
      for _, url in ipairs(assert(scatter.links(resp, { same_host = true }))) do
        item:push(url, { meta = { depth = item.meta.depth + 1 } })
      end
    end
    local title = resp.body:match("<title[^>]*>%s*(.-)%s*</title>")
    return { url = item.url, status = resp.status, depth = item.meta.depth, bytes = #resp.body,
      title = title and utf8_text(title) }
  end,
  on_failed = function(item, err) io.stderr:write("failed ", item.url, ": ", err, "\n") end,
})
local s = q:stats()
print(string.format("crawled %d pages (%d failed, %d new links) in %.1fs; %d done in all", summary.done,
  summary.failed, summary.pushed, summary.secs, s.done))
q:close()
