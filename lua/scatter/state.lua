-- State files (DESIGN.md section 5): a versioned JSON snapshot of each
-- pool's proxies and their per-host health, restored when a pool opens and
-- written FIRST_SAVE (10) seconds after the first outcomes, then every
-- state_save_interval, and when it closes.
--
-- One file can hold several pools (a router's pools naming the same
-- state_file), one section per pool name, always written as one document.
-- The JSON is lua-cjson's: rows are read from the scheduler and encoded in
-- slices, and a scatter thread yields between slices, so a snapshot of
-- 10^5 pairs never holds the loop for long. The write itself (temp file,
-- fsync, rename, fsync of the directory) runs off the loop, in C.
--
-- File layout (version 2):
--   { "format": "scatter-state", "version": 2, "saved_at": <unix time>,
--     "proxy_fields": [...], "pair_fields": [...],      -- the row layouts
--     "pools": { "<pool name>": {
--         "proxies": [ [key, attempts, successes, dead_since], ... ],
--         "hosts":   { "<host>": [ [proxy row, outcomes, successes,
--                       consecutive_fails, last_success, cooldown_until,
--                       latency_ewma, latency_p50, latency_p95], ... ] },
--         "sources": { "<url>": [proxy row, ...] },
--         "recent": "0110...", "finished": <count> } } }
-- recent is adaptive K's window of the pool's last outcomes (oldest first,
-- 1 a success) and finished the attempts it has finished: a warm start
-- with them skips the cold-start doubling (issue 17). Version 1 has
-- neither and is still read: its pairs' restored outcomes stand in.
-- Times are unix seconds (-1: never, 0: no cooldown), latencies seconds
-- (-1: unknown); src/lua/state.c has the details.
local core = require("scatter.core")
local runtime = require("scatter.runtime")
local log = require("scatter.log")

local json = require("cjson").new() -- settings of our own, not the caller's
local jsafe = require("cjson.safe").new()

local M = {}
M.FORMAT, M.VERSION = "scatter-state", 2
M.READS = { [1] = true, [2] = true } -- versions this scatter reads
M.PROXY_FIELDS = { "key", "attempts", "successes", "dead_since" }
M.PAIR_FIELDS = {
  "proxy", "outcomes", "successes", "consecutive_fails", "last_success",
  "cooldown_until", "latency_ewma", "latency_p50", "latency_p95",
}
M.CHUNK = 1000    -- rows read and encoded at a time (about 2 ms)
M.SLICE = 0.004   -- seconds of encoding before a thread yields to the loop
M.MODE = 384      -- 0600: keys can hold proxy credentials
M.MAX_BYTES = 512 * 1024 * 1024 -- a state file larger than this is refused
M.FIRST_SAVE = 10 -- seconds from the first outcomes to the first save

local files = {} -- path -> File, while a pool uses it
local File = {}
File.__index = File

local function wall_offset()
  local wall, mono = core.state_clock()
  return wall - mono
end

-- ---- reading ----

local function same_list(a, b)
  if type(a) ~= "table" or #a ~= #b then return false end
  for i = 1, #b do
    if a[i] ~= b[i] then return false end
  end
  return true
end

local function check_sources(sec, name)
  if sec.sources == nil then return true end
  if type(sec.sources) ~= "table" then return nil, "pools[" .. name .. "].sources is not an object" end
  local n = #sec.proxies
  for url, rows in pairs(sec.sources) do
    if type(url) ~= "string" or type(rows) ~= "table" then
      return nil, "pools[" .. name .. "].sources has an entry that is not url = [rows]"
    end
    for _, r in pairs(rows) do
      if type(r) ~= "number" or r ~= math.floor(r) or r < 1 or r > n then
        return nil, "pools[" .. name .. "].sources[" .. ("%q"):format(url) .. "] has a bad proxy row"
      end
    end
  end
  return true
end

