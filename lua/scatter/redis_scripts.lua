-- The Lua scripts the Redis queue backend (queue_redis.lua) runs inside
-- Redis: each one is a single atomic step. ARGV[1] is always the queue's
-- key prefix, "scatter:{NAME}:" (the braces keep every key of a queue in
-- one cluster slot); the keys under it:
--
--   q:<prio>   a stream per priority level, consumer group "g"; an entry's
--              one field "d" is the item, "<tries>\t<json>" (tries: tries
--              that ended before this delivery). Entries leave the stream
--              when their try ends (XACK + XDEL together), so a stream holds
--              exactly its queued and leased items.
--   lv         zset of the priority levels in use
--   d          zset of items waiting for a retry: score = due (ms, Redis
--              clock), member = "<prio>\n<item>"
--   f          list of failed items: JSON [prio, item, err]
--   s:<hhhh>   the seen set, 65536 hashes named by the first 16 bits of
--              SHA-1(key), the next 48 bits as a 6-byte field: small hashes
--              stay listpacks, about 20 bytes a key
--   n          hash of counters: seen, done
--   o          stream of output lines (field "l"), one per done item
--   rc         reclaim gate (SET PX NX): one reclaim pass per period
--   bell       stream of at most one entry, added to when idle workers
--              must look again though no item was added to a level: a new
--              level, a retry scheduled, the last lease of the fleet ended
--              (idle workers wait in XREAD BLOCK on it and on the levels)
local M = {}

