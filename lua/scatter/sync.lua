-- Handing work between threads, in OpenResty's style (ngx.semaphore,
-- and a channel as Go has it): scatter.channel([size]) and
-- scatter.semaphore([n]). Waits yield to the loop inside a scatter thread
-- and drive the loop elsewhere, like every wait of the runtime.
local runtime = require("scatter.runtime")

local M = {}

-- A FIFO of waiters: w.q is the queue it sits in, so a timeout can take
-- it out.
local function q_new() return { head = 1, tail = 0 } end

local function q_push(q, w)
  q.tail = q.tail + 1
  q[q.tail] = w
  w.q, w.slot = q, q.tail
end

local function q_pop(q)
  while q.head <= q.tail do
    local w = q[q.head]
    q[q.head] = nil
    q.head = q.head + 1
    if w then
      w.q = nil
      return w
    end
  end
  q.head, q.tail = 1, 0
end

local function q_empty(q)
  for i = q.head, q.tail do
    if q[i] then return false end
  end
  return true
end

local function expired(w)
  if w.q then
    w.q[w.slot] = nil
    w.q = nil
  end
  runtime.wake(w, nil, "timeout")
end

local function check_timeout(t, where)
  if t ~= nil and (type(t) ~= "number" or t ~= t or t < 0) then
    error(where .. ": bad timeout (number of seconds >= 0 expected, got " .. runtime.show(t) .. ")", 3)
  end
end

-- Blocks w (queued in q) until woken or `timeout` seconds pass.
local function await(q, w, timeout)
  q_push(q, w)
  local timer = timeout and runtime.after(timeout, expired, w)
  local a, b, c = runtime.block(w)
  if timer then timer.cancelled = true end
  return a, b, c
end

-- ---- channel ----

local Channel = {}
Channel.__index = Channel
Channel.__tostring = function(ch)
  return ("scatter.channel (%d/%d%s)"):format(ch.n, ch.size, ch.closed and ", closed" or "")
end

function M.channel(size)
  if size == nil then size = 0 end
  if type(size) ~= "number" or size ~= math.floor(size) or size < 0 or size > 2 ^ 31 then
    error("scatter.channel: bad argument #1 (size: an integer >= 0 expected, got " .. runtime.show(size) .. ")", 2)
  end
  return setmetatable({ size = size, buf = {}, bhead = 1, n = 0,
    senders = q_new(), receivers = q_new(), closed = false }, Channel)
end

local function is_channel(ch, fname)
  if getmetatable(ch) ~= Channel then error("channel:" .. fname .. ": call it as channel:" .. fname .. "(...)", 3) end
end

-- Sends v (not nil); waits while the channel is full (size 0: until a
-- receiver takes it). Returns true, or nil, "closed" / "timeout".
function Channel:send(v, timeout)
  is_channel(self, "send")
  if v == nil then error("channel:send: bad argument #1 (a value other than nil expected)", 2) end
  check_timeout(timeout, "channel:send")
  if self.closed then return nil, "closed" end
  local r = q_pop(self.receivers)
  if r then
    runtime.wake(r, v)
    return true
  end
  if self.n < self.size then
    self.buf[self.bhead + self.n] = v
    self.n = self.n + 1
    return true
  end
  if runtime.no_wait then error("scatter: " .. runtime.no_wait .. " must not wait (channel:send on a full channel)", 2) end
  local w = runtime.waiter()
  w.value = v
  return await(self.senders, w, timeout)
end

-- Returns the next value; waits while the channel is empty. nil, "closed"
-- once it is closed and drained; nil, "timeout".
function Channel:receive(timeout)
  is_channel(self, "receive")
  check_timeout(timeout, "channel:receive")
  if self.n > 0 then
    local v = self.buf[self.bhead]
    self.buf[self.bhead] = nil
    self.bhead, self.n = self.bhead + 1, self.n - 1
    if self.n == 0 then self.bhead = 1 end
    -- a waiting sender's value takes the freed place
    local s = q_pop(self.senders)
    if s then
      self.buf[self.bhead + self.n] = s.value
      self.n = self.n + 1
      runtime.wake(s, true)
    end
    return v
  end
  local s = q_pop(self.senders)
  if s then
    runtime.wake(s, true)
    return s.value
  end
  if self.closed then return nil, "closed" end
  if runtime.no_wait then error("scatter: " .. runtime.no_wait .. " must not wait (channel:receive on an empty channel)", 2) end
  return await(self.receivers, runtime.waiter(), timeout)
end

-- No more sends: waiting senders get nil, "closed"; receivers drain what
-- is buffered, then get nil, "closed".
function Channel:close()
  is_channel(self, "close")
  if self.closed then return end
  self.closed = true
  while true do
    local s = q_pop(self.senders)
    if not s then break end
    runtime.wake(s, nil, "closed")
  end
  while true do
    local r = q_pop(self.receivers)
    if not r then break end
    runtime.wake(r, nil, "closed")
  end
end

-- Values buffered (plus senders waiting, for size 0).
function Channel:count()
  is_channel(self, "count")
  local waiting = 0
  for i = self.senders.head, self.senders.tail do
    if self.senders[i] then waiting = waiting + 1 end
  end
  return self.n + waiting
end

function Channel:is_closed() return self.closed end

-- ---- semaphore ----

local Semaphore = {}
Semaphore.__index = Semaphore
Semaphore.__tostring = function(s) return ("scatter.semaphore (%d)"):format(s:count()) end

function M.semaphore(n)
  if n == nil then n = 0 end
  if type(n) ~= "number" or n ~= math.floor(n) or n < 0 or n > 2 ^ 31 then
    error("scatter.semaphore: bad argument #1 (an integer >= 0 expected, got " .. runtime.show(n) .. ")", 2)
  end
  return setmetatable({ n = n, waiters = q_new() }, Semaphore)
end

local function is_sema(s, fname)
  if getmetatable(s) ~= Semaphore then error("semaphore:" .. fname .. ": call it as semaphore:" .. fname .. "(...)", 3) end
end

-- Takes one resource, waiting for a post; true, or nil, "timeout".
function Semaphore:wait(timeout)
  is_sema(self, "wait")
  check_timeout(timeout, "semaphore:wait")
  if self.n > 0 and q_empty(self.waiters) then
    self.n = self.n - 1
    return true
  end
  if timeout == 0 then return nil, "timeout" end
  if runtime.no_wait then error("scatter: " .. runtime.no_wait .. " must not wait (semaphore:wait)", 2) end
  return await(self.waiters, runtime.waiter(), timeout)
end

-- Gives back n resources (default 1), waking that many waiters.
function Semaphore:post(n)
  is_sema(self, "post")
  if n == nil then n = 1 end
  if type(n) ~= "number" or n ~= math.floor(n) or n < 1 then
    error("semaphore:post: bad argument #1 (an integer >= 1 expected)", 2)
  end
  for _ = 1, n do
    local w = q_pop(self.waiters)
    if w then runtime.wake(w, true) else self.n = self.n + 1 end
  end
end

-- Resources left; negative: that many threads are waiting.
function Semaphore:count()
  is_sema(self, "count")
  if self.n > 0 then return self.n end
  local waiting = 0
  for i = self.waiters.head, self.waiters.tail do
    if self.waiters[i] then waiting = waiting + 1 end
  end
  return -waiting
end

return M
