-- The coroutine runtime: light threads, timers, and the loop that drives
-- libuv/libcurl (through scatter.core) and dispatches pool events.
--
-- Every blocking call goes through block(w): inside a scatter thread it
-- yields to the loop; anywhere else (the main chunk of a plain luajit
-- script, a foreign coroutine) it drives the loop itself until w is woken.
local core = require("scatter.core")

local R = {}

local SUSPEND = {} -- the token our own yields carry
local threads = setmetatable({}, { __mode = "k" }) -- coroutine -> thread
local alive = {} -- thread -> true, until it ends
local runq, runq_head, runq_tail = {}, 1, 0 -- threads ready to run: runq[head..tail]
local live = 0
local timers, timer_seq = {}, 0 -- binary heap of {at, seq, fn}
local pollbuf = {}
R.handlers = {} -- pool id -> function(attempt, task)
local op_handlers = {} -- op id -> function(result), see src/lua/ops.h
R.uncollected_errors = 0
R.report = function(msg) io.stderr:write(msg, "\n") end

local function pack(...) return { n = select("#", ...), ... } end

-- tostring() of a user value that cannot raise (its __tostring may)
local function show(v)
  if type(v) == "string" then return v end
  local ok, s = pcall(tostring, v)
  if ok and type(s) == "string" then return s end
  return "<" .. type(v) .. " (its __tostring failed)>"
end
R.show = show

R.now = core.now

-- ---- timers ----

local function tless(a, b) return a.at < b.at or (a.at == b.at and a.seq < b.seq) end

-- Cancelled timers leave the heap only when they reach its top, so a
-- long timer (a 120 s task timeout, cancelled when the task ends early)
-- behind a live one stayed for its full duration, holding its closure: the
-- heap grew with the task rate (bench/soak.lua). Dropping every cancelled
-- entry whenever the heap has doubled since the last sweep bounds it at
-- twice the live timers, in amortised O(log n) per push.
local sweep_at = 256

local function sift_down(i, n)
  while true do
    local l, r, m = 2 * i, 2 * i + 1, i
    if l <= n and tless(timers[l], timers[m]) then m = l end
    if r <= n and tless(timers[r], timers[m]) then m = r end
    if m == i then return end
    timers[i], timers[m] = timers[m], timers[i]
    i = m
  end
end

local function theap_push(t)
  if #timers >= sweep_at then
    local keep, n = {}, 0
    for _, x in ipairs(timers) do
      if not x.cancelled then
        n = n + 1
        keep[n] = x
      end
    end
    -- rebuilt bottom-up: O(n), where sorting cost a sizeable share of a
    -- request's Lua time (bench/overhead)
    timers = keep
    for i = math.floor(n / 2), 1, -1 do sift_down(i, n) end
    sweep_at = math.max(256, 2 * n)
  end
  local i = #timers + 1
  timers[i] = t
  while i > 1 do
    local p = math.floor(i / 2)
    if not tless(timers[i], timers[p]) then break end
    timers[i], timers[p] = timers[p], timers[i]
    i = p
  end
end

local function theap_pop()
  local top, n = timers[1], #timers
  timers[1] = timers[n]
  timers[n] = nil
  sift_down(1, n - 1)
  return top
end

-- Timers whose time is not before the last queued one's (a pool's
-- request timeouts, which share one duration) go to a FIFO instead: the
-- same order as the heap, at O(1) a push and a pop. Swept like the heap.
local queue, qhead, qtail = {}, 1, 0
local qsweep_at = 256

local function queue_push(t)
  if qtail - qhead + 1 >= qsweep_at then
    local keep, n = {}, 0
    for i = qhead, qtail do
      local x = queue[i]
      if not x.cancelled then
        n = n + 1
        keep[n] = x
      end
    end
    queue, qhead, qtail = keep, 1, n
    qsweep_at = math.max(256, 2 * n)
  end
  qtail = qtail + 1
  queue[qtail] = t
end

local function queue_pop()
  local t = queue[qhead]
  queue[qhead] = nil
  qhead = qhead + 1
  if qhead > qtail then qhead, qtail = 1, 0 end
  return t
end

-- The earliest timer (cancelled or not) and whether it is the queue's.
local function first()
  local q, h = queue[qhead], timers[1]
  if q and (not h or tless(q, h)) then return q, true end
  return h, false
end

-- Runs fn(arg) at time `at` (scatter.now() clock). Returns a timer;
-- t.cancelled = true stops it (lazy removal keeps cancel O(1)). `arg`
-- lets a hot path pass its state to a shared function instead of making
-- a closure per timer.
function R.at(at, fn, arg)
  timer_seq = timer_seq + 1
  local t = { at = at, seq = timer_seq, fn = fn, arg = arg }
  if qtail < qhead or queue[qtail].at <= at then
    queue_push(t)
  else
    theap_push(t)
  end
  return t
