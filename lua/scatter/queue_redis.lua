-- The Redis backend of scatter.queue (DESIGN.md sections 8 and 9): the
-- backend interface of lua/scatter/queue.lua on streams with a consumer
-- group, every step one script (lua/scatter/redis_scripts.lua, where the
-- keys are described). Many workers on many machines share one queue.
--
-- Beyond the interface: this process renews its own leases every lease/3
-- seconds by itself (a slow handler keeps its item however the caller
-- calls renew), and a lease whose worker died is claimed by whichever
-- worker leases next after `lease` seconds, counted as a try.
local core = require("scatter.core")
local runtime = require("scatter.runtime")
local redis = require("scatter.redis")
local scripts = require("scatter.redis_scripts")
local cjson = require("cjson.safe")

local M = {}
local B = {}
B.__index = B

local MAX_NAME = 200

-- A name becomes part of every key: printable bytes only (braces would
-- break the cluster hash tag), so what export and redis-cli show is what
-- the user typed.
function M.check_name(name)
  if type(name) ~= "string" or name == "" then
    return nil, "scatter.queue: a Redis queue needs name = a non-empty string, got " .. tostring(name)
  end
  if #name > MAX_NAME then return nil, ("scatter.queue: name is %d bytes, at most %d"):format(#name, MAX_NAME) end
  local bad = name:find("[%z\1-\31\127{}]")
  if bad then
    return nil, ("scatter.queue: name %q has a byte Redis keys here cannot carry at %d (control bytes and braces)")
      :format(name, bad)
  end
  return true
end

local ffi = require("ffi")
pcall(ffi.cdef, "int getpid(void);")
pcall(ffi.cdef, "int gethostname(char *name, size_t len);")

local function consumer_name()
  local buf = ffi.new("char[256]")
  local host = ffi.C.gethostname(buf, 255) == 0 and ffi.string(buf) or "host"
  return ("%s:%d:%x"):format(host, ffi.C.getpid(), math.floor((core.now() % 1) * 2 ^ 24))
end

-- The stream entry of a record: "<tries>\t[url, meta, method, headers,
-- body, key]" with defaults left out (short items keep Redis small).
local function encode(rec, tries)
  local t = { rec.url }
  local fields = {
    rec.meta ~= "{}" and rec.meta or nil,
    rec.method ~= "GET" and rec.method or nil,
    rec.headers, rec.body,
    rec.key ~= rec.method .. " " .. rec.url and rec.key or nil,
  }
  local last = 1
  for i = 1, 5 do if fields[i] ~= nil then last = i + 1 end end
  for i = 1, last - 1 do t[i + 1] = fields[i] == nil and cjson.null or fields[i] end
  return tries .. "\t" .. cjson.encode(t)
end

local function nn(v) if v ~= cjson.null then return v end end

local function decode(prio, data)
  local tries, json = data:match("^(%d+)\t(.*)$")
  local t = json and cjson.decode(json)
  if not t then return nil end
  local it = {
    url = t[1], meta = nn(t[2]) or "{}", method = nn(t[3]) or "GET",
    headers = nn(t[4]), body = nn(t[5]), priority = tonumber(prio),
  }
  it.key = nn(t[6]) or (it.method .. " " .. it.url)
  return it, tonumber(tries), json
end

