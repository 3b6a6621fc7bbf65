-- scatter.pool{ share = "redis://..." } (DESIGN.md section 9): pools of the
-- same name on every worker share proxy health and politeness through Redis.
--
-- Every share_interval seconds each pool, in one script:
--   - heartbeats: its worker id in the zset live, scored by when it
--     expires (3 intervals; a killed worker drops out by itself);
--   - publishes its state section (the state file's, lua/scatter/state.lua)
--     in the hash snap, and reads the others' (a closed worker's section
--     stays an hour, so a new worker starts warm);
-- then merges what the others saw, and re-partitions the proxies.
--
-- Merge (per (proxy, host) pair): a pair this worker has no outcomes for
-- takes the other's history; a pair another worker put into cooldown more
-- recently is cooled down here too; a proxy another worker found dead,
-- with no success here since, is dead here too.
--
-- Politeness: the proxies are dealt out among the live workers, so each
-- (proxy, host) pair is used by one worker at a time and its rate limit
-- holds fleet-wide exactly as it does in one process. A proxy that changes
-- hands is taken up only after the old owner has let go of it (1.5 share
-- intervals plus the longest rate interval). With fewer proxies than
-- workers, every worker uses all of them with its host intervals stretched
-- by the number of live workers (the fleet-wide rate then holds on
-- average, not gap by gap).
local bit = require("bit")
local core = require("scatter.core")
local runtime = require("scatter.runtime")
local redis = require("scatter.redis")
local state = require("scatter.state")
local log = require("scatter.log")
local cjson = require("cjson.safe")

local M = {}
local Share = {}
Share.__index = Share

local KEEP_MS = 3600 * 1000 -- a closed worker's section stays this long

