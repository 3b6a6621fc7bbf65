-- A pool's proxy membership: its inline proxies plus the latest good list
-- of each source. Sources are fetched when the pool opens, without holding
-- up its creation, and every source_refresh_interval; a failed fetch keeps
-- the source's last list. A proxy that no source lists any more is retired
-- (no new attempts, history kept) and revived when listed again; a dead
-- proxy that is listed again after resting cooldown_max gets one probe.
--
-- Until the initial fetches have ended (each is bounded by the fetch
-- timeout) the pool's scheduler is held, so the first tasks choose among
-- every listed proxy -- unless a state file brought back proxies that are
-- known to work, which are used at once.
local core = require("scatter.core")
local runtime = require("scatter.runtime")
local sources = require("scatter.sources")
local log = require("scatter.log")

local M = {}
local Feed = {}
Feed.__index = Feed

local function is_file(url) return sources.file_path(url) ~= nil end

-- pool: the Lua pool (pool.c, pool.cfg, pool.name), its inline proxies
-- already added. restored: what its state file brought back, or nil.
function M.start(pool, restored)
  local self = setmetatable({
    c = pool.c, cfg = pool.cfg, name = pool.name,
    inline = {}, lists = {}, ids = {}, retired = {},
  }, Feed)
  for _, line in ipairs(self.cfg.proxies) do
    local key = core.parse_proxy(line) -- pool.new has rejected bad ones
    if key then self.inline[#self.inline + 1] = key end
  end
  local ids = core.pool_add_keys(self.c, self.inline)
  for i, key in ipairs(self.inline) do self.ids[key] = ids[i] end
  self:warn_socks4(self.inline)
  if restored then
    for key, id in pairs(restored.ids) do self.ids[key] = id end
    for _, src in ipairs(self.cfg.sources) do
      local _, _, id = sources.source(src)
      self.lists[id] = restored.lists[id]
    end
  end

  local remote, read = {}, {}
  for i, src in ipairs(self.cfg.sources) do
    local url, _, id = sources.source(src)
    if is_file(url) then
      self:fetch(i, src, function(got) -- local: read now
        if got then read[#read + 1] = id end
      end)
    else
      remote[#remote + 1] = { i, src }
    end
  end
  self:apply(false)
  self:probe(read)
  if #remote == 0 then self:warn_if_empty() end
  if #remote > 0 then
    if not (restored and self:has_known_good()) then
      core.pool_hold(self.c, true)
      self.holding = true
    end
    self:fetch_all(remote, function()
      if self.holding and not self.stopped then core.pool_hold(self.c, false) end
      self.holding = false
      if not self.stopped then self:warn_if_empty() end
      self:arm()
    end)
  else
    self:arm()
  end
  return self
end

-- An empty pool says so at once: its tasks can only time out (with
-- "no_proxies" in the error), or wait for good without a timeout.
function Feed:warn_if_empty()
  local m = self.c:metrics()
  if m.total_proxies - m.retired_proxies > 0 then return end
  log.emit("warn", self.name, "no proxies: "
    .. (#self.cfg.sources > 0 and "every proxy source was empty, missing or failed" or "no proxies were given")
    .. "; requests can only time out until a source refresh brings some")
end

-- True when a proxy in the pool is alive, listed and has worked before.
function Feed:has_known_good()
  for _, p in ipairs(self.c:proxies()) do
    if not p.dead and p.successes > 0 and not self.retired[p.key] then return true end
  end
  return false
end

-- Fetches one source into self.lists (a failure keeps its last list),
-- then calls done(true when it got a list). Fetches are ops, not threads:
-- one in progress never keeps scatter.run (or a closed pool) waiting.
function Feed:fetch(i, src, done)
  local url, scheme, id = sources.source(src)
  local opts = { max_age = self.cfg.source_refresh_interval, name = self.name, scheme = scheme }
  sources.fetch(url, opts, function(list, err)
    if self.stopped then return done(false) end
    if not list then
      log.emit("warn", self.name, "source " .. i .. " skipped: " .. err
        .. (self.lists[id] and " (keeping its last list)" or ""))
      return done(false)
    end
    self.lists[id] = list.keys
    self:warn_socks4(list.keys)
    done(true)
  end)
end

-- socks4 carries addresses only (DESIGN.md section 11): with remote DNS
-- on, such a proxy can serve IP-literal targets only. Said once a pool.
function Feed:warn_socks4(keys)
  if self.warned_socks4 or not self.cfg.prefer_remote_dns then return end
  local n = 0
  for _, key in ipairs(keys) do
    if key:sub(1, 9) == "socks4://" then n = n + 1 end
  end
  if n == 0 then return end
  self.warned_socks4 = true
  log.emit("warn", self.name, string.format("%d socks4 prox%s resolve no names and prefer_remote_dns is on: "
    .. "they serve IP-literal targets only (socks4a:// or prefer_remote_dns = false resolve names)",
    n, n == 1 and "y" or "ies"))
end

-- Fetches the sources in parallel, applies the result, then done().
function Feed:fetch_all(which, done)
  local left, fetched = #which, {}
  for _, s in ipairs(which) do
    self:fetch(s[1], s[2], function(got)
      if got then fetched[#fetched + 1] = select(3, sources.source(s[2])) end
      left = left - 1
      if left > 0 then return end
      if not self.stopped then
        self:apply(true)
        self:probe(fetched)
      end
      done()
    end)
  end
end

-- Brings the scheduler in line with inline + lists: adds new proxies,
-- retires the unlisted, revives the listed again.
function Feed:apply(verbose)
  local member, order = {}, {}
  local function take(key)
    if not member[key] then
      member[key] = true
      order[#order + 1] = key
    end
  end
  for _, key in ipairs(self.inline) do take(key) end
  for _, src in ipairs(self.cfg.sources) do
    for _, key in ipairs(self.lists[select(3, sources.source(src))] or {}) do take(key) end
  end
  local new = {}
  for _, key in ipairs(order) do
    if not self.ids[key] then new[#new + 1] = key end
  end
  local ids = core.pool_add_keys(self.c, new)
  for i, key in ipairs(new) do self.ids[key] = ids[i] end
  local retired, revived = 0, 0
  core.pool_hold(self.c, true) -- revive them all before anything dispatches
  for key, id in pairs(self.ids) do
    local out = not member[key]
    if out ~= (self.retired[key] or false) then
      core.pool_retire(self.c, id, out)
      self.retired[key] = out or nil
      if out then retired = retired + 1 else revived = revived + 1 end
    end
  end
  core.pool_hold(self.c, false)
  if verbose and (#new > 0 or retired > 0 or revived > 0) then
    log.emit("info", self.name, string.format("sources: %d new, %d retired, %d revived proxies",
      #new, retired, revived))
  end
end

-- Dead proxies listed again by these sources get a probe (after resting).
function Feed:probe(urls)
  local ids, seen = {}, {}
  for _, url in ipairs(urls) do
    for _, key in ipairs(self.lists[url] or {}) do
      if not seen[key] then
        seen[key] = true
        ids[#ids + 1] = self.ids[key]
      end
    end
  end
  local n = core.pool_probe(self.c, ids)
  if n > 0 then log.emit("info", self.name, "sources: " .. n .. " dead proxies listed again get a probe") end
end

function Feed:arm()
  if self.stopped or #self.cfg.sources == 0 then return end
  self.timer = runtime.after(self.cfg.source_refresh_interval, function()
    if self.stopped then return end
    local all = {}
    for i, src in ipairs(self.cfg.sources) do all[i] = { i, src } end
    self:fetch_all(all, function() self:arm() end)
  end)
end

-- For the state file: each source's list as 1-based proxy rows (id + 1).
function Feed:source_rows()
  local out = {}
  for url, keys in pairs(self.lists) do
    local rows = {}
    for _, key in ipairs(keys) do
      local id = self.ids[key] -- nil for a list fetched but not yet applied
      if id then rows[#rows + 1] = id + 1 end
    end
    out[url] = rows
  end
  return out
end

-- Marks pool:proxies() entries that no source lists any more.
function Feed:mark(list)
  for _, p in ipairs(list) do p.retired = self.retired[p.key] or false end
  return list
end

function Feed:stop()
  self.stopped = true
  if self.timer then self.timer.cancelled = true end
end

return M
