-- scatter.crawl: threads that take items from a queue, request them through
-- a pool (or router), hand each response to the user's handle, and record
-- the outcome in the queue (DESIGN.md section 8). The queue's backend does
-- the atomic part (see the interface in lua/scatter/queue.lua); this file
-- is the loop around it: leasing, the handler's deadline, retries with
-- backoff, the summary.
local core = require("scatter.core")
local runtime = require("scatter.runtime")
local queue = require("scatter.queue")
local stopping = require("scatter.signals").stopping

local M = {}

-- Crawls running now (the progress line of `scatter run` shows them).
M.running = setmetatable({}, { __mode = "k" })

-- (level: scatter.crawl's caller, from check or from num)
local function bad(msg, level) error("scatter.crawl: " .. msg, level or 4) end

-- tostring that cannot raise: an error value whose __tostring raises must
-- fail its try, not the crawl
local function text(v)
  local ok, s = pcall(tostring, v)
  return ok and s or "(an error value tostring cannot show: " .. (type(s) == "string" and s or type(s)) .. ")"
end

local MAX_SECONDS = require("scatter.config").MAX_SECONDS
local MAX_CONCURRENCY = 100000 -- (a coroutine each: math.huge would spawn until memory ran out)

local function num(cfg, k, default, min, int, max)
  local v = cfg[k]
  if v == nil then return default end
  max = max or MAX_SECONDS
  if type(v) ~= "number" or v ~= v or v < min or v > max or (int and v ~= math.floor(v)) then
    bad(("%s must be %s from %s to %s, got %s"):format(k, int and "an integer" or "a number", min, max,
      type(v) == "string" and ("'" .. v .. "' (a string)") or tostring(v)), 5)
  end
  return v
end

local KNOWN = {
  queue = true, pool = true, concurrency = true, max_tries = true, timeout = true, output = true,
  handle = true, on_failed = true, backoff = true, max_backoff = true, handle_timeout = true,
  request = true,
}

local function check(cfg)
  if type(cfg) ~= "table" then bad("bad argument #1 (configuration table expected, got " .. type(cfg) .. ")") end
  for k in pairs(cfg) do
    if not KNOWN[k] then bad("unknown option '" .. tostring(k) .. "'") end
  end
  if getmetatable(cfg.queue) ~= queue.Queue then bad("queue must be a scatter.queue") end
  if cfg.queue.closed then bad("the queue is closed") end
  local p = cfg.pool
  if type(p) ~= "table" or type(p.request) ~= "function" then bad("pool must be a scatter.pool or scatter.router") end
  if type(cfg.handle) ~= "function" then bad("handle must be a function(resp, item)") end
  if cfg.on_failed ~= nil and type(cfg.on_failed) ~= "function" then bad("on_failed must be a function(item, err)") end
  if cfg.output ~= nil and (type(cfg.output) ~= "string" or cfg.output == "") then
    bad("output must be a file name")
  end
  if cfg.request ~= nil and type(cfg.request) ~= "table" then bad("request must be a table of request fields") end
  if p.closed then bad("the pool is closed") end
  if cfg.queue.crawl_running then
    -- a second crawl would take the first one's output and leases
    bad("the queue has a crawl running already (one crawl per queue at a time)")
  end
  local o = {
    concurrency = num(cfg, "concurrency", 16, 1, true, MAX_CONCURRENCY),
    max_tries = num(cfg, "max_tries", 5, 1, true, 1e6),
    timeout = num(cfg, "timeout", 60, 0.001),
    backoff = num(cfg, "backoff", 1, 0),
    max_backoff = num(cfg, "max_backoff", 300, 0),
    handle_timeout = num(cfg, "handle_timeout", 60, 0.001),
  }
  -- what every request will carry is checked once here: a bad field would
  -- otherwise fail every item of the queue, max_tries times each
  local req = { timeout = o.timeout }
  for k, v in pairs(cfg.request or {}) do
    if req[k] == nil then req[k] = v end
  end
  local rok, rerr = require("scatter.pool").check_request(req, "http://scatter.invalid/")
  if not rok then bad("request: " .. tostring(rerr):gsub("^invalid_request: ", "")) end
  return o
end

local Item = {}
Item.__index = Item

local NO_PUSHES = {} -- (backends only read it: the interface takes a list)
local GATE_WAIT = 0.002 -- the longest a freed worker waits for a group lease
local COMMIT_WAIT = 0.05 -- a backstop: a commit in flight is announced

-- item:push(url [, opts]) inside handle: queued together with this item's
-- done mark, or not at all if this try fails. Returns false for a key this
-- try already pushed; the queue drops keys it has seen when it commits.
function Item:push(url, o)
  if self._over then error("item:push: this item's try has ended (push only inside its handle)", 2) end
  local rec, err = queue.record(url, o, "item:push")
  if not rec then error(err, 2) end
  local keys = self._keys
  if not keys then -- made on the first push: most items push nothing
    keys = {}
    self._keys, self._pushes = keys, {}
  end
  if keys[rec.key] then return false end
  keys[rec.key] = true
  self._pushes[#self._pushes + 1] = rec
  return true
end

local function decorate(it)
  queue.item(it)
  return setmetatable(it, Item)
end

function M.crawl(cfg)
  local o = check(cfg)
  local q, pool, handle, on_failed = cfg.queue, cfg.pool, cfg.handle, cfg.on_failed
  local b = q.b
  local json = require("scatter.json") -- (cjson, numbers exact)
  q.crawl_running = true
  if cfg.output then
    local ok, err = b:output(cfg.output)
    if not ok then
      q.crawl_running = nil
      error("scatter.crawl: " .. tostring(err), 2)
    end
  end
  local st = {
    queue = q, t0 = core.now(), done = 0, failed = 0, pushed = 0, tries = 0,
    held = 0, buf = {}, idle = {}, fatal = nil, finished = false, untried = {},
  }
  local unsettled = b.unsettled -- (a backend that commits in groups)
  local commit = b.commit_soon or b.flush -- (in the background, if it can)
  local function committing() return b.committing ~= nil and b:committing() end
  M.running[st] = true
  local extra = cfg.request and next(cfg.request) and cfg.request -- (nil: no pairs() per item)

  -- Wakes n idle workers (all when n is nil): a completion that pushed 3
  -- items needs 3 workers, not every idle one querying the queue.
  local function wake_idle(n)
    local ws = st.idle
    if not n or n >= #ws then
      st.idle = {}
      for _, w in ipairs(ws) do runtime.wake(w) end
    else
      -- (a waiter its own timer woke is still listed: skip it)
      while n > 0 and #ws > 0 do
        local w = table.remove(ws)
        if not w.woken then
          runtime.wake(w)
          n = n - 1
        end
      end
    end
  end

  local open_gate
  local function fatal(err)
    if not st.fatal then st.fatal = text(err) end
    wake_idle()
    if open_gate then open_gate() end
  end

  -- Leases come in groups: a lease per freed worker cost a query and an
  -- update per item (8-10 us); a freed worker waits (at most GATE_WAIT s)
  -- until `group` workers are free, and one of them leases for all.
  -- A kill -9 redoes what is leased and what settled in the open commit
  -- group (b:unsettled): both count against `concurrency`, so a kill
  -- requests at most that many again. Committing whenever a worker frees
  -- would be a commit per lease (measured: 16x the commits, 30% of the
  -- throughput); so workers wait for the group's own commit, or commit
  -- when half the slots wait for one.
  local group = math.max(1, math.floor(o.concurrency / 16))
  local settle_max = math.max(group, math.ceil(o.concurrency / 2))
  local gate, gate_timer = {}, nil
  local gate_commit = false -- those at the gate wait for settled slots
  function open_gate()
    if gate_timer then gate_timer.cancelled = true end
    gate_timer, gate_commit = nil, false
    local ws = gate
    gate = {}
    for _, w in ipairs(ws) do runtime.wake(w) end
  end

  -- A commit frees the slots its tries held, and its completions' pushes
  -- may give the idle work.
  local function on_commit()
    if gate_commit then open_gate() end
    if #st.idle > 0 then wake_idle() end
  end
  if b.on_commit then b:on_commit(on_commit, true) end

  -- The next item for a free worker, or nil when the crawl is over.
  local function take()
    while true do
      -- a signal's stop: take nothing more; what is leased goes back at close
      if st.fatal or st.finished or stopping() then return nil end
      local it = table.remove(st.buf)
      if it then return it end
      local u = unsettled and unsettled(b) or 0
      local free = o.concurrency - st.held - u
      if u > 0 and free < group and (u >= settle_max or core.now() >= (b:commit_due() or 0)) then
        local fok, ferr = commit(b)
        if not fok then
          fatal(ferr)
          return nil
        end
        u = unsettled(b)
        free = o.concurrency - st.held - u
      end
      if free < group and not (st.gate_open and free > 0) then
        if st.fatal then return nil end -- (the commit above may have waited)
        local w = runtime.waiter()
        gate[#gate + 1] = w
        if u > 0 and free <= 0 then gate_commit = true end
        if not gate_timer then
          -- no slot until the group commits: wait for that, not GATE_WAIT
          -- (or, while its sync runs, for b:on_commit's call)
          local due = u > 0 and free <= 0 and (committing(b) and core.now() + COMMIT_WAIT or b:commit_due())
          local d = due and math.max(GATE_WAIT, due - core.now()) or GATE_WAIT
          gate_timer = runtime.after(d, function()
            gate_timer = nil
            st.gate_open = true -- the next to try leases what is free
            open_gate()
          end)
        end
        runtime.block(w)
        goto continue
      end
      st.gate_open = false
      if gate_timer then
        gate_timer.cancelled = true
        gate_timer = nil
      end
      local list, err = b:lease(free, core.now())
      if not list then
        fatal(err)
        return nil
      end
      open_gate() -- (those waiting take from the buffer, or wait again)
      if #list > 0 then
        st.held = st.held + #list
        -- taken from the end: reverse so the best comes first
        for i = #list, 1, -1 do st.buf[#st.buf + 1] = list[i] end
      else
        local s, serr = b:stats()
        if not s then
          fatal(serr)
          return nil
        end
        local wait
        if s.queued > 0 then
          wait = b:next_due(core.now()) or 0.05
        elseif s.leased > st.held then
          -- held by another worker process (Redis): it may push more; a
          -- backend that watches the queue (b:watch) knows when to look
          wait = b.watch and math.huge or 0.5
        elseif committing(b) then
          -- completions waiting for that commit may push more: on_commit
          -- wakes the idle when it lands
          wait = COMMIT_WAIT
        elseif st.held == 0 then
          st.finished = true
          wake_idle()
          return nil
        end
        -- otherwise items in flight here may push more: wait for them;
        -- unless the crawl ended while the lease or the stats waited on
        -- Redis (fatal's wake_idle came before this wait: a Redis crawl
        -- that failed while a worker leased hung for ever)
        if st.fatal or st.finished or stopping() then return nil end
        local w = runtime.waiter()
        if #st.idle >= 2 * o.concurrency then -- drop those their timers woke
          local keep = {}
          for _, x in ipairs(st.idle) do
            if not x.woken then keep[#keep + 1] = x end
          end
          st.idle = keep
        end
        st.idle[#st.idle + 1] = w
        if wait and b.watch then
          b:watch(w, wait)
        elseif wait then
          runtime.after(math.max(wait, 0.001), runtime.wake, w)
        end
        runtime.block(w)
      end
      ::continue::
    end
  end

  -- a backend that records completions in the background (Redis) returns
  -- from complete at once and reports the try's new pushes here when in
  -- lost: the backend found the item finished by another worker (its
  -- lease was reclaimed while this one was slow): not done here
  local function pushed_later(n, lost)
    if lost then st.done = st.done - 1 end
    st.pushed = st.pushed + n
    if n > 0 then wake_idle(n) end
  end

  local function retry_at(tries)
    local d = math.min(o.max_backoff, o.backoff * 2 ^ (tries - 1))
    return core.now() + d * (0.75 + 0.5 * math.random())
  end

  -- A try settled: workers waiting for slots that settled tries hold
  -- go on when half the slots wait, or when a commit just freed them
  -- (only those: the lease groups of workers freed otherwise stay whole).
  local function settled()
    -- (while a commit is in flight its announcement opens the gate: a
    -- wake per settle would only send the waiters back to wait)
    if gate_commit and not committing() then
      local u = unsettled(b)
      if u == 0 then return open_gate() end
      if u < settle_max then return end
      -- half the slots wait for a commit: start it here, rather than
      -- wake every waiter for one of them to start it and the rest to
      -- wait again (two waits an item); its announcement opens the gate
      local ok, err = commit(b)
      if not ok then return fatal(err) end
      if not committing() then open_gate() end -- (it committed at once)
    end
  end

  -- slot: the worker's, when it runs there (on_failed then has the
  -- handler's deadline too)
  local function failed_try(it, err, slot)
    it._over = true
    local final = it.tries >= o.max_tries
    local ok, ferr = b:fail(it, err, not final and retry_at(it.tries) or nil)
    st.held = st.held - 1
    settled()
    if not ok then
      if stopping() then return end
      return fatal(ferr)
    end
    if final then
      st.failed = st.failed + 1
      if on_failed then
        if slot then slot.since, slot.on_failed = core.now(), true end
        local cok, cerr = pcall(on_failed, it, err)
        if slot then slot.since, slot.on_failed = nil, nil end
        if not cok then runtime.report("scatter.crawl: error in on_failed: " .. text(cerr)) end
      end
    else
      wake_idle(1) -- due later: an idle worker sets its timer by it
    end
  end

  -- slot: the worker's { th =, since = } (since: when its handle began)
  local function process(it, slot)
    decorate(it)
    st.tries = st.tries + 1
    local req = { url = it.url, method = it.method, headers = it.headers, body = it.body, timeout = o.timeout }
    if extra then
      for k, v in pairs(extra) do
        if req[k] == nil then req[k] = v end
      end
    end
    local rok, resp, rerr = pcall(pool.request, pool, req)
    if not rok then return failed_try(it, "request: " .. text(resp), slot) end
    if not resp then
      -- closed by a signal's stop: not the item's failure; its lease goes
      -- back untried when the queue closes
      if stopping() then return end
      -- the pool closed under the crawl: no item's failure either (its
      -- lease goes back untried); the crawl ends with that error
      if pool.closed then
        st.untried[#st.untried + 1] = it
        return fatal("the pool was closed during the crawl")
      end
      return failed_try(it, rerr, slot)
    end
    slot.since = core.now()
    local ok, v = pcall(handle, resp, it)
    slot.since = nil
    if not ok then return failed_try(it, "handle raised: " .. text(v), slot) end
    local line
    -- (a Redis queue keeps the lines itself: with no output named they
    -- were dropped, and `scatter queue export` gave nothing)
    if (cfg.output or b.keeps_output) and v ~= nil then
      local lerr
      line, lerr = json.encode(v)
      if not line then
        return failed_try(it, "handle returned a value cjson cannot encode: " .. tostring(lerr), slot)
      end
    end
    it._over = true
    if st.fatal then
      st.untried[#st.untried + 1] = it
      return
    end
    local n, cerr = b:complete(it, it._pushes or NO_PUSHES, line, pushed_later)
    st.held = st.held - 1
    settled()
    if not n then
      if stopping() then return end -- the stop closed the queue: nothing was recorded
      return fatal(cerr)
    end
    st.done = st.done + 1
    st.pushed = st.pushed + n
    if n > 0 then wake_idle(n) end
  end

  local slots, live, all_done = {}, 0, runtime.waiter()
  local spawn_worker

  local function worker(slot)
    local ok, err = pcall(function()
      while true do
        local it = take()
        if not it then return end
        slot.item = it
        process(it, slot)
        slot.item = nil
      end
    end)
    if not ok then fatal("a crawl worker failed: " .. text(err)) end
    slots[slot] = nil
    live = live - 1
    if live == 0 then runtime.wake(all_done) end
  end

  spawn_worker = function()
    local slot = {}
    slots[slot] = true
    live = live + 1
    slot.th = runtime.spawn(worker, slot)
  end

  -- A handle that waits forever must not hold the crawl forever: past its
  -- deadline its worker is ended, the try fails, a new worker takes over.
  -- One timer for all (no timer per item on the hot path).
  local watch_every = math.min(1, o.handle_timeout / 4)
  local watch_timer
  local function watch()
    local now, late = core.now(), {}
    for slot in pairs(slots) do
      if slot.since and now - slot.since > o.handle_timeout then late[#late + 1] = slot end
    end
    for _, slot in ipairs(late) do
      if runtime.kill(slot.th, "deadline") then
        slots[slot] = nil
        live = live - 1
        if slot.on_failed then -- (its item has failed already)
          runtime.report(("scatter.crawl: on_failed did not return within %gs (handle_timeout): ended")
            :format(o.handle_timeout))
        else
          failed_try(slot.item, string.format("handle did not return within %gs (handle_timeout)", o.handle_timeout))
        end
        if not st.finished and not st.fatal then spawn_worker() end
      end
    end
    if live == 0 then runtime.wake(all_done) end
    watch_timer = runtime.after(watch_every, watch)
  end
  watch_timer = runtime.after(watch_every, watch)

  -- Redis leases expire unless renewed while their items are in flight
  local renew_every = (b.lease_secs or 60) / 3
  local renew_timer
  local function renew()
    if st.finished or st.fatal then return end
    local ok, err = b:renew()
    if not ok then runtime.report("scatter.crawl: lease renewal failed: " .. tostring(err)) end
    renew_timer = runtime.after(renew_every, renew)
  end
  renew_timer = runtime.after(renew_every, renew)

  for _ = 1, o.concurrency do spawn_worker() end
  runtime.block(all_done)
  watch_timer.cancelled = true
  renew_timer.cancelled = true
  M.running[st] = nil
  q.crawl_running = nil
  if b.on_commit then b:on_commit(on_commit, false) end
  -- what a crawl that ends on an error still holds goes back untried now,
  -- not at close (a crawl after it would wait for those leases for ever)
  for _, it in ipairs(st.buf) do st.untried[#st.untried + 1] = it end
  if #st.untried > 0 and b.release and not stopping() then
    local rok, rerr = b:release(st.untried)
    if not rok then fatal(rerr) end
  end
  local fok, ferr = b:flush()
  if not fok and not stopping() then fatal(ferr) end
  if st.fatal and stopping() then -- what went wrong after the stop began: said, not raised
    runtime.report("scatter.crawl: while stopping: " .. st.fatal)
  elseif st.fatal then
    error("scatter.crawl: " .. st.fatal, 2)
  end
  return { done = st.done, failed = st.failed, pushed = st.pushed, secs = core.now() - st.t0,
           stopped = stopping() or nil }
end

-- The progress line's part: "queue 1200 queued, 300 done, 2 failed | ETA 0:01:10"
function M.progress_part(clock)
  for st in pairs(M.running) do
    -- (this runs in a timer: a backend that would wait on the network says
    -- what it knew last instead)
    local b = st.queue.b
    local ok, s = pcall(function() return b.stats_nowait and b:stats_nowait() or st.queue:stats() end)
    if ok and s then
      local secs = core.now() - st.t0
      local rate = (st.done > 0 and secs > 0) and st.done / secs or 0
      local eta = rate > 0 and clock((s.queued + s.leased) / rate) or "?"
      return string.format("queue %d queued, %d done, %d failed | ETA %s", s.queued, s.done, s.failed, eta)
    end
  end
end

return M