local PUBLISH = [[
local P, me, now, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call("TIME")
now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ttl > 0 then redis.call("ZADD", P .. "live", now + ttl, me) else redis.call("ZREM", P .. "live", me) end
redis.call("ZREMRANGEBYSCORE", P .. "live", "-inf", now)
if ARGV[5] ~= "" then
  redis.call("HSET", P .. "snap", me, ARGV[5])
  redis.call("ZADD", P .. "st", now, me)
end
for _, w in ipairs(redis.call("ZRANGEBYSCORE", P .. "st", "-inf", now - tonumber(ARGV[6]))) do
  redis.call("HDEL", P .. "snap", w)
  redis.call("ZREM", P .. "st", w)
end
if ARGV[7] ~= "1" then return {} end
local others = {}
for _, w in ipairs(redis.call("HKEYS", P .. "snap")) do
  if w ~= me then others[#others + 1] = w end
end
local out = { redis.call("ZRANGE", P .. "live", 0, -1) }
if #others > 0 then out[2] = redis.call("HMGET", P .. "snap", unpack(others)) end
return out
]]

-- 32-bit FNV-1a (rendezvous weights; no need for more)
local function fnv(s)
  local h = 2166136261
  for i = 1, #s do
    h = bit.bxor(h, s:byte(i))
    h = bit.tobit(bit.lshift(h, 24) + h * 403)
  end
  return h
end

local function worker_id()
  local ffi = require("ffi")
  pcall(ffi.cdef, "int getpid(void);")
  pcall(ffi.cdef, "int gethostname(char *name, size_t len);")
  local buf = ffi.new("char[256]")
  local host = ffi.C.gethostname(buf, 255) == 0 and ffi.string(buf) or "host"
  return ("%s:%d:%x"):format(host, ffi.C.getpid(), math.floor((core.now() % 1) * 2 ^ 24))
end

local function wall_offset()
  local wall, mono = core.state_clock()
  return wall - mono
end

-- pool: the Lua pool. Connects (raising a clear error when Redis cannot be
-- reached) and runs the first round before the pool dispatches.
function M.start(pool, where)
  local url = pool.cfg.share
  local c, err = redis.connect(url, { retry_for = 3 * pool.cfg.share_interval })
  if not c then error(where .. ": share: " .. err, 0) end
  local name = pool.name or "default"
  local self = setmetatable({
    pool = pool, c = c, name = name, me = worker_id(),
    prefix = "scatter:pool:{" .. name .. "}:",
    interval = pool.cfg.share_interval, script = c:script(PUBLISH),
    owned = {}, want = {}, workers = 1, stretched = false,
  }, Share)
  -- the old owner lets go at its next round (within an interval); its
  -- last attempt on a pair must be a rate interval behind the new one's
  local iv = pool.cfg.rate_limit.default_interval
  for _, v in pairs(pool.cfg.rate_limit.host_overrides) do iv = math.max(iv, v) end
  self.take_after = 1.5 * self.interval + iv
  self:round()
  self:arm()
  return self
end

function Share:arm()
  if self.stopped then return end
  self.timer = runtime.after(self.interval, function()
    self.timer = nil
    if self.stopped then return end
    runtime.spawn(function()
      if self.stopped then return end
      local ok, err = pcall(self.round, self)
      if not ok and not self.stopped then log.emit("warn", self.pool.name, "share: " .. tostring(err)) end
      self:arm()
    end)
  end)
end

local function section_json(pool)
  return table.concat(state.encode_section(pool, function() end))
end

local mine -- below

-- One round: heartbeat, publish, merge, partition.
function Share:round()
  local pool = self.pool
  if pool.closed then return end
  local got, err = self.c:eval(self.script, {}, { self.prefix, self.me, 0,
    math.floor(self.interval * 3000), section_json(pool), KEEP_MS, "1" })
  if not got then error(self.c.url .. ": " .. tostring(err), 0) end
  if pool.closed or self.stopped then return end
  local live = got[1] or {}
  local others = {}
  for _, s in ipairs(got[2] or {}) do
    local sec = s and cjson.decode(s)
    if type(sec) == "table" and core.state_check(sec) then others[#others + 1] = sec end
  end
  local off = wall_offset()
  local my_proxies, my_pairs = mine(pool, off)
  if #others > 0 then self:merge(others, my_proxies, my_pairs, off) end
  self:partition(live, my_proxies)
end

-- My pool's rows: proxies by key ({row, id}) and pairs by key and host.
function mine(pool, off)
  local proxies, pairs_ = {}, {}
  local from = 0
  while true do
    local rows, total = core.state_proxies(pool.c, from, 1000, off)
    for i, r in ipairs(rows) do proxies[r[1]] = { row = r, id = from + i - 1 } end
    from = from + 1000
    if from >= total then break end
  end
  local byrow = {}
  for key, p in pairs(proxies) do byrow[p.id + 1] = key end
  for hi, h in ipairs(core.state_hosts(pool.c)) do
    local t = {}
    pairs_[h] = t
    from = 0
    while true do
      local rows, total = core.state_pairs(pool.c, hi, from, 1000, off)
      for _, r in ipairs(rows) do t[byrow[r[1]]] = r end
      from = from + 1000
      if from >= total then break end
    end
  end
  return proxies, pairs_
end

-- Pairs are taken only where this worker has no pair of its own, or for a
-- proxy it does not use now: a restored pair starts its rate interval
-- afresh, which must never shorten a gap on a pair in use here.
function Share:merge(others, my_proxies, my_pairs, off)
  local pool = self.pool
  local out = { proxies = {}, hosts = {} }
  local rowof = {}
  local function prow(key, row)
    if not rowof[key] then
      out.proxies[#out.proxies + 1] = row
      rowof[key] = #out.proxies
    end
    return rowof[key]
  end
  for _, sec in ipairs(others) do
    -- proxies the other found dead, and no success here since
    for _, r in ipairs(sec.proxies) do
      local m = my_proxies[r[1]]
      if m and r[4] >= 0 and m.row[4] < 0 then
        local last_ok = -1
        for _, t in pairs(my_pairs) do
          local pr = t[r[1]]
          if pr and pr[5] > last_ok then last_ok = pr[5] end
        end
        if last_ok < r[4] then prow(r[1], { r[1], m.row[2], m.row[3], r[4] }) end
      end
    end
    for h, rows in pairs(sec.hosts) do
      local t = my_pairs[h] or {}
      my_pairs[h] = t
      for _, r in ipairs(rows) do
        local key = sec.proxies[r[1]][1]
        local p, m = my_proxies[key], t[key]
        local idle = not self.owned[key]
        if p and r[2] > 0 and (not m or (idle and (m[2] == 0 or r[6] > m[6]))) then
          local nr = { rowof[key] or prow(key, p.row) }
          for j = 2, #r do nr[j] = r[j] end
          out.hosts[h] = out.hosts[h] or {}
          table.insert(out.hosts[h], nr)
          t[key] = nr -- one other per pair and round
        end
      end
    end
  end
  if #out.proxies > 0 and core.state_check(out) then core.state_restore(pool.c, out, off) end
end

-- The proxies, ordered by hash, are dealt out to the live workers in turn
-- (every worker computes the same split from the same lists); this worker
-- uses only its own. A proxy won from another worker is taken up
-- take_after seconds later, once that one has let go of it. With fewer
-- proxies than workers every worker uses them all, at intervals stretched
-- by the worker count.
function Share:partition(live, my_proxies)
  local pool = self.pool
  local n = math.max(1, #live)
  table.sort(live) -- by name: the same order on every worker
  local me = 0
  for i, w in ipairs(live) do if w == self.me then me = i - 1 end end
  local keys = {}
  for key in pairs(my_proxies) do keys[#keys + 1] = { fnv(key), key } end
  table.sort(keys, function(x, y) return x[1] < y[1] or (x[1] == y[1] and x[2] < y[2]) end)
  local all = #keys < n
  local owner, mine_n = {}, 0
  for j, k in ipairs(keys) do
    owner[k[2]] = all or (j - 1) % n == me
    if owner[k[2]] then mine_n = mine_n + 1 end
  end
  local retired_by_feed = pool.feed and pool.feed.retired or {}
  local now = core.now()
  core.pool_hold(pool.c, true)
  for key, p in pairs(my_proxies) do
    if owner[key] then
      if not self.owned[key] then
        -- at once only for the first worker of a fleet: no one else holds it
        if (n == 1 and not self.rounds) or (self.want[key] and now - self.want[key] >= self.take_after) then
          self.want[key] = nil
          self.owned[key] = true
          if not retired_by_feed[key] then core.pool_retire(pool.c, p.id, false) end
        else
          self.want[key] = self.want[key] or now
          if self.owned[key] == nil then core.pool_retire(pool.c, p.id, true) end
          self.owned[key] = false
        end
      end
    else
      self.want[key] = nil
      if self.owned[key] ~= false then
        self.owned[key] = false
        core.pool_retire(pool.c, p.id, true)
      end
    end
  end
  core.pool_hold(pool.c, false)
  self.workers, self.mine, self.rounds = n, mine_n, (self.rounds or 0) + 1
  self:stretch(all and n or 1)
end

function Share:stretch(factor)
  local pool = self.pool
  if factor == 1 and not self.stretched then return end
  self.stretched = factor > 1
  local rl = pool.cfg.rate_limit
  for _, h in ipairs(core.state_hosts(pool.c)) do
    pool.c:host_interval(h, (rl.host_overrides[h] or rl.default_interval) * factor)
  end
end

-- Leaves the fleet (its proxies go to the others at their next round),
-- leaving its last section for the ones that come later.
function Share:stop()
  if self.stopped then return end
  self.stopped = true
  if self.timer then self.timer.cancelled = true end
  local json = self.pool.c and not self.pool.closed and section_json(self.pool) or ""
  self.c:eval(self.script, {}, { self.prefix, self.me, 0, 0, json, KEEP_MS, "0" })
  self.c:close()
end

M.fnv = fnv
return M
