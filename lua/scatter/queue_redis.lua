-- The Redis backend of scatter.queue (DESIGN.md sections 8 and 9): the
-- backend interface of lua/scatter/queue.lua on streams with a consumer
-- group, every step one script (lua/scatter/redis_scripts.lua, where the
-- keys are described). Many workers on many machines share one queue.
--
-- Beyond the interface: this process renews its own leases every lease/3
-- seconds by itself (a slow handler keeps its item however the caller
-- calls renew), a lease whose worker died is claimed by whichever worker
-- leases next after `lease` seconds, counted as a try, and b:watch lets an
-- idle caller sleep in a blocking read instead of polling.
--
-- Round trips are what a worker pays for (a wait for Redis' answer costs
-- the process a sleep and a wake-up, more than the work around it), so one
-- "step" script carries a pass's completions, the next lease and, when the
-- lease finds nothing, the counts; a completion that pushes nothing does
-- not wait for its own round trip (it goes with the next step, at most
-- DEFER seconds later).
local core = require("scatter.core")
local runtime = require("scatter.runtime")
local redis = require("scatter.redis")
local scripts = require("scatter.redis_scripts")
local items_codec = require("scatter.redis_items")
local cjson = require("cjson.safe")

local PRIO, decode, push_chunks, step_argv = items_codec.PRIO, items_codec.decode, items_codec.push_chunks, items_codec.step_argv

local M = {}
local B = {}
B.__index = B
-- the output lines live in Redis whether or not the crawl names a file
B.keeps_output = true

M.check_name = items_codec.check_name

function M.open(opts)
  local ok, err = M.check_name(opts.name)
  if not ok then return nil, err end
  local lease, lerr = items_codec.check_opts(opts)
  if not lease then return nil, lerr end
  local copts = { timeout = opts.redis_timeout, retry_for = opts.retry_for }
  local c, cerr = redis.connect(opts.redis, copts)
  if not c then return nil, "scatter.queue: " .. cerr end
  local info = c:call_retry("INFO", "server")
  local major, minor = tostring(info):match("redis_version:(%d+)%.(%d+)")
  if not major or tonumber(major) * 100 + tonumber(minor) < 602 then
    c:close()
    return nil, ("scatter.queue: %s: Redis 6.2 or later needed (streams with XAUTOCLAIM), this is %s")
      :format(c.url, tostring(major and (major .. "." .. minor) or "not Redis"))
  end
  local lease_ms = math.floor(lease * 1000)
  local self = setmetatable({
    c = c, url = opts.redis, copts = copts, name = opts.name, prefix = "scatter:{" .. opts.name .. "}:",
    lease_ms = lease_ms, lease_secs = lease, me = items_codec.consumer_name(core.now()),
    period = tostring(math.max(50, math.min(2000, math.floor(lease_ms / 4)))),
    leased = {}, nleased = 0, s = {}, buf = {}, bufi = 1, bufn = 0, cq = {}, watchers = {},
    carrying = 0, synced = {},
  }, B)
  for k, src in pairs(scripts) do self.s[k] = c:script(src) end
  -- the default level exists from the start, so stats and waits see it
  local _, perr = self:run("push", {})
  if perr then
    c:close()
    return nil, "scatter.queue: " .. perr
  end
  return self
end

function B:fail_msg(err) return ("%s (queue %q): %s"):format(self.c.url, self.name, tostring(err)) end

function B:run(script, args)
  local argv = { "EVALSHA", false, 0, self.prefix }
  for i = 1, #args do argv[i + 4] = args[i] end
  local v, err = self.c:evalv(self.s[script], argv)
  if v == nil then return nil, self:fail_msg(err) end
  return v
end

function B:push(recs)
  local n, out = push_chunks(self.c, self.s.push, self.prefix, recs)
  if not n then return nil, self:fail_msg(out) end
  return n, out
end