end

function R.after(seconds, fn, arg) return R.at(core.now() + seconds, fn, arg) end

local function fire_timers()
  local now, fired = core.now(), 0
  while true do
    local t, queued = first()
    if not t or t.at > now then break end
    if queued then queue_pop() else theap_pop() end
    if not t.cancelled then
      t.cancelled = true
      fired = fired + 1
      t.fn(t.arg)
    end
  end
  return fired
end

local function next_timer()
  while qhead <= qtail and queue[qhead].cancelled do queue_pop() end
  while timers[1] and timers[1].cancelled do theap_pop() end
  local t = first()
  return t and t.at
end
R.next_timer = next_timer

-- ---- threads ----

local function schedule(th)
  runq_tail = runq_tail + 1
  runq[runq_tail] = th
end

function R.current()
  local co = coroutine.running()
  return co and threads[co]
end

local function finish(th, ok, ...)
  th.status = "dead"
  th.result = pack(ok, ...)
  live = live - 1
  alive[th] = nil
  -- th holds th.co, so a weak key alone never lets go (LuaJIT has no
  -- ephemerons): every ended thread would stay in `threads` for good
  threads[th.co] = nil
  if not ok then
    local err = ...
    th.traceback = debug.traceback(th.co, show(err))
    if th.on_error ~= false then
      R.uncollected_errors = R.uncollected_errors + 1
      th.uncollected = true
      R.report("scatter: error in thread: " .. th.traceback)
    end
  end
  local ws = th.waiters
  th.waiters = {}
  for _, w in ipairs(ws) do R.wake(w, th) end
end

-- (no table per resume: this runs once for every wake of every thread)
local function resumed(th, ok, ...)
  if coroutine.status(th.co) == "dead" then
    finish(th, ok, ...)
  else
    th.status = "suspended"
    -- a bare coroutine.yield() inside a thread is a cooperative yield
    if (...) ~= SUSPEND then schedule(th) end
  end
end

local function resume(th)
  if th.status ~= "suspended" then return end
  th.status = "running"
  resumed(th, coroutine.resume(th.co))
end

function R.spawn(fn, ...)
  if type(fn) ~= "function" then
    error("scatter.spawn: bad argument #1 (function expected, got " .. type(fn) .. ")", 2)
  end
  local args = pack(...)
  local th = { status = "suspended", waiters = {} }
  th.co = coroutine.create(function() return fn(unpack(args, 1, args.n)) end)
  threads[th.co] = th
  alive[th] = true
  live = live + 1
  schedule(th)
  return th
end

-- Ends a thread that is waiting (a crawl handler past its deadline): it is
-- never resumed again, its waiters see false, err. Whatever it waited on
-- may still wake it later; a dead thread ignores that.
function R.kill(th, err)
  if th.status ~= "suspended" then return false end
  th.on_error = false
  finish(th, false, err or "killed")
  return true
end

-- ---- waiters ----

function R.waiter()
  return { thread = R.current(), woken = false, suspended = false }
end

function R.wake(w, ...)
  if w.woken then return end
  w.woken = true
  if select("#", ...) > 0 then w.vals = pack(...) end
  if w.thread and w.suspended then schedule(w.thread) end
end