-- Returns the decoded sections (name -> section), {} for a missing file,
-- or nil, why for a file that cannot be used (and true when it is a FIFO,
-- a socket or a device: a save's rename would replace it; one over a
-- directory fails, and says so).
local function read_sections(path)
  -- a FIFO or a device is refused, not read (open() hung on a FIFO, and
  -- /dev/zero was read until memory ran out); size capped like sources
  local data, err, code = core.read_file(path, M.MAX_BYTES)
  if not data then
    if code == 2 then return {} end -- ENOENT: a cold start, nothing to say
    return nil, err, code == 0 and err ~= "is a directory"
  end
  local doc, derr = jsafe.decode(data)
  if doc == nil then return nil, "not JSON (" .. tostring(derr) .. "; truncated?)" end
  if type(doc) ~= "table" or doc.format ~= M.FORMAT then return nil, "not a scatter state file" end
  if not M.READS[doc.version] then
    local v = doc.version
    return nil, "version " .. (type(v) == "string" and ("%q"):format(v) or tostring(v))
      .. ", this scatter reads versions 1 to " .. M.VERSION
  end
  if not same_list(doc.proxy_fields, M.PROXY_FIELDS) or not same_list(doc.pair_fields, M.PAIR_FIELDS) then
    return nil, "unknown row layout (proxy_fields, pair_fields)"
  end
  if type(doc.pools) ~= "table" then return nil, "pools is not an object" end
  for name, sec in pairs(doc.pools) do
    if type(name) ~= "string" then return nil, "pools has a key that is not a name" end
    local ok, why = core.state_check(sec)
    if not ok then return nil, "pools[" .. name .. "]: " .. why end
    ok, why = check_sources(sec, name)
    if not ok then return nil, why end
  end
  return doc.pools
end

-- For specs and tools: the sections of a state file, {} when it does not
-- exist, or nil, why it cannot be used.
M.read = read_sections

-- ---- encoding ----

local function pauser(can_yield)
  local last = core.now()
  return function()
    if can_yield and core.now() - last >= M.SLICE then
      coroutine.yield() -- a bare yield: the runtime resumes us next pass
      last = core.now()
    end
  end
end

