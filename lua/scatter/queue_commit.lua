-- Grouped commits of the embedded frontier (lua/scatter/queue_sqlite.lua):
-- every write joins one open transaction, committed when it is commit_ms
-- old (checked at each write and by a runtime timer), holds commit_items
-- writes, or at flush/close/read. A commit first writes the output lines
-- it covers, fdatasyncs the file, stores the file's new length in the
-- same transaction, then COMMITs (WAL, synchronous=NORMAL: see setup in
-- queue_sqlite.lua). So after kill -9 or power loss the file's committed
-- length matches the done marks exactly, and open cuts any longer tail.
--
-- The fdatasync of a busy crawl's commit runs on libuv's thread pool
-- (seal, then finish when it is done): the loop, and every transfer in
-- flight, goes on meanwhile. While a group is sealed, leases, failures and
-- pushes outside handlers still join its transaction (none of them has an
-- output line to wait for); a completion waits in `pending` and joins the
-- next group, so an item's done mark, its pushes and its line still
-- commit together. flush() is the synchronous commit: it finishes a
-- sealed group with a blocking fdatasync, then commits what came after.
local core = require("scatter.core")

local M = {}

local SYNC_SHARE, MAX_STRETCH = 20, 20 -- see stretch

-- Commits are announced (b:on_commit) to whoever waits for settled tries.
local function announce(self)
  for fn in pairs(self.hooks) do fn() end
end

function M.begin(self)
  if self.txn then return true end
  local ok, err = self.db:exec("BEGIN IMMEDIATE")
  if not ok then return nil, err end
  self.txn, self.txn_at, self.txn_n = true, core.now(), 0
  self.saved_counts = { [0] = self.counts[0], self.counts[1], self.counts[2], self.counts[3] }
  if not self.timer and self.commit_s > 0 then
    local runtime = require("scatter.runtime")
    self.timer = runtime.after(self.commit_s * self.stretch, function()
      self.timer = nil
      if self.txn and not self.closed then
        local cok, cerr = M.commit_soon(self)
        if not cok then self.broken = cerr end
      end
    end)
  end
  return true
end

function M.rollback(self, err)
  self.db:exec("ROLLBACK")
  self.txn, self.sealed = false, nil
  self.counts = self.saved_counts
  self.lines, self.nlines = {}, 0
  self.done_ids, self.ndone, self.nsettled = {}, 0, 0
  self.pending, self.npending = {}, 0
  if self.out then self.out:truncate(self.out_len) end
  self.broken = err
  announce(self)
  return nil, err
end

-- The group's done marks, one C call (complete only lists them: a mark
-- costs no statement of its own, and joins the same commit as its line).
local function mark_done(self)
  local n = self.ndone
  if n == 0 then return true end
  -- (the ids as one JSON array: one statement for the group, 3k
  -- instructions a row fewer than a statement per row, by callgrind)
  local c, err = self.st.done_all:exec("[" .. table.concat(self.done_ids, ",", 1, n) .. "]")
  if c and c ~= n then err = (n - c) .. " of " .. n .. " items to mark done were not leased" end
  if c ~= n then return M.rollback(self, err) end
  self.done_ids, self.ndone = {}, 0
  return true
end
M.mark_done = mark_done

-- When syncing is slow (a busy device, other processes' writes), groups
-- grow so that syncing stays near 1/SYNC_SHARE of the time (at most
-- MAX_STRETCH x): on the loop that is its time, on the pool its disk.
local function stretch(self, secs)
  self.stretch = math.min(MAX_STRETCH, math.max(1, SYNC_SHARE * secs / math.max(self.commit_s, 1e-3)))
end

-- Writes the lines the open group covers after the committed length;
-- returns the new length (the old one when there are none).
local function write_lines(self)
  if self.nlines == 0 then return self.out_len end
  local data = table.concat(self.lines, "\n", 1, self.nlines) .. "\n"
  local ok, err = self.out:pwrite(data, self.out_len)
  if not ok then return M.rollback(self, "output " .. err) end
  self.lines, self.nlines = {}, 0
  return self.out_len + #data
end

-- COMMIT with the output's length len (synced), settling k tries.
local function finish(self, len, k)
  if len ~= self.out_len then
    local sok, serr = self.st.meta_set:exec("output_len", len)
    if not sok then return M.rollback(self, serr) end
  end
  local cok, cerr = self.db:exec("COMMIT")
  if not cok then return M.rollback(self, cerr) end
  self.out_len, self.txn, self.sealed = len, false, nil
  self.nsettled = self.nsettled - k
  -- (announced once the waiting completions' pushes are in: a worker it
  -- wakes must find them)
  local ok, err = self:apply_pending()
  announce(self)
  return ok, err
end

-- The output's sync on the loop (flush's).
local function sync_now(self)
  local t0 = core.now()
  local ok, err = self.out:sync()
  if not ok then return M.rollback(self, "output " .. err) end
  stretch(self, core.now() - t0)
  return true
end

function M.flush(self)
  if self.broken then return nil, self.broken end
  -- a sealed group's lines are written: a sync now covers them. (Its
  -- finish lets the completions that waited in, which may seal the next
  -- group at once: that one too, before the rest.)
  while self.sealed do
    local s = self.sealed
    local ok, err = sync_now(self)
    if ok then ok, err = finish(self, s.len, s.settled) end
    if not ok then return nil, err end
  end
  if not self.txn then return true end
  local ok, err = mark_done(self)
  if not ok then return nil, err end
  local len
  len, err = write_lines(self)
  if not len then return nil, err end
  if len ~= self.out_len then
    ok, err = sync_now(self)
    if not ok then return nil, err end
  end
  return finish(self, len, self.nsettled)
end

-- Starts committing the open group without waiting for its sync; true at
-- once (a group already sealed commits first, then the next).
function M.commit_soon(self)
  if self.broken then return nil, self.broken end
  if not self.txn or self.sealed then return true end
  if self.nlines == 0 then return M.flush(self) end -- (no sync to wait for)
  local ok, err = mark_done(self)
  if not ok then return nil, err end
  local len
  len, err = write_lines(self)
  if not len then return nil, err end
  local op, oerr = self.out:sync_async()
  if not op then return M.rollback(self, "output " .. oerr) end
  local seal = { len = len, settled = self.nsettled, t0 = core.now() }
  self.sealed = seal
  require("scatter.runtime").on_op(op, function(res)
    require("scatter.runtime").on_op(op, nil)
    if self.sealed ~= seal or self.closed then return end -- flush finished it
    if res.status ~= 0 then
      M.rollback(self, "output " .. self.out.path .. ": " .. tostring(res.err))
      return
    end
    stretch(self, core.now() - seal.t0)
    local fok, ferr = finish(self, seal.len, seal.settled)
    if not fok then self.broken = self.broken or ferr end
  end)
  return true
end

-- n writes joined the group: commit it when it is full or old.
function M.wrote(self, n)
  self.txn_n = self.txn_n + n
  local f = self.stretch
  if self.txn_n >= self.commit_items * f or core.now() - self.txn_at >= self.commit_s * f then
    return M.commit_soon(self)
  end
  return true
end

return M
