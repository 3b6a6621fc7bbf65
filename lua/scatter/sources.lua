-- Proxy list sources: file:// lists read from disk, http(s):// lists
-- fetched directly (never through the pool's proxies), TLS verified.
--
-- Fetches are shared: concurrent loads of one URL wait for a single fetch,
-- and a good list younger than the caller's max_age is reused, so the pools
-- of a router that name the same source fetch it once per refresh. A fetch
-- in progress is an op, not a thread: it never keeps scatter.run waiting.
local core = require("scatter.core")
local runtime = require("scatter.runtime")
local log = require("scatter.log")

local M = {}
M.FETCH_TIMEOUT = 10 -- seconds; a source slower than this is skipped

local MAX_BYTES = 64 * 1024 * 1024

local cache = {} -- url -> { list = ..., at = core.now() }
local inflight = {} -- url -> callbacks waiting for the fetch in progress

-- Credentials in a source URL stay out of logs and errors.
function M.redact(url)
  return (url:gsub("^(%a[%w+.-]*://)[^/?#]*@", "%1***@"))
end

-- A bad list line as a warning or an error quotes it (at most 200 bytes),
-- its credentials masked where the parser could not find them: the log's
-- redaction masks "user:pass@" tokens, but a space in the password cut
-- one in two, and the host:port:user:pass export of paid lists has no '@'.
function M.show_line(line)
  local scheme, rest = line:match("^(%s*%a[%w+.-]*://)(.*)$")
  if not scheme then scheme, rest = "", line end
  local at = rest:match("^[^\n]*()@")
  if at then return (scheme .. "***" .. rest:sub(at)):sub(1, 200) end
  local hostport, sep = rest:match("^(%s*%[[^%]]*%]:%d+)([:%s])")
  if not hostport then hostport, sep = rest:match("^(%s*[^%s:/%[%]]+:%d+)([:%s])") end
  if hostport then return (scheme .. hostport .. sep .. "***"):sub(1, 200) end
  return line:sub(1, 200)
end

-- The first bad line of a list in a warning: quoted, and why it is no
-- proxy (a list of 500 "http://h:3128/" lines said only which line).
function M.show_bad(line, why)
  return ("%q"):format(M.show_line(line)) .. (why and (" (" .. why .. ")") or "")
end

-- non-blocking and regular files only (a FIFO hung open() for good)
local function read_file(path)
  local data, err = core.read_file(path, MAX_BYTES)
  if not data then return nil, "cannot read: " .. err end
  return data
end

-- The path of a local list: "file://PATH", or a bare path (no
-- "scheme://"), as the CLI has always taken them; else nil.
function M.file_path(url)
  local path = url:match("^[Ff][Ii][Ll][Ee]://(.+)$")
  if path then return path end
  if url ~= "" and not url:match("^%a[%w+.-]*://") then return url end
end

-- Calls done(body) or done(nil, err) from the loop when the GET ends.
local function download(url, done)
  local id = core.fetch({ url = url, timeout = M.FETCH_TIMEOUT, max_body = MAX_BYTES })
  runtime.on_op(id, function(res)
    runtime.on_op(id, nil)
    if res.err then return done(nil, res.err) end
    if res.status < 200 or res.status > 299 then return done(nil, "HTTP " .. res.status) end
    done(res.body)
  end)
end

-- Parses a list body (DESIGN.md sections 4 and 11). Returns keys
-- (canonical, duplicates merged, in list order), the number of bad lines,
-- the first bad line and what is wrong with it. scheme: the protocol of
-- bare host:port lines (default socks5); a line's own scheme wins.
function M.parse(body, scheme)
  local keys, seen, bad, first, first_why = {}, {}, 0, nil, nil
  for line in body:gmatch("[^\n]+") do
    local key, why = core.parse_proxy(line, scheme)
    if key then
      if not seen[key] then
        seen[key] = true
        keys[#keys + 1] = key
      end
    elseif key == nil then
      bad = bad + 1
      if not first then first, first_why = line, why end
    end
  end
  return keys, bad, first, first_why
end

-- The list in a body, or nil, why the body is no list.
-- Every waiter hears the result, even if one of them fails.
local function notify(waiting, a, b)
  local failed
  for _, f in ipairs(waiting) do
    local ok, err = pcall(f, a, b)
    if not ok then failed = failed or err end
  end
  if failed then error(failed, 0) end
end

-- Reads a local list or downloads a remote one into done(body, err);
-- false (done never called) for a URL of no kind a source can be.
local function obtain(url, done)
  if M.file_path(url) then
    done(read_file(M.file_path(url)))
  elseif url:match("^[Hh][Tt][Tt][Pp][Ss]?://") then
    download(url, done)
  else
    return false
  end
  return true
end

local function unsupported(shown)
  return "unsupported source URL " .. ("%q"):format(shown) .. " (a path, file://, http:// or https://)"
end

local function digest(url, name, body, err, scheme)
  local shown = M.redact(url)
  if not body then return nil, shown .. ": " .. err end
  local keys, bad, first, why = M.parse(body, scheme)
  if #keys == 0 then
    -- an error page or a broken list: keeping the current list is better
    -- than retiring every proxy
    if bad == 0 then return nil, shown .. ": no proxies in the list" end
    return nil, string.format("%s: no proxies in %d line(s) (not a proxy list?), first: %s",
      shown, bad, M.show_bad(first, why))
  end
  if bad > 0 then
    log.emit("warn", name, string.format("source %s: skipped %d bad line(s), first: %s",
      shown, bad, M.show_bad(first, why)))
  end
  return { keys = keys, url = url }
end

-- Calls cb(list) with the list { keys = {...}, url = url }, or cb(nil,
-- reason): at once for a file:// list or a reused one, else from the loop
-- when the fetch ends. opts: max_age (seconds a fetched list is reused,
-- default 0) and name (the log prefix of the warning about bad lines,
-- written once per fetch) and scheme (of the list's bare lines).
function M.fetch(url, opts, cb)
  if type(url) ~= "string" then return cb(nil, "source must be a URL string") end
  opts = opts or {}
  -- one URL read under two schemes is two lists
  local ck = opts.scheme and opts.scheme ~= "socks5" and (url .. "#" .. opts.scheme) or url
  local c = cache[ck]
  if c and core.now() - c.at < (opts.max_age or 0) then return cb(c.list) end
  if inflight[ck] then
    table.insert(inflight[ck], cb)
    return
  end
  local waiting = { cb }
  inflight[ck] = waiting
  local function done(body, err)
    inflight[ck] = nil
    local ok, list, why = pcall(digest, url, opts.name, body, err, opts.scheme)
    if not ok then list, why = nil, tostring(list) end
    if list then cache[ck] = { list = list, at = core.now() } end
    notify(waiting, list, why)
  end
  if not obtain(url, done) then
    inflight[ck] = nil
    cb(nil, unsupported(M.redact(url)))
  end
end

-- Calls cb(body) with a source's raw text, or cb(nil, reason): at once for
-- a local list or a reused one, else from the loop. A pool parses it a
-- slice at a time (core.list_load, lua/scatter/feed.lua), so a list of
-- millions of lines never becomes a Lua table of keys. Shared like fetch:
-- one GET per URL for concurrent callers, reused while younger than
-- opts.max_age (one body serves every scheme it is read under).
local bodies, body_waiting = {}, {}
function M.fetch_body(url, opts, cb)
  if type(url) ~= "string" then return cb(nil, "source must be a URL string") end
  local shown = M.redact(url)
  local c = bodies[url]
  if c and core.now() - c.at < ((opts and opts.max_age) or 0) then return cb(c.body) end
  if body_waiting[url] then
    table.insert(body_waiting[url], cb)
    return
  end
  local waiting = { cb }
  body_waiting[url] = waiting
  local function done(body, err)
    body_waiting[url] = nil
    -- a local file is read again (cheap), not kept: a big list's text
    -- would stay in memory for max_age
    if body and not M.file_path(url) then bodies[url] = { body = body, at = core.now() } end
    notify(waiting, body, body == nil and (shown .. ": " .. tostring(err)) or nil)
  end
  if not obtain(url, done) then
    body_waiting[url] = nil
    cb(nil, unsupported(shown))
  end
end

-- The blocking form of fetch: returns the list or nil, reason.
function M.load(url, opts)
  local w = runtime.waiter()
  M.fetch(url, opts, function(list, err) runtime.wake(w, list, err) end)
  return runtime.block(w)
end

-- Forgets cached lists (specs; a pool that must see a change at once).
function M.forget(url)
  if not url then
    cache, bodies = {}, {}
    return
  end
  bodies[url] = nil
  for ck in pairs(cache) do
    if ck == url or ck:sub(1, #url + 1) == url .. "#" then cache[ck] = nil end
  end
end

-- A pool's source (a URL, or { url =, scheme = }): its URL, the scheme of
-- its bare lines, and the name its list goes by in a pool and its state
-- file (the URL, with "#scheme" for a scheme other than socks5).
function M.source(src)
  local url, scheme = src, "socks5"
  if type(src) == "table" then url, scheme = src.url, src.scheme or "socks5" end
  if scheme == "socks5h" then scheme = "socks5" end
  local id = scheme == "socks5" and url or (url .. "#" .. scheme)
  return url, scheme, id
end

return M