local COMMON = [[
local P = ARGV[1]
local function now_ms()
  local t = redis.call("TIME")
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function ring()
  redis.call("XADD", P .. "bell", "MAXLEN", "1", "*", "r", "1")
end
local levels_seen = {} -- (levels made sure of in this call)
local function level(prio)
  local q = P .. "q:" .. prio
  if levels_seen[q] then return q end
  if redis.call("ZADD", P .. "lv", "NX", prio, prio) == 1 then
    redis.pcall("XGROUP", "CREATE", q, "g", "0", "MKSTREAM")
    ring()
  end
  levels_seen[q] = true
  return q
end
-- nothing queued or leased in any level (retries may wait in d)
local function streams_empty()
  for _, prio in ipairs(redis.call("ZRANGE", P .. "lv", 0, -1)) do
    if redis.call("XLEN", P .. "q:" .. prio) > 0 then return false end
  end
  return true
end
local function seen_add(key)
  local h = redis.sha1hex(key)
  local f = string.char(tonumber(h:sub(5, 6), 16), tonumber(h:sub(7, 8), 16),
    tonumber(h:sub(9, 10), 16), tonumber(h:sub(11, 12), 16),
    tonumber(h:sub(13, 14), 16), tonumber(h:sub(15, 16), 16))
  return redis.call("HSETNX", P .. "s:" .. h:sub(1, 4), f, "") == 1
end
-- ARGV[from..to] as (key, prio, item) triples; returns new count, flags
local function push_all(from, to)
  local flags, n = {}, 0
  for i = from, to or #ARGV, 3 do
    if seen_add(ARGV[i]) then
      redis.call("XADD", level(ARGV[i + 1]), "*", "d", ARGV[i + 2])
      n = n + 1
      flags[#flags + 1] = 1
    else
      flags[#flags + 1] = 0
    end
  end
  if n > 0 then redis.call("HINCRBY", P .. "n", "seen", n) end
  return n, flags
end
local function owner(q, id)
  local p = redis.call("XPENDING", q, "g", id, id, 1)
  return p[1] and p[1][2]
end
]]

-- ARGV: prefix, then (key, prio, item) triples -> flags (1 new, 0 seen)
M.push = COMMON .. [[
local _, flags = push_all(2)
return flags
]]

-- One exchange of a worker with the queue: its completions, then a lease,
-- then (when asked, or when the lease found nothing) the counts.
-- ARGV: prefix, consumer, want, lease_ms, reclaim_period_ms, snapshot
-- (0/1), count, then per completion: prio, id, line ("" with has_line 0),
-- has_line, npush, and npush (key, prio, item) triples.
-- -> { done, leased, snapshot | false }:
--   done: per completion its new count, or -1 when it was not leased any
--     more (another worker finished it: nothing is done twice); each one is
--     all or nothing
--   leased: { {prio, id, item, deliveries}, ... } highest priority first
--   snapshot: { queued, leased, done, failed, seen, delayed, ms until the
--     earliest retry is due or -1, ms until a lease held elsewhere may be
--     reclaimed or -1, streams to watch: {key, last id, key, last id ...} }
M.step = COMMON .. [[
local me, want, lease, period = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local done, i, finished = {}, 8, 0
for j = 1, tonumber(ARGV[7]) do
  local prio, id, line, has, npush = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4])
  i = i + 5
  local q = P .. "q:" .. prio
  -- XACK counts it only while it is pending (for anyone)
  if redis.call("XACK", q, "g", id) == 0 then
    done[j] = -1
  else
    redis.call("XDEL", q, id)
    if has == "1" then redis.call("XADD", P .. "o", "*", "l", line) end
    done[j] = (push_all(i, i + 3 * npush - 1))
    finished = finished + 1
  end
  i = i + 3 * npush
end
if finished > 0 then
  redis.call("HINCRBY", P .. "n", "done", finished)
  -- workers waiting for the others' last items must hear of it
  if streams_empty() then ring() end
end

local out = {}
local levels = redis.call("ZREVRANGE", P .. "lv", 0, -1)
if want > 0 then
  -- retries that are due go back to their streams
  local due = redis.call("ZRANGEBYSCORE", P .. "d", "-inf", now_ms(), "LIMIT", 0, 1000)
  for _, m in ipairs(due) do
    local nl = string.find(m, "\n", 1, true)
    redis.call("XADD", level(m:sub(1, nl - 1)), "*", "d", m:sub(nl + 1))
    redis.call("ZREM", P .. "d", m)
  end
  if #due > 0 then levels = redis.call("ZREVRANGE", P .. "lv", 0, -1) end
  -- items whose worker stopped renewing: claimed for us, counted as a try
  if redis.call("SET", P .. "rc", "1", "PX", period, "NX") then
    for _, prio in ipairs(levels) do
      local q = P .. "q:" .. prio
      local cursor = "0-0"
      for _ = 1, 10 do
        if #out >= want then break end
        local r = redis.call("XAUTOCLAIM", q, "g", me, lease, cursor, "COUNT", want - #out)
        for _, e in ipairs(r[2]) do
          if e and e[2] then
            local p = redis.call("XPENDING", q, "g", e[1], e[1], 1)
            out[#out + 1] = { prio, e[1], e[2][2], p[1][4] }
          end
        end
        cursor = r[1]
        if cursor == "0-0" then break end
      end
      -- consumers of killed workers, once they hold nothing and stay idle
      -- for ten lease periods, leave the group
      for _, c in ipairs(redis.call("XINFO", "CONSUMERS", q, "g")) do
        local name, pending, idle = c[2], c[4], c[6]
        if pending == 0 and idle > 10 * lease and name ~= me then
          redis.call("XGROUP", "DELCONSUMER", q, "g", name)
        end
      end
    end
  end
  for _, prio in ipairs(levels) do
    if #out >= want then break end
    local q = P .. "q:" .. prio
    local r = redis.call("XREADGROUP", "GROUP", "g", me, "COUNT", want - #out, "STREAMS", q, ">")
    if r then
      for _, e in ipairs(r[1][2]) do out[#out + 1] = { prio, e[1], e[2][2], 1 } end
    end
  end
end
if ARGV[6] ~= "1" and (want == 0 or #out > 0) then return { done, out, false } end

local queued, leased, reclaim = 0, 0, -1
local watch = { P .. "bell", "0-0" }
local last = redis.call("XREVRANGE", P .. "bell", "+", "-", "COUNT", 1)[1]
if last then watch[2] = last[1] end
for _, prio in ipairs(levels) do
  local q = P .. "q:" .. prio
  local len = redis.call("XLEN", q)
  local pend = redis.call("XPENDING", q, "g")[1]
  queued = queued + len - pend
  leased = leased + pend
  -- an XREAD from the newest entry wakes on the next one added
  local e = redis.call("XREVRANGE", q, "+", "-", "COUNT", 1)[1]
  watch[#watch + 1] = q
  watch[#watch + 1] = e and e[1] or "0-0"
  -- the soonest a lease held elsewhere can run out (if it is not renewed)
  if pend > 0 and pend <= 1000 then
    for _, p in ipairs(redis.call("XPENDING", q, "g", "-", "+", 1000)) do
      if p[2] ~= me then
        local left = math.max(0, lease - p[3])
        if reclaim < 0 or left < reclaim then reclaim = left end
      end
    end
  elseif pend > 0 then
    reclaim = math.floor(lease / 4)
  end
end
if reclaim >= 0 then reclaim = math.max(reclaim, redis.call("PTTL", P .. "rc")) end
local delayed = redis.call("ZCARD", P .. "d")
local next_ms = -1
if delayed > 0 then
  local first = redis.call("ZRANGE", P .. "d", 0, 0, "WITHSCORES")
  next_ms = math.max(0, tonumber(first[2]) - now_ms())
end
local c = redis.call("HMGET", P .. "n", "done", "seen")
return { done, out, { queued, leased, tonumber(c[1]) or 0, redis.call("LLEN", P .. "f"),
  tonumber(c[2]) or 0, delayed, next_ms, reclaim, watch } }
]]

-- ARGV: prefix, prio, id, consumer, delay_ms (-1: failed for good),
-- new item (tries counted), failed record -> 1, or 0 when the lease is
-- not ours any more (another worker's try decides)
M.fail = COMMON .. [[
local q = P .. "q:" .. ARGV[2]
if owner(q, ARGV[3]) ~= ARGV[4] then return 0 end
redis.call("XACK", q, "g", ARGV[3])
redis.call("XDEL", q, ARGV[3])
local delay = tonumber(ARGV[5])
if delay >= 0 then
  redis.call("ZADD", P .. "d", now_ms() + delay, ARGV[2] .. "\n" .. ARGV[6])
  ring() -- idle workers learn the new due time
else
  redis.call("RPUSH", P .. "f", ARGV[7])
  if streams_empty() then ring() end
end
return 1
]]

-- ARGV: prefix, consumer, then (prio, id) pairs -> how many are still ours
-- (their idle time reset: XCLAIM JUSTID does not count a delivery)
M.renew = COMMON .. [[
local n = 0
for i = 3, #ARGV, 2 do
  local q = P .. "q:" .. ARGV[i]
  if owner(q, ARGV[i + 1]) == ARGV[2] then
    redis.call("XCLAIM", q, "g", ARGV[2], 0, ARGV[i + 1], "JUSTID")
    n = n + 1
  end
end
return n
]]

-- ARGV: prefix, consumer -> how many leases went back: every entry this
-- consumer holds, also those whose lease reply it never saw, is queued
-- again at the end of its level with its tries unchanged (a delivery
-- reclaimed from a dead worker counts that worker's try); then the
-- consumer leaves the group
M.release = COMMON .. [[
local me, n = ARGV[2], 0
for _, prio in ipairs(redis.call("ZRANGE", P .. "lv", 0, -1)) do
  local q = P .. "q:" .. prio
  while true do
    local mine = redis.call("XPENDING", q, "g", "-", "+", 1000, me)
    if #mine == 0 then break end
    for _, p in ipairs(mine) do
      local e = redis.call("XRANGE", q, p[1], p[1])[1]
      redis.call("XACK", q, "g", p[1])
      redis.call("XDEL", q, p[1])
      if e then
        local tries, rest = e[2][2]:match("^(%d+)(\t.*)$")
        redis.call("XADD", q, "*", "d", (tonumber(tries) + p[4] - 1) .. rest)
        n = n + 1
      end
    end
  end
  redis.call("XGROUP", "DELCONSUMER", q, "g", me)
end
return n
]]

-- ARGV: prefix, max -> how many failed items went back to their streams
-- with their tries reset (the worker passes the reset form: see below)
M.retry_failed = COMMON .. [[
local n = 0
for _ = 1, tonumber(ARGV[2]) do
  local rec = redis.call("LPOP", P .. "f")
  if not rec then break end
  local r = cjson.decode(rec)
  local item = r[2]:gsub("^%d+\t", "0\t", 1)
  redis.call("XADD", level(tostring(r[1])), "*", "d", item)
  n = n + 1
end
return n
]]

return M