local function push_args(argv, recs)
  for _, r in ipairs(recs or {}) do
    argv[#argv + 1] = r.key
    argv[#argv + 1] = ("%d"):format(r.priority or 0)
    argv[#argv + 1] = encode(r, 0)
  end
  return argv
end

function M.open(opts)
  local ok, err = M.check_name(opts.name)
  if not ok then return nil, err end
  local lease = opts.lease or 60
  if type(lease) ~= "number" or lease ~= lease or lease < 0.1 or lease > 86400 then
    return nil, "scatter.queue: lease must be a number of seconds in [0.1, 86400], got " .. tostring(opts.lease)
  end
  local c, cerr = redis.connect(opts.redis, { timeout = opts.redis_timeout, retry_for = opts.retry_for })
  if not c then return nil, "scatter.queue: " .. cerr end
  local info = c:call_retry("INFO", "server")
  local major, minor = tostring(info):match("redis_version:(%d+)%.(%d+)")
  if not major or tonumber(major) * 100 + tonumber(minor) < 602 then
    c:close()
    return nil, ("scatter.queue: %s: Redis 6.2 or later needed (streams with XAUTOCLAIM), this is %s")
      :format(c.url, tostring(major and (major .. "." .. minor) or "not Redis"))
  end
  local self = setmetatable({
    c = c, name = opts.name, prefix = "scatter:{" .. opts.name .. "}:",
    lease_ms = math.floor(lease * 1000), lease_secs = lease, me = consumer_name(),
    leased = {}, nleased = 0, s = {}, buf = {}, cq = {},
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

function B:run(script, args)
  local v, err = self.c:eval(self.s[script], {}, args)
  if v == nil then return nil, ("%s (queue %q): %s"):format(self.c.url, self.name, tostring(err)) end
  return v
end

function B:push(recs)
  if #recs == 0 then return 0, {} end
  local flags, err = self:run("push", push_args({ self.prefix }, recs))
  if not flags then return nil, err end
  local out, n = {}, 0
  for i, f in ipairs(flags) do
    out[i] = f == 1
    if out[i] then n = n + 1 end
  end
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

-- Leases come from Redis in batches of at least PREFETCH: a crawl asks for
-- one item at a time as its workers free up, and a round trip per item
-- was a fifth of a worker's CPU (bench/redis_cost.lua). The extra items
-- are leased to this process (renewed, given back at close) until asked.
local PREFETCH = 8

function B:lease(n)
  local out, buf = {}, self.buf
  while #out < n and buf[1] do out[#out + 1] = table.remove(buf, 1) end
  if #out >= n then return out end
  local want = math.max(n - #out, PREFETCH)
  local got, err = self:run("lease", { self.prefix, self.me, want, self.lease_ms,
    math.max(50, math.min(2000, math.floor(self.lease_ms / 4))) })
  if not got then
    for i = #out, 1, -1 do table.insert(buf, 1, out[i]) end
    return nil, err
  end
  for _, e in ipairs(got) do
    local prio, id, data, deliveries = e[1], e[2], e[3], e[4]
    local it, tries, json = decode(prio, data)
    if it then
      it.id = id
      it.tries = tries + deliveries
      it.rtries, it.json = tries, json
      self.leased[prio .. "\n" .. id] = it
      self.nleased = self.nleased + 1
      if #out < n then out[#out + 1] = it else buf[#buf + 1] = it end
    end
  end
  self:arm_renew()
  return out
end

function B:forget(item)
  local k = ("%d\n%s"):format(item.priority, item.id)
  if self.leased[k] then
    self.leased[k] = nil
    self.nleased = self.nleased - 1
  end
end

-- The completions of one loop pass (a crawl's workers finishing together)
-- go to Redis in one script call: each stays atomic on its own, and the
-- worker spends one round trip on several items (bench/redis_cost.lua).
function B:flush_completes()
  local jobs = self.cq
  self.cq, self.cq_armed = {}, false
  local argv = { self.prefix, #jobs }
  for _, j in ipairs(jobs) do
    local it = j.item
    argv[#argv + 1] = ("%d"):format(it.priority)
    argv[#argv + 1] = it.id
    argv[#argv + 1] = j.line or ""
    argv[#argv + 1] = j.line and "1" or "0"
    argv[#argv + 1] = #j.recs
    push_args(argv, j.recs)
  end
  local ns, err = self:run("complete", argv)
  for i, j in ipairs(jobs) do
    if ns then
      self:forget(j.item)
      j.n = math.max(0, ns[i])
    else
      j.err = err
    end
    runtime.wake(j.w)
  end
end

function B:complete(item, recs, line)
  local job = { item = item, recs = recs or {}, line = line, w = runtime.waiter() }
  self.cq[#self.cq + 1] = job
  if not self.cq_armed then
    self.cq_armed = true
    runtime.after(0, function()
      runtime.spawn(function()
        -- a waiter left unwoken would hold its crawl worker forever
        local jobs = self.cq
        local ok, err = pcall(self.flush_completes, self)
        if not ok then
          for _, j in ipairs(jobs) do
            if not j.w.woken then
              j.err = "queue: completing: " .. tostring(err)
              runtime.wake(j.w)
            end
          end
        end
      end)
    end)
  end
  runtime.block(job.w)
  if job.err then return nil, job.err end
  return job.n
end

function B:fail(item, err, retry_at)
  local tries = item.tries
  local data = tries .. "\t" .. item.json
  local delay = -1
  if retry_at then delay = math.max(0, math.floor((retry_at - core.now()) * 1000)) end
  local prio = ("%d"):format(item.priority)
  local rec = cjson.encode({ prio, data, tostring(err) })
  local ok, rerr = self:run("fail", { self.prefix, prio, item.id, self.me, delay, data, rec })
  if not ok then return nil, rerr end
  self:forget(item)
  return true
end

-- items nil (scatter.crawl's timer): this backend renews its own leases
-- from a thread of its own (arm_renew), nothing to do here
function B:renew(items)
  if items == nil or #items == 0 then return true end
  local argv = { self.prefix, self.me }
  for _, it in ipairs(items) do
    argv[#argv + 1] = ("%d"):format(it.priority)
    argv[#argv + 1] = it.id
  end
  local n, err = self:run("renew", argv)
  if not n then return nil, err end
  return true
end

function B:raw_stats()
  local s, err = self:run("stats", { self.prefix })
  if not s then return nil, err end
  return { queued = s[1] + s[6], leased = s[2], done = s[3], failed = s[4], seen = s[5],
    delayed = s[6], next_ms = s[7], ready = s[1] }
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
-- or die) a short poll, since their outcome decides; nil when the whole
-- queue is empty.
function B:next_due()
  local s, err = self:raw_stats()
  if not s then return nil, err end
  if s.ready > 0 then return 0 end
  local wait
  if s.next_ms >= 0 then wait = s.next_ms / 1000 end
  if s.leased > 0 then wait = math.min(wait or 0.25, 0.25) end
  return wait
end

function B.flush() return true end

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
  local total = 0
  while true do
    local n, err = self:run("retry_failed", { self.prefix, 1000 })
    if not n then return nil, err end
    total = total + n
    if n < 1000 then return total end
  end
end

-- Writes the kept output lines; returns how many.
function B:export(fh)
  local from, n = "-", 0
  while true do
    local got, err = self.c:call_retry("XRANGE", self.prefix .. "o", from, "+", "COUNT", 1000)
    if not got then return nil, err end
    for _, e in ipairs(got) do
      fh:write(e[2][2], "\n")
      n = n + 1
    end
    if #got < 1000 then return n end
    from = "(" .. got[#got][1]
  end
end

function B:close()
  if self.closed then return true end
  self.closed = true
  if self.renew_timer then self.renew_timer.cancelled = true end
  local argv = { self.prefix, self.me }
  for _, it in pairs(self.leased) do
    argv[#argv + 1] = ("%d"):format(it.priority)
    argv[#argv + 1] = it.id
    argv[#argv + 1] = (it.tries - 1) .. "\t" .. it.json
  end
  local _, err = self:run("release", argv)
  self.c:close()
  if err then return nil, err end
  return true
end

return M
