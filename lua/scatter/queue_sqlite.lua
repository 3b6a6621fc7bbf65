-- The embedded frontier: one SQLite file (WAL), or ":memory:" for
-- scatter.queue{}. Implements the backend interface written at the top of
-- lua/scatter/queue.lua; DESIGN.md section 8 says what it promises. Its
-- writes commit in groups (lua/scatter/queue_commit.lua says how).
--
-- One process writes a queue file at a time (an flock on FILE-lock, which
-- the kernel drops when the process dies); items it held leased are queued
-- again at the next open. Readers (`scatter queue stats`) open read-only
-- beside a running crawl. Memory: SQLite's page cache (cache_kib) and the
-- counters; nothing per item.
local core = require("scatter.core")
local fileio = require("scatter.fileio")
local commit = require("scatter.queue_commit")
local output = require("scatter.queue_output")

local M = {}

M.FORMAT = "scatter-queue"
M.VERSION = 1

local QUEUED, LEASED, DONE, FAILED = 0, 1, 2, 3
M.STATES = { [0] = "queued", "leased", "done", "failed" }

local SCHEMA = [[
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS items(
  id INTEGER PRIMARY KEY,
  key TEXT NOT NULL UNIQUE,
  state INTEGER NOT NULL,
  priority INTEGER NOT NULL,
  due REAL NOT NULL,
  tries INTEGER NOT NULL,
  url TEXT NOT NULL,
  method TEXT NOT NULL,
  headers TEXT,
  body BLOB,
  meta TEXT NOT NULL,
  err TEXT);
CREATE INDEX IF NOT EXISTS items_queued ON items(priority DESC, id) WHERE state = 0;
]]

local COLS = "id, key, url, method, headers, body, priority, meta, tries, err, state"
-- the lease's columns as item fields (st:fetch names them in C: a leased
-- row costs no Lua work); tries and state as they are once leased
local LEASE_COLS = "id, key, url, method, headers, body, priority, meta, tries + 1, err, 'leased'"
local ITEM_FIELDS = { "id", "key", "url", "method", "headers", "body", "priority", "meta", "tries", "err", "state" }

local B = {}
B.__index = B

local function row_item(r)
  return {
    id = r[1], key = r[2], url = r[3], method = r[4], headers = r[5], body = r[6],
    priority = r[7], meta = r[8], tries = r[9], err = r[10], state = M.STATES[r[11]],
  }
end

local function wall_offset()
  local wall, mono = core.state_clock()
  return wall - mono
end

-- "SQLite format 3\0" or an empty file; anything else is not ours.
-- (readonly: an empty file is no queue to read)
local function sniff(path, readonly)
  local fok, ferr = fileio.openable(path)
  if not fok then return nil, ferr end
  local f = io.open(path, "rb")
  if not f then return true end
  local head, err = f:read(16)
  f:close()
  if not head and err then
    if err:find("Is a directory", 1, true) then return nil, "a directory, not a queue file" end
    return nil, err
  end
  head = head or ""
  if head == "" and readonly then return nil, "an empty file, not a scatter queue" end
  if head == "" or head == "SQLite format 3\0" then return true end
  return nil, "not a SQLite database (not a scatter queue file)"
end

local function prep(self, sql)
  local st, err = self.db:prepare(sql)
  if not st then error(err, 0) end
  return st
end

local function check_format(self)
  -- (a SQLite file of someone else's: said as such, not as SQL's error)
  local has = self.db:prepare("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'")
  local _, n = has:one()
  has:finalize()
  if n == 0 then return nil, "a SQLite database but not a scatter queue (no meta table)" end
  if not self.st.meta_get then
    local st, perr = self.db:prepare("SELECT v FROM meta WHERE k = ?")
    if not st then return nil, "a SQLite database but not a scatter queue (" .. tostring(perr) .. ")" end
    self.st.meta_get = st
  end
  local ok, v = self.st.meta_get:one("format")
  if not ok then return nil, "a SQLite database but not a scatter queue (no format mark)" end
  if v ~= M.FORMAT then return nil, "a SQLite database but not a scatter queue (format " .. tostring(v) .. ")" end
  local _, ver = self.st.meta_get:one("version")
  if ver ~= M.VERSION then
    return nil, "scatter queue version " .. tostring(ver) .. ", this scatter reads version " .. M.VERSION
  end
  return true
end