-- Returns the values w was woken with.
function R.block(w)
  if not w.woken then
    local th = R.current()
    if th and th == w.thread then
      w.suspended = true
      repeat
        coroutine.yield(SUSPEND)
      until w.woken
    else
      -- a nested loop inside an event handler would run other handlers
      -- re-entrantly and could wait on itself. (Level 0: the position
      -- would be the scatter function that waits, not the user's call.)
      if R.no_wait then error("scatter: " .. R.no_wait .. " must not wait (it runs inside the event loop)", 0) end
      w.thread = nil
      while not w.woken do
        if not R.step(true) and not w.woken then
          error("scatter: deadlock: this wait can never end (nothing left to wake it)", 0)
        end
      end
    end
  end
  local vals = w.vals
  if vals then return unpack(vals, 1, vals.n) end
end

-- ---- the loop ----

-- One pass: run threads, fire timers, poll I/O (waiting when `block` and
-- nothing is runnable), dispatch pool events. Returns false when nothing
-- could ever happen again (no runnable thread, timer or live I/O).
function R.step(block)
  -- a loop driven from inside the loop (a classifier calling scatter.step
  -- or scatter.run) would run every other handler re-entrantly
  if R.no_wait then error("scatter: " .. R.no_wait .. " must not run the loop (it runs inside it)", 0) end
  -- the threads queued so far, taken one at a time from the shared queue:
  -- a wait in a coroutine of the user's own inside a thread drives a
  -- nested loop (block), which must run the rest of this pass, not leave
  -- it parked in a local batch until that wait ends (a sender queued
  -- behind its receiver never ran)
  local stop = runq_tail
  local ran = runq_head <= stop
  while runq_head <= stop and runq_head <= runq_tail do
    local th = runq[runq_head]
    runq[runq_head] = nil
    runq_head = runq_head + 1
    resume(th)
  end
  if runq_head > runq_tail then
    runq_head, runq_tail = 1, 0 -- drained: every slot is nil again
  elseif runq_head > 256 then
    -- threads that yield on every pass never drain it: move them down
    local q, n = {}, 0
    for i = runq_head, runq_tail do
      n = n + 1
      q[n] = runq[i]
    end
    runq, runq_head, runq_tail = q, 1, n
  end
  -- what just ran may have ended the caller's wait (its last thread, its
  -- waiter): poll without waiting and let the caller look, or a pass could
  -- sleep until some other pool's far timer
  local fired = fire_timers()
  local timeout = 0
  if block and runq_head > runq_tail and not ran and fired == 0 then
    local nt = next_timer()
    timeout = nt and math.max(0, nt - core.now()) or -1
  end
  local n, io_alive = core.poll(timeout, pollbuf)
  for i = 0, n - 1 do
    local pool, a, t = pollbuf[3 * i + 1], pollbuf[3 * i + 2], pollbuf[3 * i + 3]
    local h
    if pool == 0 then
      local res = core.op_take(a)
      h = res and op_handlers[a]
      a = res
    else
      h = R.handlers[pool]
    end
    -- one failing handler must not lose the rest of the batch
    if h then
      local ok, err = pcall(h, a, t)
      if not ok then R.report("scatter: error while handling an event: " .. show(err)) end
    end
  end
  fire_timers()
  return n > 0 or io_alive or runq_head <= runq_tail or next_timer() ~= nil
end

function R.live() return live end

-- True when a thread is ready to run, so the next step must not wait.
function R.runnable() return runq_head <= runq_tail end

-- Run until every thread has ended.
function R.loop()
  while live > 0 do
    if not R.step(true) and live > 0 and runq_head > runq_tail then
      -- they can never run again: end them so a later run starts clean
      local n = live
      for th in pairs(alive) do
        th.status, th.result = "dead", pack(false, "deadlock")
        alive[th] = nil
      end
      live = 0
      error(string.format("scatter: deadlock: %d thread(s) waiting with nothing to wake them", n), 0)
    end
  end
end

-- ---- async operations (C ops: fetches, file writes, signals) ----

-- Calls fn(result) each time op id completes, until R.on_op(id, nil).
function R.on_op(id, fn) op_handlers[id] = fn end

-- Waits for op id's (first) result: {status=, body=, err=}.
function R.await(id)
  local w = R.waiter()
  op_handlers[id] = function(res)
    op_handlers[id] = nil
    R.wake(w, res)
  end
  return R.block(w)
end

-- ---- thread results ----

local function collect(th)
  if th.uncollected then
    th.uncollected = false
    R.uncollected_errors = R.uncollected_errors - 1
  end
  local r = th.result
  if r[1] then return unpack(r, 1, r.n) end
  return false, r[2]
end

function R.wait_any(...)
  local ths = pack(...)
  if ths.n == 0 then error("scatter.wait_any: no threads given", 2) end
  for i = 1, ths.n do
    local th = ths[i]
    if type(th) ~= "table" or not th.co then
      error("scatter.wait_any: bad argument #" .. i .. " (thread expected)", 2)
    end
    if th.status == "dead" then return collect(th) end
  end
  local w = R.waiter()
  for i = 1, ths.n do table.insert(ths[i].waiters, w) end
  local th = R.block(w)
  for i = 1, ths.n do
    for j, x in ipairs(ths[i].waiters) do
      if x == w then table.remove(ths[i].waiters, j) break end
    end
  end
  return collect(th)
end

function R.wait_all(...)
  local ths, out = pack(...), {}
  for i = 1, ths.n do
    if type(ths[i]) ~= "table" or not ths[i].co then
      error("scatter.wait_all: bad argument #" .. i .. " (thread expected)", 2)
    end
  end
  for i = 1, ths.n do out[i] = pack(R.wait_any(ths[i])) end
  return out
end

function R.sleep(s)
  if type(s) ~= "number" or s ~= s or s < 0 then
    error("scatter.sleep: bad argument #1 (non-negative number of seconds expected)", 2)
  end
  -- here, where level 2 is the caller's line (block's would be this one)
  if R.no_wait then error("scatter: " .. R.no_wait .. " must not wait (scatter.sleep)", 2) end
  local w = R.waiter()
  R.after(s, R.wake, w)
  R.block(w)
end

R.SUSPEND = SUSPEND
return R
