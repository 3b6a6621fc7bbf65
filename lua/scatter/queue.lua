-- scatter.queue: the crawl frontier's public face (DESIGN.md section 8).
-- It checks and normalises what users give (URLs, options, meta, keys),
-- then hands plain records to a backend chosen by the options:
--
--   scatter.queue{ path = FILE }     scatter.queue_sqlite, one SQLite file
--   scatter.queue{}                  scatter.queue_sqlite on ":memory:"
--   scatter.queue{ redis = URL, name = NAME }   scatter.queue_redis (section 9)
--
-- ---- The backend interface (what this file and scatter.crawl call) ----
--
-- A backend module returns { open = function(opts) -> backend | nil, err }.
-- opts is the user's table (path / redis / name / lease / commit_ms ...).
-- Every method returns nil, err on failure (err names what went wrong);
-- none raises on bad state. Records are plain tables:
--
--   rec = { key =, url =, method =, headers = JSON string or nil,
--           body = string or nil, priority = integer, meta = JSON string }
--   item (from lease) = rec's fields + { id = backend's own handle,
--           tries = tries so far INCLUDING this one, err = last error or nil }
--
-- b:push(recs)          -> n_new, flags   insert those whose key was never
--                          seen (flags[i] = true when recs[i] was new);
--                          durable by the next commit (see flush)
-- b:push_urls(urls, keys) -> n_new   optional: push for a list of plain
--                          URL strings (GET, priority 0, no meta), keys[i]
--                          the key of urls[i]: push_many's common case
--                          without a record table per URL
-- b:lease(n, now)       -> list of at most n items, highest priority first,
--                          then push order, only those due (due <= now);
--                          each is now leased and its tries incremented
-- b:complete(item, recs, line[, later])
--                       -> n_new   ONE atomic step: the item done, recs
--                          (nil when the try pushed nothing) pushed (deduplicated as push does), and line
--                          (the handler's JSON output, no newline, or nil)
--                          appended to the output. Nothing of it is
--                          visible after a crash unless all of it is.
--                          A backend may take later(n, lost) and return 0
--                          at once, calling later with n_new when in
--                          (Redis; embedded: while a group's sync runs);
--                          lost is true when the item turned out not to
--                          be this try's to finish (Redis: another worker
--                          had reclaimed and finished it): nothing of it
--                          was recorded
-- b:watch(w, secs)      optional: wake waiter w when the queue may have
--                          changed, at most secs later (math.huge: no
--                          bound); scatter.crawl's idle wait (Redis: a
--                          blocking read instead of polling)
-- b:fail(item, err, retry_at)
--                       -> true    retry_at (seconds, core.now() clock):
--                          queued again, due then; nil: failed for good,
--                          keeping err as its last error
-- b:release(items)      -> n       optional: items leased by this process
--                          queued again untried (their try not counted):
--                          what a crawl that ended on an error still held
-- b:renew()             -> true    every lease this process holds is still
--                          held (Redis extends them; the embedded queue
--                          needs nothing). scatter.crawl calls it every
--                          b.lease_secs / 3 seconds (b.lease_secs: the
--                          backend's lease length, default 60)
-- b:next_due(now)       -> seconds until the earliest queued item is due
--                          (0 when one is due now), nil when none is queued
-- b:flush()             -> true    make everything so far durable now
--                          (grouped commits: a backend may hold writes for
--                          a few ms; flush, close, and any read such as
--                          stats commit them)
-- b:unsettled()         -> n       optional, with commit_due: tries settled
--                          (complete or fail) since the last commit, which
--                          a kill -9 would have redone; scatter.crawl keeps
--                          their slots until they commit (section 8)
-- b:commit_due()        -> t       when the open group commits by age
--                          (core.now() clock), nil when none is open
-- b:commit_soon()       -> true    optional: start committing the open
--                          group without waiting for it (flush otherwise)
-- b:committing()        -> bool    optional: a commit is in flight
-- b:on_commit(fn, on)   optional: fn() after every commit while on
-- b:stats()             -> { queued =, leased =, done =, failed =, seen = }
-- b:failed()            -> iterator of items in state failed (err = last error)
-- b:retry_failed()      -> count   failed items queued again, tries reset
-- b:output(path)        -> true    where complete's lines go. Embedded: the
--                          file at path; the committed length is stored in
--                          each commit and an uncovered tail is cut here (so
--                          each done item's line is in the file exactly
--                          once after any crash); lines are written and
--                          fdatasync'd before the commit that covers them.
--                          Redis keeps the lines itself (export writes them)
--                          and may ignore path.
-- b:export(fh)          -> count   write every item as a JSON line to the
--                          file handle fh (Redis: the kept output lines)
-- b:close()             -> true    flush, release leases this process holds
--                          (queued again), close
--
-- scatter.crawl uses: output, lease, complete, fail, renew, next_due,
-- flush, stats (through the queue object), watch, unsettled, commit_due,
-- commit_soon, committing, on_commit. It ends when stats() shows
-- queued == 0 and leased == 0 and it holds no item itself, so stats must
-- count the whole queue (Redis: every worker's leases), and it raises when
-- a call returns nil, err (the queue cannot record work: stop, lose nothing).
-- Times (now, retry_at) are core.now()'s monotonic clock; a backend that
-- stores them converts (queue_sqlite keeps wall-clock times).
local core = require("scatter.core")

local M = {}

local function cjson() return require("cjson.safe") end

local Queue = {}
Queue.__index = Queue

M.Queue = Queue
M.open = setmetatable({}, { __mode = "k" }) -- open queues, for scatter.close_all

-- Each backend's options, and what a value must be: a typo must not give
-- an in-memory queue where a file was meant.
local OPTIONS = {
  sqlite = { path = "file", readonly = "boolean", commit_ms = "ms", commit_items = "count", cache_kib = "kib" },
  redis = { redis = "url", name = "string", lease = "number", redis_timeout = "number", retry_for = "number",
    readonly = "boolean" },
}
local WANT = {
  ms = "a number of milliseconds >= 0", count = "an integer >= 1", kib = "a number of KiB >= 1",
  file = "a non-empty file name", boolean = "true or false",
}

local function check_options(opts)
  local kind = opts.redis ~= nil and "redis" or "sqlite"
  local known = OPTIONS[kind]
  for k, v in pairs(opts) do
    local want = known[k]
    if not want then
      if OPTIONS.redis[k] or OPTIONS.sqlite[k] then
        return nil, "scatter.queue: option '" .. tostring(k) .. "' is for " ..
          (kind == "redis" and "a queue file (path =), not a Redis queue" or "a Redis queue (redis =)")
      end
      return nil, "scatter.queue: unknown option '" .. tostring(k) .. "'"
    end
    local bad
    if want == "boolean" then
      bad = type(v) ~= "boolean"
    elseif want == "file" then
      bad = type(v) ~= "string" or v == ""
    elseif want == "ms" then
      bad = type(v) ~= "number" or v ~= v or v < 0 or v == math.huge
    elseif want == "count" then
      bad = type(v) ~= "number" or v < 1 or v ~= math.floor(v) or v == math.huge
    elseif want == "kib" then
      bad = type(v) ~= "number" or v ~= v or v < 1 or v == math.huge
    end
    if bad then
      return nil, ("scatter.queue: %s must be %s, got %s"):format(k, WANT[want],
        type(v) == "string" and ("'" .. v .. "'") or tostring(v))
    end
  end
  return true
end

local function load_backend(opts)
  local cok, cerr = check_options(opts)
  if not cok then return nil, cerr end
  if opts.redis ~= nil then
    if type(opts.redis) ~= "string" then
      return nil, "scatter.queue: redis must be a URL string, got " .. type(opts.redis)
    end
    local ok, mod = pcall(require, "scatter.queue_redis")
    if not ok then
      if tostring(mod):find("module 'scatter.queue_redis' not found", 1, true) then
        return nil, "scatter.queue: this scatter has no Redis backend (module scatter.queue_redis is missing)"
      end
      error(mod, 0)
    end
    return mod
  end
  if opts.path ~= nil and type(opts.path) ~= "string" then
    return nil, "scatter.queue: path must be a file name string, got " .. type(opts.path)
  end
  -- (there is nothing to read in a new in-memory queue: a path left out,
  -- which gave an empty queue that said 0 of everything)
  if opts.readonly and opts.path == nil then
    return nil, "scatter.queue: readonly = true needs path = (the queue file to read)"
  end
  return require("scatter.queue_sqlite")
end

local NO_OPTS = {} -- only read
local PUSH_FIELDS = { url = true, method = true, headers = true, body = true, priority = true, meta = true,
  key = true }

-- Normalises one push: url string plus options -> rec, or nil, err.
function M.record(url, o, where)
  if type(url) == "table" and o == nil then
    o = url
    url = o.url
  end
  if type(url) ~= "string" then return nil, where .. ": URL string expected, got " .. type(url) end
  if o ~= nil and type(o) ~= "table" then return nil, where .. ": options table expected, got " .. type(o) end
  o = o or NO_OPTS
  for k in pairs(o) do
    if not PUSH_FIELDS[k] then return nil, where .. ": unknown option '" .. tostring(k) .. "'" end
  end
  local canon, cerr = core.url_canonical(url)
  if not canon then return nil, where .. ": " .. ("%q"):format(url) .. ": " .. cerr end
  local method = o.method or "GET"
  if method ~= "GET" and (type(method) ~= "string" or not method:match("^%u+$")) then
    return nil, where .. ": method must be an upper-case string, got " .. tostring(method)
  end
  local headers
  if o.headers ~= nil then
    if type(o.headers) ~= "table" then return nil, where .. ": headers must be a table" end
    for k, v in pairs(o.headers) do
      -- a list of values is a repeated header, as a request takes it
      local ok = type(k) == "string" and (type(v) == "string" or type(v) == "number")
      if type(k) == "string" and type(v) == "table" then
        ok = true
        for i, x in pairs(v) do
          if type(i) ~= "number" or i < 1 or i > #v or (type(x) ~= "string" and type(x) ~= "number") then ok = false end
        end
      end
      if not ok then return nil, where .. ": headers must map names to strings (or lists of strings)" end
    end
    -- what a request would refuse is refused now, not once a try
    -- (a URL too long, a header name or value that cannot be sent)
    local ok, herr = require("scatter.pool").check_request({ method = method, headers = o.headers }, url)
    if not ok then return nil, where .. ": " .. tostring(herr):gsub("^invalid_request: ", "") end
    headers = cjson().encode(o.headers)
  elseif #url > 65536 then
    return nil, where .. ": url longer than 65536 bytes"
  end
  if o.body ~= nil and type(o.body) ~= "string" then return nil, where .. ": body must be a string" end
  local prio = o.priority or 0
  if type(prio) ~= "number" or prio ~= math.floor(prio) or math.abs(prio) > 2 ^ 52 then
    -- (the range said, the integer shown whole: 2^62 is an integer too,
    -- and tostring showed it as 4.6116860184274e+18)
    return nil, where .. ": priority must be an integer from -2^52 to 2^52, got " ..
      (type(prio) ~= "number" and (type(prio) .. " " .. tostring(prio))
        or (prio == math.floor(prio) and math.abs(prio) < 2 ^ 63) and ("%d"):format(prio) or tostring(prio))
  end
  local meta = "{}"
  if o.meta ~= nil then
    if type(o.meta) ~= "table" then return nil, where .. ": meta must be a table, got " .. type(o.meta) end
    local s, merr = require("scatter.json").encode(o.meta)
    if not s then return nil, where .. ": meta cannot be encoded as JSON: " .. tostring(merr) end
    meta = s
  end
  local key = o.key
  if key == nil then
    key = method .. " " .. canon
    if o.body and o.body ~= "" then key = key .. " " .. core.hash(o.body) end
  elseif type(key) ~= "string" or key == "" then
    return nil, where .. ": key must be a non-empty string"
  end
  return { key = key, url = url, method = method, headers = headers, body = o.body, priority = prio, meta = meta }
end

-- Items as handlers and iterators see them: meta and headers decoded.
function M.item(it)
  local meta = it.meta
  it.meta = (meta == nil or meta == "{}") and {} or cjson().decode(meta) or {}
  if type(it.headers) == "string" then it.headers = cjson().decode(it.headers) end
  return it
end

function M.new(opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    error("scatter.queue: bad argument #1 (options table expected, got " .. type(opts) .. ")", 2)
  end
  local mod, err = load_backend(opts)
  if not mod then return nil, err end
  local b, berr = mod.open(opts)
  if not b then return nil, berr end
  local q = setmetatable({ b = b, opts = opts }, Queue)
  M.open[q] = true
  -- a script that ends without q:close() must not lose its last group of
  -- writes: finalisers run newest first, so this one before the database's
  local sentinel = newproxy(true)
  getmetatable(sentinel).__gc = function() pcall(b.close, b) end
  q._sentinel = sentinel
  return q
end

local function check(self, fname)
  if getmetatable(self) ~= Queue then error("queue:" .. fname .. ": called on a non-queue (use q:" .. fname .. ")", 3) end
  if self.closed then error("queue:" .. fname .. ": the queue is closed", 3) end
end

-- Backend failures are raised: a queue that cannot write must stop the
-- script, not lose pushes silently.
local function must(where, v, err, ...)
  if v == nil then error(where .. ": " .. tostring(err), 3) end
  return v, err, ...
end

function Queue:push(url, o)
  check(self, "push")
  local rec, err = M.record(url, o, "queue:push")
  if not rec then error(err, 2) end
  local _, flags = must("queue:push", self.b:push({ rec }))
  return flags[1] == true
end

function Queue:push_many(list)
  check(self, "push_many")
  if type(list) ~= "table" then error("queue:push_many: bad argument #1 (list expected, got " .. type(list) .. ")", 2) end
  -- both paths stop at the first nil: a hole ({ a, nil, c }, a function
  -- that returned nothing) or a map would drop the rest without a word
  local n, count = #list, 0
  for k in pairs(list) do
    count = count + 1
    local int = type(k) == "number" and k >= 1 and k == math.floor(k)
    if int and k > n then
      error("queue:push_many: item " .. (n + 1) .. " is nil but item " .. k .. " follows (a hole in the list)", 2)
    elseif not int then
      error("queue:push_many: not a list: it has the key " .. (type(k) == "string" and ("'" .. k .. "'") or tostring(k)) ..
        (n > 0 and (" beside items 1 to " .. n) or "") .. " (give a list of URLs or records)", 2)
    end
  end
  if count ~= n then
    for i = 1, n do
      if list[i] == nil then error("queue:push_many: item " .. i .. " is nil (a hole in the list of " .. n .. ")", 2) end
    end
  end
  -- a list of plain URL strings: checked and keyed in one C call; any
  -- other element, or a bad URL, takes the path below, which says what
  local keys = self.b.push_urls and core.url_keys(list, "GET ")
  if keys then return (must("queue:push_many", self.b:push_urls(list, keys))) end
  local recs = {}
  for i, x in ipairs(list) do
    local rec, err = M.record(x, nil, "queue:push_many: item " .. i)
    if not rec then error(err, 2) end
    recs[i] = rec
  end
  return (must("queue:push_many", self.b:push(recs)))
end

function Queue:stats()
  check(self, "stats")
  return (must("queue:stats", self.b:stats()))
end

function Queue:failed()
  check(self, "failed")
  local it = must("queue:failed", self.b:failed())
  return function()
    local x = it()
    if x then return M.item(x) end
  end
end

function Queue:retry_failed()
  check(self, "retry_failed")
  return (must("queue:retry_failed", self.b:retry_failed()))
end

function Queue:flush()
  check(self, "flush")
  return (must("queue:flush", self.b:flush()))
end

function Queue:export(fh)
  check(self, "export")
  return (must("queue:export", self.b:export(fh)))
end

function Queue:close()
  if getmetatable(self) ~= Queue then error("queue:close: called on a non-queue (use q:close)", 2) end
  if self.closed then return true end
  self.closed = true
  M.open[self] = nil
  return (must("queue:close", self.b:close()))
end

Queue.__tostring = function(self)
  return "scatter.queue(" .. (self.opts.redis or self.opts.path or "memory") .. ")"
end

return M
