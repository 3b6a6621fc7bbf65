-- scatter.links and scatter.url: a page's links as absolute, canonical
-- URLs (Gumbo parses the HTML, libcurl resolves the URLs; both in C).
local core = require("scatter.core")

local M = {}

-- What a browser does to an href before it parses it (the URL standard):
-- leading and trailing spaces and control characters dropped, tabs and
-- newlines inside removed (an href wrapped over two lines is one URL).
local function trim(ref)
  ref = ref:match("^[%z\1- ]*(.-)[%z\1- ]*$")
  if ref:find("[\t\n\r]") then ref = ref:gsub("[\t\n\r]", "") end
  -- in an http(s) URL a browser reads a backslash before the query as a
  -- slash: "\\x.org/a" is //x.org/a and "..\b" is ../b (curl kept
  -- them in the path: another page, or another host's link kept as ours)
  if ref:find("\\", 1, true) then
    local scheme = ref:match("^(%a[%w+.-]*):")
    if not scheme or scheme:lower() == "http" or scheme:lower() == "https" then
      local head, tail = ref:match("^([^?#]*)(.*)$")
      ref = head:gsub("\\", "/") .. tail
    end
  end
  return ref
end

M.url = {
  -- join(base, ref) -> absolute URL | nil, err (ref resolved as a browser does)
  join = function(base, ref)
    if type(base) ~= "string" or type(ref) ~= "string" then
      error("scatter.url.join: bad arguments (base URL and reference strings expected)", 2)
    end
    return core.url_join(base, trim(ref))
  end,
  -- canonical(url) -> URL | nil, err: scheme and host lower-case, default
  -- port and fragment dropped, dot segments resolved (the dedup key's URL)
  canonical = function(u)
    if type(u) ~= "string" then error("scatter.url.canonical: bad argument #1 (URL string expected)", 2) end
    return core.url_canonical(u)
  end,
}

local function patterns(v, name)
  if v == nil then return nil end
  if type(v) == "string" then v = { v } end
  if type(v) ~= "table" then error("scatter.links: " .. name .. " must be a Lua pattern or a list of them", 3) end
  for _, p in ipairs(v) do
    if type(p) ~= "string" then error("scatter.links: " .. name .. " must hold Lua pattern strings", 3) end
    -- (a bad pattern raised from string.find at the first link, pointing
    -- into this file)
    local ok, err = pcall(string.find, "", p)
    if not ok then error(("scatter.links: %s: bad Lua pattern %q (%s)"):format(name, p, tostring(err):gsub("^.-:%d+: ", "")), 3) end
  end
  return v
end

local OPTIONS = { same_host = "boolean", match = true, exclude = true, parse_timeout = true }

local function any(list, s)
  for _, p in ipairs(list) do
    if s:find(p) then return true end
  end
  return false
end

-- Gumbo's time grows with the square of a page's nesting depth (see
-- src/lua/links.c): a hostile page must not hold the loop for minutes.
local PARSE_TIMEOUT = 2

-- links(resp [, { same_host =, match =, exclude =, parse_timeout = }]) ->
-- list of URLs, each once, in document order | nil, err (the page took
-- over parse_timeout seconds to parse). resp is a response (its url and
-- body) or { url =, body = }. match/exclude: Lua patterns (or lists).
function M.links(resp, opts)
  if type(resp) ~= "table" or type(resp.body) ~= "string" or type(resp.url) ~= "string" then
    error("scatter.links: bad argument #1 (a response with url and body expected)", 2)
  end
  if opts ~= nil and type(opts) ~= "table" then error("scatter.links: bad argument #2 (options table expected)", 2) end
  opts = opts or {}
  for k, v in pairs(opts) do
    local want = OPTIONS[k]
    if not want then error("scatter.links: unknown option '" .. tostring(k) .. "'", 2) end
    if want ~= true and type(v) ~= want then
      error(("scatter.links: %s must be a %s, got %s"):format(k, want, type(v)), 2)
    end
  end
  local match, exclude = patterns(opts.match, "match"), patterns(opts.exclude, "exclude")
  local budget = opts.parse_timeout or PARSE_TIMEOUT
  if type(budget) ~= "number" or not (budget > 0 and budget <= 3600) then
    error("scatter.links: parse_timeout must be a number of seconds in (0, 3600], got " .. tostring(opts.parse_timeout), 2)
  end
  local base_href, hrefs = core.html_links(resp.body, budget)
  if type(hrefs) ~= "table" then return nil, "scatter.links: " .. resp.url .. ": " .. tostring(hrefs) end
  local base = resp.url
  if base_href then base = core.url_join(resp.url, trim(base_href)) or resp.url end
  local host = opts.same_host and core.url_host(resp.url)
  local out, seen = {}, {}
  for _, href in ipairs(hrefs) do
    href = trim(href)
    local abs = href ~= "" and core.url_join(base, href)
    local u = abs and core.url_canonical(abs)
    if u and not seen[u] and (not host or core.url_host(u) == host)
        and (not match or any(match, u)) and not (exclude and any(exclude, u)) then
      seen[u] = true
      out[#out + 1] = u
    end
  end
  return out
end

return M