-- Renewal: every lease/3 while this process holds leases. A timer, not a
-- thread, so an idle queue keeps no scatter.run alive.
function B:arm_renew()
  if self.renew_timer or self.closed or self.nleased == 0 then return end
  self.renew_timer = runtime.after(self.lease_ms / 3000, function()
    self.renew_timer = nil
    if self.closed or self.nleased == 0 then return end
    runtime.spawn(function()
      local items = {}
      for _, it in pairs(self.leased) do items[#items + 1] = it end
      self:renew(items)
      self:arm_renew()
    end)
  end)
end

-- Leases come in batches of at least PREFETCH: a crawl asks for one item
-- at a time as its workers free up, and a round trip per item was a fifth
-- of a worker's CPU (bench/redis_cost.lua). The extra items are leased to
-- this process (renewed, given back at close) until asked for.
local PREFETCH = 16
-- How long a completion that pushed nothing may wait for the next step.
local DEFER = 0.02

-- self.buf[self.bufi .. self.bufn]: leased items not handed out yet
local function pop_buf(self, out, n)
  local buf, i = self.buf, self.bufi
  while #out < n and i <= self.bufn do
    out[#out + 1] = buf[i]
    buf[i] = nil
    i = i + 1
  end
  self.bufi = i
  return out
end

local function push_buf(self, it)
  self.bufn = self.bufn + 1
  self.buf[self.bufn] = it
end

local function buffered(self) return self.bufn - self.bufi + 1 end

function B:forget(item)
  local k = item.lkey
  if k and self.leased[k] then
    self.leased[k] = nil
    self.nleased = self.nleased - 1
  end
end

-- The counts of the last step that took them, for this loop pass and at
-- most SNAP seconds (a caller that asks right after an empty lease, as
-- scatter.crawl does, gets them without a round trip; they are as fresh as
-- an answer to its own question would be).
local SNAP = 0.002

function B:set_snapshot(s)
  local snap = { queued = s[1] + s[6], leased = s[2], done = s[3], failed = s[4], seen = s[5],
    delayed = s[6], next_ms = s[7], ready = s[1], reclaim_ms = s[8], watch = s[9], at = core.now() }
  self.snap, self.last_snap = snap, snap
  runtime.after(0, function() if self.snap == snap then self.snap = nil end end)
  return snap
end

-- One step: every queued completion, a lease of `want` items (0: none),
-- the counts when `counts` or when the lease found nothing. Returns the
-- leased items | nil, err. A failed completion's error also goes to its
-- waiter, or, for one nobody waits for, to every later call (self.broken).
function B:step(want, counts)
  local jobs = self.cq
  self.cq = {}
  if self.later and #jobs > 0 then -- these go now: the next completion arms it again
    self.later.cancelled = true
    self.later = nil
  end
  self.carrying = self.carrying + (#jobs > 0 and 1 or 0)
  -- (a raise must not leave sync waiting for this step forever)
  local ok, r, err = pcall(self.send_step, self, jobs, want, counts)
  if not ok then r, err = nil, r end
  if #jobs > 0 then
    self.carrying = self.carrying - 1
    if self.carrying == 0 then
      local ws = self.synced
      self.synced = {}
      for _, w in ipairs(ws) do runtime.wake(w) end
    end
  end
  if r == nil then err = self:fail_msg(err) end
  local done = r and r[1]
  for j = 1, #jobs do
    local job = jobs[j]
    if done then
      self:forget(job.item)
      job.n = (job.pre or 0) + math.max(0, done[j])
      -- (-1: no longer pending, another worker finished it: not ours)
      if job.later then job.later(job.n, done[j] < 0) end
    else
      job.err = err
      if not job.w then self.broken = self.broken or err end
    end
    if job.w then runtime.wake(job.w) end
  end
  if not r then return nil, err end
  if #jobs > 0 then self:wake_watchers() end
  local got = r[2]
  local items = {}
  for k = 1, #got do
    local e = got[k]
    local prio, id, data, deliveries = e[1], e[2], e[3], e[4]
    local it, tries = decode(prio, data)
    if it then
      it.id, it.tries, it.data = id, tries + deliveries, data
      it.lkey = prio .. "\n" .. id
      self.leased[it.lkey] = it
      self.nleased = self.nleased + 1
      items[#items + 1] = it
    end
  end
  if r[3] then self:set_snapshot(r[3]) end
  if #items > 0 then self:arm_renew() end
  return items
end

-- Sends jobs (with a lease and the counts) in as many step scripts as
-- their arguments need, the lease with the last one. A page that alone
-- pushes more than PUSH_CHUNK has its pushes sent first (deduplicated: if
-- its completion is then lost, the item's next try finds them seen).
-- -> the last script's answer with every job's count in r[1] | nil, err
function B:send_step(jobs, want, counts)
  for _, job in ipairs(jobs) do
    if #job.recs > items_codec.PUSH_CHUNK then
      local n, perr = push_chunks(self.c, self.s.push, self.prefix, job.recs)
      if not n then return nil, perr end
      job.pre, job.recs = n, {}
    end
  end
  local done, j = {}, 1
  while true do
    local argv, nxt = step_argv({ "EVALSHA", false, 0, self.prefix, self.me, want, self.lease_ms, self.period,
      counts and "1" or "0", 0 }, jobs, j)
    local last = nxt > #jobs
    if not last then argv[6], argv[9] = 0, "0" end -- completions only
    local r, err = self.c:evalv(self.s.step, argv)
    if r == nil then return nil, err end
    for k = 1, #r[1] do done[#done + 1] = r[1][k] end
    if last then
      r[1] = done
      return r
    end
    j = nxt
  end
end

-- Sends the queued completions now (in a thread of its own), with a lease
-- that tops the buffer up for the workers these completions free.
function B:send_soon()
  if self.soon then return end
  self.soon = true
  runtime.after(0, function()
    runtime.spawn(function()
      self.soon = false
      if #self.cq == 0 then return end
      local waiting = 0
      for _, j in ipairs(self.cq) do if j.w then waiting = waiting + 1 end end
      local want = 0
      if waiting > 0 then want = math.max(0, PREFETCH + waiting - buffered(self)) end
      local jobs = self.cq
      local ok, items = pcall(self.step, self, want)
      if not ok then -- a waiter left unwoken would hold its crawl worker forever
        for _, j in ipairs(jobs) do
          if j.w and not j.w.woken then
            j.err = "queue: completing: " .. tostring(items)
            runtime.wake(j.w)
          end
        end
        return
      end
      if items then
        for _, it in ipairs(items) do push_buf(self, it) end
      end
    end)
  end)
end

-- One lease step at a time: callers that find one under way (a crawl's
-- idle workers all woken at once) wait for it and share what it brought,
-- even if that is less than they asked for, instead of each sending one;
-- when it found nothing, they find nothing too (its counts say why). The
-- items are dealt out in turns: each caller is a free crawl worker, and
-- one that came back with nothing while the first took everything would
-- wait idle beside work (a seeded crawl then ran one item at a time).
function B:lease(n)
  if self.broken then return nil, self.broken end
  local out = pop_buf(self, {}, n)
  while #out == 0 and self.leasing do
    local me = { w = runtime.waiter(), n = n, got = out }
    self.leasing[#self.leasing + 1] = me
    local err, empty = runtime.block(me.w)
    if err then return nil, err end
    pop_buf(self, out, n)
    if empty or #out > 0 then return out end
  end
  if #out >= n or self.leasing then return out end
  self.leasing = {}
  local items, err = self:step(math.max(n - #out, PREFETCH))
  local ws = self.leasing
  self.leasing = nil
  if items then
    local takers, i = { { n = n, got = out } }, 1
    for _, t in ipairs(ws) do takers[#takers + 1] = t end
    local gave = true
    while gave and i <= #items do
      gave = false
      for _, t in ipairs(takers) do
        if i <= #items and #t.got < t.n then
          t.got[#t.got + 1] = items[i]
          i, gave = i + 1, true
        end
      end
    end
    for k = i, #items do push_buf(self, items[k]) end
  end
  for _, t in ipairs(ws) do runtime.wake(t.w, err, items and #items == 0) end
  if not items then
    for i = #out, 1, -1 do -- back in front, in order
      self.bufi = self.bufi - 1
      self.buf[self.bufi] = out[i]
    end
    return nil, err
  end
  return out
end

-- A completion returns at once (0 new) and goes with the next step when it
-- pushes nothing or when the caller takes the count later (later(n, lost) runs
-- when the step is in, lost when another worker had finished the item;
-- scatter.crawl does so): a process killed before
-- that leaves the item leased, to be reclaimed and done again (its output
-- still once). Otherwise it waits for its step, sent in the next loop pass
-- with every other completion queued by then.
function B:complete(item, recs, line, later)
  if self.broken then return nil, self.broken end
  recs = recs or {}
  local job = { item = item, recs = recs, line = line, later = later }
  self.cq[#self.cq + 1] = job
  if #recs == 0 or later then
    if not self.later then
      self.later = runtime.after(DEFER, function()
        self.later = nil
        if #self.cq > 0 then self:send_soon() end
      end)
    end
    return 0
  end
  job.w = runtime.waiter()
  self:send_soon()
  runtime.block(job.w)
  if job.err then return nil, job.err end
  return job.n
end

-- Everything queued so far sent and answered (also what steps of other
-- threads carry now).
function B:sync()
  if #self.cq > 0 then
    local _, err = self:step(0)
    if err then return nil, err end
  end
  while self.carrying > 0 do
    local w = runtime.waiter()
    self.synced[#self.synced + 1] = w
    runtime.block(w)
  end
  if self.broken then return nil, self.broken end
  return true
end

function B:fail(item, err, retry_at)
  if self.broken then return nil, self.broken end
  local tries = item.tries
  local json = item.data:match("^%d+\t(.*)$")
  local data = tries .. "\t" .. json
  local delay = -1
  if retry_at then delay = math.max(0, math.floor((retry_at - core.now()) * 1000)) end
  local prio = PRIO[item.priority]
  local rec = cjson.encode({ prio, data, tostring(err) })
  local ok, rerr = self:run("fail", { prio, item.id, self.me, delay, data, rec })
  if not ok then return nil, rerr end
  self:forget(item)
  return true
end

-- Items a crawl took and never began (it ended on an error) go back to
-- the front of this process's buffer, untried: still leased here and
-- renewed, so the next lease takes them at once and close gives them back
-- (a later crawl in this process waited for them for ever).
function B:release(items)
  for i = #items, 1, -1 do
    local it = {}
    for k, v in pairs(items[i]) do if type(k) ~= "string" or k:sub(1, 1) ~= "_" then it[k] = v end end
    self.bufi = self.bufi - 1
    self.buf[self.bufi] = it
  end
  return #items
end

-- items nil (scatter.crawl's timer): this backend renews its own leases
-- from a thread of its own (arm_renew), nothing to do here
function B:renew(items)
  if items == nil or #items == 0 then return true end
  local argv = { self.me }
  for _, it in ipairs(items) do
    argv[#argv + 1] = PRIO[it.priority]
    argv[#argv + 1] = it.id
  end
  local n, err = self:run("renew", argv)
  if not n then return nil, err end
  return true
end

function B:raw_stats()
  local snap = self.snap
  if snap and #self.cq == 0 and core.now() - snap.at <= SNAP then return snap end
  local _, err = self:step(0, true)
  if err then return nil, err end
  if self.broken then return nil, self.broken end
  return self.snap
end

function B:stats()
  local s, err = self:raw_stats()
  if not s then return nil, err end
  return { queued = s.queued, leased = s.leased, done = s.done, failed = s.failed, seen = s.seen }
end

-- For callers inside the event loop that must not wait (the progress line
-- of `scatter run`): the last counts known, refreshed by a thread of its
-- own at most once a second; nil until the first refresh.
function B:stats_nowait()
  local now = core.now()
  if not self.closed and not self.refreshing and now - (self.refreshed_at or -math.huge) >= 1 then
    self.refreshing = true
    runtime.spawn(function()
      local s = self:stats()
      if s then self.last_stats = s end
      self.refreshed_at, self.refreshing = core.now(), false
    end)
  end
  return self.last_stats
end

-- 0 when an item can be leased now; the seconds until the next retry is
-- due; while only leases are out (here or on other workers, which may push
-- or die) a short poll for callers that do not b:watch; nil when the whole
-- queue is empty.
function B:next_due()
  local s, err = self:raw_stats()
  if not s then return nil, err end
  if s.ready > 0 then return 0 end
  if s.next_ms >= 0 then return s.next_ms / 1000 end
  if s.leased > 0 then return 0.25 end
  return nil
end

-- ---- idle waits ----

function B:wake_watchers()
  local ws = self.watchers
  if #ws == 0 then return end
  self.watchers = {}
  for _, w in ipairs(ws) do runtime.wake(w) end
end

-- b:watch(w, secs): wakes waiter w when the queue may have changed for
-- this caller: an item was added to a level (a push, a retry due, a lease
-- given back), a retry was scheduled, the fleet's last lease ended, this
-- process's own completions went out; a lease held elsewhere may have run
-- out; or after secs (math.huge: no bound of the caller's). The caller
-- looks again (lease, stats) when woken. One blocking XREAD, on a
-- connection of its own (it holds that connection up), serves every
-- waiter of the process; while it waits the worker sends nothing.
function B:watch(w, secs)
  secs = secs or math.huge
  if self.closed then return runtime.wake(w) end
  local ws = self.watchers
  ws[#ws + 1] = w
  if secs < math.huge then runtime.after(math.max(secs, 0.001), runtime.wake, w) end
  if self.reading then return end
  local snap = self.last_snap
  local ms = self.lease_ms
  if snap and snap.reclaim_ms >= 0 then ms = math.min(ms, snap.reclaim_ms + 20) end
  if secs < math.huge then ms = math.min(ms, math.ceil(secs * 1000)) end
  ms = math.max(1, math.floor(ms))
  local bc = self:block_conn()
  local argv = { "XREAD", "BLOCK", ms, "COUNT", 1, "STREAMS" }
  local watch = snap and snap.watch or { self.prefix .. "bell", "$" }
  for i = 1, #watch, 2 do argv[#argv + 1] = watch[i] end
  for i = 2, #watch, 2 do argv[#argv + 1] = watch[i] end
  local ok = bc and bc:call_cb(ms / 1000, argv, function(_, err)
    self.reading = false
    -- a connection that keeps failing must not spin the caller
    if err and not self.closed then
      runtime.after(math.min(1, ms / 1000), function() self:wake_watchers() end)
      return
    end
    self:wake_watchers()
  end)
  if ok then
    self.reading = true
  else -- no connection for the blocking read (yet): look again in a while
    runtime.after(math.min(1, ms / 1000), function() self:wake_watchers() end)
  end
end

-- The blocking read's own connection (opened at the first idle wait; it
-- reconnects by itself like the main one). nil while it cannot be opened.
function B:block_conn()
  if self.bc then return self.bc end
  if self.bc_failed and core.now() - self.bc_failed < 1 then return nil end
  local c = redis.connect(self.url, self.copts)
  if self.closed then
    if c then c:close() end
    return nil
  end
  if not c then
    self.bc_failed = core.now()
    return nil
  end
  self.bc = c
  return c
end

function B:flush() return self:sync() end

-- Output lines stay in Redis (exactly once, with each item's done mark);
-- `scatter queue export` writes them. A path is not written here.
function B:output(path)
  if path and not self.output_noted then
    self.output_noted = true
    require("scatter.log").emit("info", nil, ("queue %q: output is kept in Redis, not in %s; "
      .. "`scatter queue export %s --name %s` writes it"):format(self.name, path, self.c.url, self.name))
  end
  return true
end

function B:failed()
  local buf, i, from, done = {}, 1, 0, false
  self:sync()
  return function()
    if i > #buf and not done then
      local got = self.c:call_retry("LRANGE", self.prefix .. "f", from, from + 99)
      buf, i = got or {}, 1
      from = from + 100
      if #buf < 100 then done = true end
    end
    local rec = buf[i]
    if not rec then return nil end
    i = i + 1
    local r = cjson.decode(rec)
    local it, tries = decode(r[1], r[2])
    if not it then return nil end
    it.tries, it.err = tries, r[3]
    return it
  end
end

function B:retry_failed()
  local _, serr = self:sync()
  if serr then return nil, serr end
  local total = 0
  while true do
    local n, err = self:run("retry_failed", { 1000 })
    if not n then return nil, err end
    total = total + n
    if n < 1000 then return total end
  end
end

-- Writes the kept output lines; returns how many.
function B:export(fh)
  local _, serr = self:sync()
  if serr then return nil, serr end
  local from, n = "-", 0
  while true do
    local got, err = self.c:call_retry("XRANGE", self.prefix .. "o", from, "+", "COUNT", 1000)
    if not got then return nil, err end
    for _, e in ipairs(got) do
      local wok, werr = fh:write(e[2][2], "\n")
      if not wok then return nil, "export: write: " .. tostring(werr) end
      n = n + 1
    end
    if #got < 1000 then return n end
    from = "(" .. got[#got][1]
  end
end

function B:close()
  if self.closed then return true end
  local _, serr = self:sync()
  self.closed = true
  if self.renew_timer then self.renew_timer.cancelled = true end
  if self.bc then self.bc:close() end
  self:wake_watchers()
  local _, err = self:run("release", { self.me })
  self.c:close()
  err = err or serr
  if err then return nil, err end
  return true
end

return M