local function count_states(self)
  local c = { [QUEUED] = 0, [LEASED] = 0, [DONE] = 0, [FAILED] = 0 }
  local st = prep(self, "SELECT state, count(*) FROM items GROUP BY state")
  st:bind()
  while true do
    local r, err = st:step()
    if r == nil then error(err, 0) end
    if not r then break end
    c[r[1]] = r[2]
  end
  st:finalize()
  self.counts = c
end

-- Damage deep inside a file (a page of an index that open's count never
-- reads) would otherwise surface mid-crawl as "malformed" from some write:
-- quick_check reads every page once (b-tree structure, cell and free-list
-- checks; not integrity_check's index-against-table join): for a file of
-- 1,000,000 items about 0.3 s from the page cache, 2.9 s from the disk
-- (bench/README.md).
local function integrity(self)
  local st = prep(self, "PRAGMA quick_check(3)")
  st:bind()
  local msgs = {}
  while true do
    local r, err = st:step()
    if r == nil then
      st:finalize()
      error(err, 0)
    end
    if not r then break end
    msgs[#msgs + 1] = tostring(r[1])
  end
  st:finalize()
  if msgs[1] ~= "ok" then error("corrupt (PRAGMA quick_check: " .. table.concat(msgs, "; ") .. ")", 0) end
end

local function setup(self, opts)
  local db = self.db
  local function run(sql)
    local ok, err = db:exec(sql)
    if not ok then error(err, 0) end
  end
  local cache = opts.cache_kib or 8192
  run("PRAGMA cache_size = -" .. math.floor(cache) .. "; PRAGMA temp_store = FILE")
  if self.path ~= ":memory:" then integrity(self) end
  self.st = {}
  do
    -- someone else's database is refused before anything is written to it
    -- (the switch to WAL below is a write that outlives this open)
    local st = prep(self, "SELECT count(*) FROM sqlite_master")
    local _, n = st:one()
    st:finalize()
    if n > 0 or self.readonly then
      local ok, err = check_format(self)
      if not ok then error(err, 0) end
    end
  end
  if not self.readonly then
    if self.path ~= ":memory:" then
      local ok, mode = db:prepare("PRAGMA journal_mode = WAL"):one()
      if not ok or mode ~= "wal" then error("cannot switch to WAL mode (" .. tostring(mode) .. ")", 0) end
    end
    -- WAL + NORMAL: a commit is durable against a crashed process at once
    -- and against power loss from the next checkpoint (which syncs the
    -- WAL). The output file is fdatasynced before every commit, so any
    -- commit that survives covers lines on disk; one that is lost leaves a
    -- longer file, cut at the next open.
    run("PRAGMA synchronous = NORMAL")
    local st = prep(self, "SELECT count(*) FROM sqlite_master")
    local _, n = st:one()
    st:finalize()
    run("BEGIN IMMEDIATE")
    run(SCHEMA)
    if n == 0 then
      run("INSERT INTO meta VALUES('format', '" .. M.FORMAT .. "'), ('version', " .. M.VERSION .. ")")
    end
    local ok, err = check_format(self)
    if not ok then
      db:exec("ROLLBACK")
      error(err, 0)
    end
    -- leases of the process that held the file before are void now
    run("UPDATE items SET state = 0 WHERE state = 1")
    run("COMMIT")
  end
  local s = self.st
  s.meta_set = prep(self, "INSERT OR REPLACE INTO meta VALUES(?, ?)")
  if not self.readonly then
    s.insert = prep(self, "INSERT OR IGNORE INTO items(key, state, priority, due, tries, url, method, headers, "
      .. "body, meta) VALUES(?, 0, ?, 0, 0, ?, ?, ?, ?, ?)")
    -- (UPDATE ... WHERE id IN (SELECT ...) RETURNING measured 10x slower)
    s.take = prep(self, "SELECT " .. LEASE_COLS .. " FROM items WHERE state = 0 AND due <= ? "
      .. "ORDER BY priority DESC, id LIMIT ?")
    s.lease = prep(self, "UPDATE items SET state = 1, tries = tries + 1 WHERE id = ?")
    s.done_all = prep(self, "UPDATE items SET state = 2 WHERE id IN (SELECT value FROM json_each(?)) AND state = 1")
    s.fail = prep(self, "UPDATE items SET state = ?, due = ?, err = ? WHERE id = ? AND state = 1")
  end
  s.min_due = prep(self, "SELECT min(due) FROM items WHERE state = 0")
  count_states(self)
end

function M.open(opts)
  local path = opts.path or ":memory:"
  local self = setmetatable({
    path = path, readonly = opts.readonly and path ~= ":memory:", off = wall_offset(),
    commit_s = (opts.commit_ms or 50) / 1000, commit_items = opts.commit_items or 4096,
    txn = false, txn_n = 0, lines = {}, nlines = 0, out_len = 0, stretch = 1,
    held = {}, done_ids = {}, ndone = 0, nsettled = 0, pending = {}, npending = 0, hooks = {},
  }, B)
  local where = "queue " .. path
  if path ~= ":memory:" then
    local ok, err = sniff(path, self.readonly)
    if not ok then return nil, where .. ": " .. err end
    if not self.readonly then
      local lf = io.open(path .. "-lock", "rb")
      if lf then lf:close() end
      local lock, lerr = fileio.lock(path .. "-lock")
      if not lock then return nil, where .. ": " .. lerr end
      self.lock, self.lock_made = lock, not lf
    end
  end
  local function unlock() -- (a refused open leaves no lock file it made)
    if not self.lock then return end
    self.lock:close()
    if self.lock_made then os.remove(path .. "-lock") end
  end
  local db, derr = core.sqlite_open(path, self.readonly)
  if not db then
    unlock()
    return nil, where .. ": " .. derr
  end
  self.db = db
  local ok, err = pcall(setup, self, opts)
  if not ok then
    db:close()
    unlock()
    err = tostring(err)
    if (err:find("not a database", 1, true) or err:find("malformed", 1, true)) and not err:find("^corrupt") then
      err = err .. " (corrupt, or not a scatter queue file)"
    end
    return nil, where .. ": " .. err
  end
  return self
end

-- ---- grouped commits (queue_commit.lua) ----

local begin, rollback, wrote = commit.begin, commit.rollback, commit.wrote

function B:flush() return commit.flush(self) end

-- Starts committing the open group (its output's sync on the thread
-- pool); the commit is announced to on_commit's functions.
function B:commit_soon() return commit.commit_soon(self) end

-- True while a group's sync is in flight.
function B:committing() return self.sealed ~= nil end

-- fn() runs after every commit (and a failed one) while on.
function B:on_commit(fn, on) self.hooks[fn] = on and true or nil end

-- Tries settled (done or failed) in the open transaction: a kill -9 now
-- would have them requested again. scatter.crawl counts them against its
-- concurrency until they commit (section 8's bound). An in-memory queue
-- dies whole with its process: nothing to bound there.
function B:unsettled() return self.path == ":memory:" and 0 or self.nsettled end

-- When the open group commits by age (nil: none open): scatter.crawl
-- commits then itself when its workers wait for the group.
function B:commit_due()
  if not self.txn or self.commit_s <= 0 then return nil end
  return self.txn_at + self.commit_s * self.stretch
end

-- ---- the interface ----

local function insert(self, recs)
  local ins, flags, n = self.st.insert, {}, 0
  for i = 1, #recs do
    local r = recs[i]
    local c, err = ins:exec(r.key, r.priority, r.url, r.method, r.headers, r.body, r.meta)
    if not c then return nil, err end
    if c > 0 then
      n = n + 1
      flags[i] = true
    else
      flags[i] = false
    end
  end
  self.counts[QUEUED] = self.counts[QUEUED] + n
  return n, flags
end

local function writable(self)
  if self.readonly then return nil, "queue " .. self.path .. " is open read-only" end
  if self.broken then return nil, self.broken end
  -- (a signal's stop closes the queue under workers still in a handle:
  -- their completion must come back as an error, not raise on the handle)
  if self.closed then return nil, "queue " .. self.path .. " is closed" end
  return begin(self)
end

function B:push(recs)
  local ok, err = writable(self)
  if not ok then return nil, err end
  local n, flags = insert(self, recs)
  if not n then return rollback(self, flags) end
  ok, err = wrote(self, #recs)
  if not ok then return nil, err end
  return n, flags
end

function B:push_urls(urls, keys)
  local ok, err = writable(self)
  if not ok then return nil, err end
  local n, ierr = self.st.insert:exec_many(#keys, keys, 0, urls, "GET", nil, nil, "{}")
  if not n then return rollback(self, ierr) end
  self.counts[QUEUED] = self.counts[QUEUED] + n
  ok, err = wrote(self, #keys)
  if not ok then return nil, err end
  return n
end

function B:lease(n, now)
  local ok, err = writable(self)
  if not ok then return nil, err end
  local s = self.st
  local wall = (now or core.now()) + self.off
  s.take:bind(wall, n)
  local out, serr = s.take:fetch(ITEM_FIELDS)
  if not out then return rollback(self, serr) end
  local k = #out
  if k == 0 then return out end
  local c, lerr
  if k == 1 then
    c, lerr = s.lease:exec(out[1].id)
  else
    local ids = {}
    for i = 1, k do ids[i] = out[i].id end
    c, lerr = s.lease:exec_many(k, ids)
  end
  if not c then return rollback(self, lerr) end
  local held = self.held
  for i = 1, k do held[out[i].id] = true end
  self.counts[QUEUED] = self.counts[QUEUED] - k
  self.counts[LEASED] = self.counts[LEASED] + k
  ok, err = wrote(self, k)
  if not ok then return nil, err end
  return out
end

-- A completion into the open group: its pushes now, its done mark and
-- line listed for the commit. -> n_new, or nil, err (rolled back).
local function join(self, id, recs, line)
  local n = 0
  if recs and #recs > 0 then
    local ierr
    n, ierr = insert(self, recs)
    if not n then return rollback(self, ierr) end
  end
  self.ndone = self.ndone + 1
  self.done_ids[self.ndone] = id
  if line then
    self.nlines = self.nlines + 1
    self.lines[self.nlines] = line
  end
  return n
end

-- later(n): a completion made while a group is sealed joins the next
-- group, its pushes inserted when that one opens (apply_pending); later
-- gets how many of them were new then, and complete returns 0.
function B:complete(item, recs, line, later)
  local ok, err = writable(self)
  if not ok then return nil, err end
  if line and not self.out then return nil, "no output attached to the queue" end
  -- (one writer per file: what this process leased is exactly what the
  -- file holds leased; the mark itself waits for the commit, mark_done)
  local id = item.id
  if not self.held[id] then return nil, "item " .. tostring(item.url) .. " is not leased" end
  if self.sealed and not later then -- (a caller that wants n now)
    ok, err = self:flush()
    if not ok then return nil, err end
    ok, err = writable(self)
    if not ok then return nil, err end
  end
  self.held[id] = nil
  self.nsettled = self.nsettled + 1
  self.counts[LEASED] = self.counts[LEASED] - 1
  self.counts[DONE] = self.counts[DONE] + 1
  if self.sealed then -- (parallel lists: no table per completion)
    local k, p = self.npending + 1, self.pending
    self.npending = k
    p[4 * k - 3], p[4 * k - 2], p[4 * k - 1], p[4 * k] = id, recs or false, line or false, later
    return 0
  end
  local n, ierr = join(self, id, recs, line)
  if not n then return nil, ierr end
  ok, err = wrote(self, 1 + (recs and #recs or 0))
  if not ok then return nil, err end
  return n
end

-- The completions that waited for a sealed group, into the group opening
-- now (queue_commit.lua's finish calls it after each commit).
function B:apply_pending()
  local n = self.npending
  if n == 0 then return true end
  local list = self.pending
  self.pending, self.npending = {}, 0
  local ok, err = begin(self)
  if not ok then return rollback(self, err) end
  local writes = 0
  for i = 1, n do
    local recs = list[4 * i - 2]
    local c, ierr = join(self, list[4 * i - 3], recs, list[4 * i - 1])
    if not c then return nil, ierr end
    writes = writes + 1 + (recs and #recs or 0)
    list[4 * i](c)
  end
  return wrote(self, writes)
end

function B:fail(item, err, retry_at)
  local ok, werr = writable(self)
  if not ok then return nil, werr end
  local state = retry_at and QUEUED or FAILED
  local c, ferr = self.st.fail:exec(state, retry_at and retry_at + self.off or 0, tostring(err), item.id)
  if not c then return rollback(self, ferr) end
  if c == 0 then return nil, "item " .. tostring(item.url) .. " is not leased" end
  self.held[item.id] = nil
  self.nsettled = self.nsettled + 1
  self.counts[LEASED] = self.counts[LEASED] - 1
  self.counts[state] = self.counts[state] + 1
  return wrote(self, 1)
end

-- Leases handed back untried (a crawl that ended on an error with items
-- in hand): queued again as they were, the try not counted. Without it
-- they stayed leased until close, and a second crawl on the queue waited
-- for them for ever. -> how many went back.
function B:release(items)
  local ok, err = writable(self)
  if not ok then return nil, err end
  local ids = {}
  for _, it in ipairs(items) do
    if self.held[it.id] then ids[#ids + 1] = it.id end
  end
  if #ids == 0 then return 0 end
  local st = prep(self, "UPDATE items SET state = 0, tries = max(tries - 1, 0) WHERE id = ? AND state = 1")
  local c, uerr = st:exec_many(#ids, ids)
  st:finalize()
  if not c then return rollback(self, uerr) end
  for _, id in ipairs(ids) do self.held[id] = nil end
  self.counts[LEASED] = self.counts[LEASED] - c
  self.counts[QUEUED] = self.counts[QUEUED] + c
  ok, err = wrote(self, c)
  if not ok then return nil, err end
  return c
end

function B.renew() return true end

function B:next_due(now)
  if self.counts[QUEUED] == 0 then return nil end
  local ok, due = self.st.min_due:one()
  if not ok or not due then return nil end
  return math.max(0, due - self.off - (now or core.now()))
end

function B:stats()
  local c = self.counts
  return { queued = c[QUEUED], leased = c[LEASED], done = c[DONE], failed = c[FAILED],
    seen = c[QUEUED] + c[LEASED] + c[DONE] + c[FAILED] }
end

-- Iterates rows of sql (bound to ...) as items, on a statement of its own.
local function rows(self, sql, ...)
  local st = prep(self, sql)
  st:bind(...)
  return function()
    if not st then return nil end
    local r, err = st:step()
    if r == nil then error("queue " .. self.path .. ": " .. tostring(err), 0) end
    if not r then
      st:finalize()
      st = nil
      return nil
    end
    return row_item(r)
  end
end

function B:failed()
  local ok, err = self:flush()
  if not ok then return nil, err end
  return rows(self, "SELECT " .. COLS .. " FROM items WHERE state = 3 ORDER BY id")
end

function B:retry_failed()
  local ok, err = writable(self)
  if not ok then return nil, err end
  local st = prep(self, "UPDATE items SET state = 0, tries = 0, due = 0 WHERE state = 3")
  local n, uerr = st:exec()
  st:finalize()
  if not n then return rollback(self, uerr) end
  self.counts[FAILED] = self.counts[FAILED] - n
  self.counts[QUEUED] = self.counts[QUEUED] + n
  ok, err = self:flush()
  if not ok then return nil, err end
  return n
end

function B:output(path)
  local ok, err = writable(self)
  if ok then ok, err = self:flush() end -- (lines listed go to the old file)
  if ok then ok, err = writable(self) end
  if not ok then return nil, err end
  return output.attach(self, path)
end

function B:export(fh)
  local ok, err = self:flush()
  if not ok then return nil, err end
  local cjson = require("cjson.safe")
  local n = 0
  -- (rows raises on a read error: returned, as the interface says)
  local rok, rerr = pcall(function()
    for it in rows(self, "SELECT " .. COLS .. " FROM items ORDER BY id") do
      -- a damaged row is named, not exported half: the caller keeps the
      -- rest of the queue to go on with
      local id = it.id
      it.id = nil
      local meta, merr = cjson.decode(it.meta)
      if meta == nil then error(("item %d (%s): meta is not JSON (%s)"):format(id, tostring(it.url), merr), 0) end
      it.meta = meta
      local raw_headers = it.headers
      if it.headers then
        local h, herr = cjson.decode(it.headers)
        if h == nil then error(("item %d (%s): headers are not JSON (%s)"):format(id, tostring(it.url), herr), 0) end
        it.headers = h
      end
      -- (bytes that are not UTF-8 as FIELD_base64: one binary body failed the export)
      local line, eerr = require("scatter.json").encode(require("scatter.queue_text").exportable(it, raw_headers))
      if not line then error(("item %d (%s): %s"):format(id, tostring(it.url), eerr), 0) end
      local wok, werr = fh:write(line, "\n")
      if not wok then error("write: " .. tostring(werr), 0) end
      n = n + 1
    end
  end)
  if not rok then return nil, "export: " .. tostring(rerr) end
  return n
end

function B:close()
  if self.closed then return true end
  local ok, err = true, nil
  if not self.readonly and not self.broken then
    ok, err = self:flush() -- (a sealed group, the done marks listed)
    if ok then ok, err = begin(self) end
    -- a lease given back unused was no try (one lost with its process was)
    -- (exec, not a statement: close may run from a finaliser at exit,
    -- where a new userdata could outlive the module that knows it)
    if ok then ok, err = self.db:exec("UPDATE items SET state = 0, tries = max(tries - 1, 0) WHERE state = 1") end
    if ok then ok, err = self:flush() end
  end
  self.closed = true
  if self.timer then self.timer.cancelled = true end
  for _, st in pairs(self.st or {}) do st:finalize() end
  self.db:close()
  if self.out then self.out:close() end
  if self.lock then self.lock:close() end
  if not ok then return nil, err end
  return true
end

return M