-- Appends a JSON array of rows; chunk(from) returns rows starting at
-- 0-based position `from` and the total.
local function encode_rows(out, chunk, pause)
  out[#out + 1] = "["
  local from, first = 0, true
  repeat
    local rows, total = chunk(from)
    if #rows > 0 then
      local s = json.encode(rows)
      out[#out + 1] = (first and "" or ",") .. s:sub(2, -2)
      first = false
    end
    from = from + M.CHUNK
    pause()
  until from >= total
  out[#out + 1] = "]"
end

local function slice_of(t)
  return function(from)
    return { unpack(t, from + 1, math.min(from + M.CHUNK, #t)) }, #t
  end
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- A live pool's section. The row buffers are reused from slice to slice:
-- fresh tables for 10^5 rows would make the GC stall the loop.
local function encode_pool(pool, pause)
  local c, off, out = pool.c, wall_offset(), { '{"proxies":' }
  local pbuf, rbuf = {}, {}
  encode_rows(out, function(from) return core.state_proxies(c, from, M.CHUNK, off, pbuf) end, pause)
  out[#out + 1] = ',"hosts":{'
  for i, h in ipairs(core.state_hosts(c)) do
    out[#out + 1] = (i > 1 and "," or "") .. json.encode(h) .. ":"
    encode_rows(out, function(from) return core.state_pairs(c, i, from, M.CHUNK, off, rbuf) end, pause)
  end
  local lists = pool.feed and pool.feed:source_rows() or {}
  local recent, finished = core.state_recent(c)
  out[#out + 1] = '},"sources":' .. (next(lists) and json.encode(lists) or "{}")
    .. ',"recent":' .. json.encode(recent) .. ',"finished":' .. json.encode(finished) .. "}"
  return out
end

-- A section read from the file whose pool is not open: kept as it was.
local function encode_loaded(sec, pause)
  local out = { '{"proxies":' }
  encode_rows(out, slice_of(sec.proxies), pause)
  out[#out + 1] = ',"hosts":{'
  for i, h in ipairs(sorted_keys(sec.hosts)) do
    out[#out + 1] = (i > 1 and "," or "") .. json.encode(h) .. ":"
    encode_rows(out, slice_of(sec.hosts[h]), pause)
  end
  local lists = sec.sources or {}
  out[#out + 1] = '},"sources":' .. (next(lists) and json.encode(lists) or "{}")
  if sec.recent then out[#out + 1] = ',"recent":' .. json.encode(sec.recent) end
  if sec.finished then out[#out + 1] = ',"finished":' .. json.encode(sec.finished) end
  out[#out + 1] = "}"
  return out
end

-- A section without adaptive K's window (version 1): the restored pairs'
-- outcomes stand in for it, spread evenly, and count as finished attempts.
local function recent_of_pairs(sec)
  local n, ok = 0, 0
  for _, rows in pairs(sec.hosts) do
    for _, r in ipairs(rows) do
      n, ok = n + r[2], ok + r[3]
    end
  end
  local m = math.min(n, 256)
  local bits, acc = {}, 0
  for i = 1, m do
    acc = acc + ok / n
    if acc >= 0.5 then
      bits[i], acc = "1", acc - 1
    else
      bits[i] = "0"
    end
  end
  return table.concat(bits), n
end

-- A live pool's section as JSON parts (scatter.share publishes it).
M.encode_section = encode_pool

-- ---- one file ----

local function open_file(path)
  local F = setmetatable({
    path = path, pools = {}, frozen = {}, last = {}, loaded = {},
    busy = false, queue = {}, interval = math.huge,
  }, File)
  local sections, err, special = read_sections(path)
  if special then
    -- a save renames its temp file over the path: that replaced a FIFO, or
    -- /dev/null itself (state_file = "/dev/null" for no state), with a
    -- file; nor is a lock file made beside it
    F.unusable = err
    log.emit("warn", nil, string.format("state file %s: %s; starting cold, and this process will not save it",
      path, err))
    return F
  end
  -- one owner per state file: a second process overwrote the first's
  -- learning without a word; now it starts warm from the file but never
  -- writes it
  local fd, lerr, pid = core.lock_file(path .. "-lock")
  if fd then
    F.lockfd = fd
  elseif lerr ~= "locked" then
    -- no lock to be had here (a read-only directory...): saving will tell
    log.emit("debug", nil, "state file " .. path .. ": cannot lock " .. path .. "-lock: " .. lerr)
  else
    F.readonly = true
    log.emit("warn", nil, string.format("state file %s: %s; starting warm from it, read-only: this process will not save it",
      path, "in use by another process" .. (pid > 0 and (" (pid " .. pid .. ")") or "")))
  end
  if sections then
    F.loaded = sections
  else
    -- left as it is: only a good snapshot of ours replaces it
    log.emit("warn", nil, string.format("state file %s: %s; starting cold", path, err))
  end
  return F
end

function File:lock()
  while self.busy do
    local w = runtime.waiter()
    self.queue[#self.queue + 1] = w
    runtime.block(w)
  end
  self.busy = true
end

function File:unlock()
  self.busy = false
  local q = self.queue
  self.queue = {}
  for _, w in ipairs(q) do runtime.wake(w) end
end

-- Runs fn under the file's lock; errors are raised after unlocking.
function File:locked(fn, ...)
  self:lock()
  local res = { pcall(fn, ...) }
  self:unlock()
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2)
end

-- Encodes every section and writes the file. fresh: encode the open pools
-- now (periodic saves); otherwise reuse their latest encoding (a close
-- saves its own frozen section and leaves the others as last written).
function File:write(fresh, can_yield)
  if self.readonly then return nil, "read-only (another process owns the state file)" end
  if self.unusable then return nil, self.path .. ": " .. self.unusable end
  local pause = pauser(can_yield)
  local names, open = {}, 0
  for n in pairs(self.pools) do
    names[n] = true
    open = open + 1
  end
  local shared = open > 1
  for n in pairs(self.frozen) do names[n] = true end
  for n in pairs(self.loaded) do names[n] = true end
  local wall = core.state_clock()
  local out = { '{"format":' .. json.encode(M.FORMAT) .. ',"version":' .. M.VERSION
    .. ',"saved_at":' .. json.encode(wall) .. ',"proxy_fields":' .. json.encode(M.PROXY_FIELDS)
    .. ',"pair_fields":' .. json.encode(M.PAIR_FIELDS) .. ',"pools":{' }
  for i, name in ipairs(sorted_keys(names)) do
    local parts
    if self.pools[name] then
      parts = (not fresh and self.last[name]) or encode_pool(self.pools[name], pause)
      -- kept only for a close of another pool of the file to reuse
      if shared then self.last[name] = parts end
    elseif self.frozen[name] then
      parts = self.frozen[name]
    else
      parts = encode_loaded(self.loaded[name], pause)
      self.frozen[name], self.loaded[name] = parts, nil
    end
    out[#out + 1] = (i > 1 and "," or "") .. json.encode(name) .. ":"
    for _, p in ipairs(parts) do out[#out + 1] = p end
  end
  out[#out + 1] = "}}\n"
  local res = runtime.await(core.write_atomic(self.path, out, M.MODE))
  if res.status ~= 0 then
    log.emit("warn", nil, "state file " .. self.path .. ": cannot save: " .. tostring(res.err))
    return nil, res.err
  end
  return true
end

-- True once a pool of the file has an outcome worth keeping.
function File:learnt()
  for _, pool in pairs(self.pools) do
    local ok, m = pcall(pool.c.metrics, pool.c)
    if ok and m.attempts_finished > 0 then return true end
  end
  return false
end

-- The first save comes FIRST_SAVE seconds after the first outcomes (a
-- kill -9 in a crawl's first state_save_interval lost all it learnt),
-- then one every interval.
function File:arm()
  if self.timer or not next(self.pools) then return end
  local first = not self.saved_once
  if first and not self.first_due then self.first_due = core.now() + self.interval end
  local delay = first and math.min(M.FIRST_SAVE, self.interval) or self.interval
  self.timer = runtime.after(delay, function()
    self.timer = nil
    if not next(self.pools) then return end
    -- nothing learnt yet: look again, but save by the interval regardless
    if first and not self:learnt() and core.now() < self.first_due then return self:arm() end
    runtime.spawn(function()
      if next(self.pools) then self:locked(self.write, self, true, true) end
      self.saved_once = true
      self:arm()
    end)
  end)
end

-- ---- pools ----

-- Times past now (a snapshot saved while the clock ran far ahead, then set
-- right) are brought back: a cooldown until the year 5000 locked a proxy
-- out for good, and a proxy dead "since" the future was never probed
-- again. A cooldown is at most cooldown_max from now, as a fresh one is.
local function clamp_times(sec, now, cooldown_max)
  for _, row in ipairs(sec.proxies) do
    if row[4] > now then row[4] = now end
  end
  for _, rows in pairs(sec.hosts) do
    for _, r in ipairs(rows) do
      if r[5] > now then r[5] = now end
      if r[6] > now + cooldown_max then r[6] = now + cooldown_max end
    end
  end
end

local Handle = {}
Handle.__index = Handle

-- Opens (or joins) the pool's state file and restores its section.
-- Returns nil when the pool has no state_file, else a handle and what was
-- restored: { ids = { key = proxy id }, lists = { url = { keys } } } or nil.
function M.attach(pool, where)
  local path = pool.cfg.state_file
  if not path then return nil end
  local F = files[path] or open_file(path)
  files[path] = F
  local name = pool.name or "default"
  if F.pools[name] then
    error(string.format("%s: state_file %q is already used by an open pool named %q (give each pool its own name)",
      where, path, name), 0)
  end
  local sec = F.loaded[name]
  if not sec and F.frozen[name] then -- closed earlier in this process
    sec = json.decode(table.concat(F.frozen[name]))
  end
  F.pools[name], F.loaded[name], F.frozen[name] = pool, nil, nil
  F.interval = math.min(F.interval, pool.cfg.state_save_interval)
  if F.timer then -- a shorter interval takes effect now
    F.timer.cancelled, F.timer = true, nil
  end
  F:arm()
  local h = setmetatable({ file = F, name = name, pool = pool }, Handle)
  if not sec then return h, nil end
  clamp_times(sec, core.state_clock(), pool.cfg.cooldown_max)
  local ids = core.state_restore(pool.c, sec, wall_offset())
  if sec.recent then
    core.state_recent_restore(pool.c, sec.recent, sec.finished or #sec.recent)
  else
    core.state_recent_restore(pool.c, recent_of_pairs(sec))
  end
  local restored = { ids = {}, lists = {} }
  for i, row in ipairs(sec.proxies) do restored.ids[row[1]] = ids[i] end
  for url, rows in pairs(sec.sources or {}) do
    local keys = {}
    for j, r in ipairs(rows) do keys[j] = sec.proxies[r][1] end
    restored.lists[url] = keys
  end
  return h, restored
end

-- Writes the file now (all open pools encoded afresh) and waits.
function Handle:save()
  local F = self.file
  return F:locked(F.write, F, true, runtime.current() ~= nil)
end

-- The pool is closing: its final section is encoded now, while its
-- scheduler still exists. Returns a function that writes the file and
-- waits for the write (call it after the scheduler is gone).
function Handle:freeze()
  local F, name = self.file, self.name
  local can_yield = runtime.current() ~= nil
  F:locked(function()
    F.frozen[name] = encode_pool(self.pool, pauser(can_yield))
    F.pools[name], F.last[name] = nil, nil
  end)
  return function()
    local ok, err = F:locked(F.write, F, false, can_yield)
    if not next(F.pools) then
      if F.timer then F.timer.cancelled = true end
      if files[F.path] == F then files[F.path] = nil end
      if F.lockfd then
        core.unlock_file(F.lockfd)
        F.lockfd = nil
      end
    end
    return ok, err
  end
end

return M
