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
--
-- A list is parsed a slice at a time in C (core.list_load: about M.SLICE
-- seconds per loop turn; each proxy goes straight into the scheduler), and
-- kept as an array of proxy ids, not a table of keys: a 3.18M-line list
-- blocked scatter.pool{} for 13.7 s at 1.1 GB. The hold ends with the
-- first slice of every initial list, so dispatch starts with the first
-- proxies while the rest load; membership (retiring the unlisted) is
-- settled when a list has been read to its end.
local core = require("scatter.core")
local runtime = require("scatter.runtime")
local sources = require("scatter.sources")
local log = require("scatter.log")

local M = {}
M.SLICE = 0.005 -- seconds of list parsing per loop turn
local Feed = {}
Feed.__index = Feed

local function is_file(url) return sources.file_path(url) ~= nil end

-- pool: the Lua pool (pool.c, pool.cfg, pool.name), its inline proxies
-- already added. restored: what its state file brought back, or nil.
function M.start(pool, restored)
  local self = setmetatable({
    c = pool.c, cfg = pool.cfg, name = pool.name,
    inline = {}, lists = {}, known = core.list_new(), inline_ids = core.list_new(), socks4 = 0,
  }, Feed)
  -- the proxies this feed retired, by key (scatter.share reads it)
  self.retired = setmetatable({}, { __index = function(_, key) return self.known:retired(self.c, key) end })
  for _, line in ipairs(self.cfg.proxies) do
    local key = core.parse_proxy(line) -- pool.new has rejected bad ones
    if key then self.inline[#self.inline + 1] = key end
  end
  local inline_ids = core.pool_add_keys(self.c, self.inline)
  self.inline_ids:add(inline_ids)
  self.known:add(inline_ids)
  for _, key in ipairs(self.inline) do
    if key:sub(1, 9) == "socks4://" then self.socks4 = self.socks4 + 1 end
  end
  self:warn_socks4()
  if restored then
    local all = {}
    for _, id in pairs(restored.ids) do all[#all + 1] = id end
    self.known:add(all)
    for _, src in ipairs(self.cfg.sources) do
      local _, _, id = sources.source(src)
      local keys = restored.lists[id]
      if keys then
        local ids = {}
        for j, key in ipairs(keys) do ids[j] = restored.ids[key] end
        self.lists[id] = core.list_new():add(ids)
      end
    end
  end

  self.counted = #self.known -- "new" in the sources line counts from here
  local remote = 0
  for _, src in ipairs(self.cfg.sources) do
    if not is_file((sources.source(src))) then remote = remote + 1 end
  end
  local hold = remote > 0 and not (restored and self:has_known_good())
  if hold then
    core.pool_hold(self.c, true)
    self.holding = true
  end
  -- the first slice of every list ends the hold; each list's end settles
  -- membership (and the dead proxies it lists again get a probe)
  local all, firsts = {}, #self.cfg.sources
  local function first()
    firsts = firsts - 1
    if firsts == 0 and self.holding then
      self.holding = false
      if not self.stopped then core.pool_hold(self.c, false) end
    end
  end
  for i, src in ipairs(self.cfg.sources) do all[i] = { i, src } end
  -- local lists alone: no "sources:" line for what the pool opened with
  self:fetch_all(all, remote > 0, first, function()
    if not self.stopped then self:warn_if_empty() end
    self:arm()
  end)
  if #self.cfg.sources == 0 then
    self:apply(false)
    self:warn_if_empty()
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

-- Fetches one source and parses it, a slice per loop turn, into a new
-- list that replaces self.lists[id] once read to its end (a failure keeps
-- its last list). first() is called once, after the first slice or the
-- failure; done(true when it got a list) at the end. Fetches are ops and
-- slices timers, not threads: a load in progress never keeps scatter.run
-- (or a closed pool) waiting.
function Feed:fetch(i, src, first, done)
  local url, scheme, id = sources.source(src)
  local opts = { max_age = self.cfg.source_refresh_interval, name = self.name, scheme = scheme }
  local shown = sources.redact(url)
  local function skip(err)
    log.emit("warn", self.name, "source " .. i .. " skipped: " .. err
      .. (self.lists[id] and " (keeping its last list)" or ""))
  end
  sources.fetch_body(url, opts, function(body, err)
    if self.stopped then
      first()
      return done(false)
    end
    if not body then
      skip(err)
      first()
      return done(false)
    end
    local list = core.list_new()
    local from, bad, first_bad, first_why, socks4, started = 0, 0, nil, nil, 0, false
    local function slice()
      self.loading = nil
      if self.stopped then return done(false) end
      local nx, _, b, fb, s4, why = core.list_load(list, self.c, body, from, M.SLICE, scheme)
      if fb and not first_bad then first_bad, first_why = fb, why end
      bad, socks4 = bad + b, socks4 + s4
      if not started then
        started = true
        first()
      end
      if nx then
        from = nx
        self.loading = runtime.after(0, slice) -- the next loop turn
        return
      end
      if #list == 0 then
        -- an error page or a broken list: keeping the current list is
        -- better than retiring every proxy
        skip(bad == 0 and (shown .. ": no proxies in the list")
          or string.format("%s: no proxies in %d line(s) (not a proxy list?), first: %s", shown, bad,
            sources.show_bad(first_bad, first_why)))
        return done(false)
      end
      if bad > 0 then
        log.emit("warn", self.name, string.format("source %s: skipped %d bad line(s), first: %s",
          shown, bad, sources.show_bad(first_bad, first_why)))
      end
      self.lists[id] = list
      self.socks4 = self.socks4 + socks4
      self:warn_socks4()
      done(true)
    end
    slice()
  end)
end

-- socks4 carries addresses only (DESIGN.md section 11): with remote DNS
-- on, such a proxy can serve IP-literal targets only. Said once a pool.
function Feed:warn_socks4()
  if self.warned_socks4 or not self.cfg.prefer_remote_dns then return end
  local n = self.socks4
  if n == 0 then return end
  self.warned_socks4 = true
  local one = n == 1
  log.emit("warn", self.name, string.format("%d socks4 prox%s no names and prefer_remote_dns is on: "
    .. "%s IP-literal targets only (socks4a:// or prefer_remote_dns = false resolve names)",
    n, one and "y resolves" or "ies resolve", one and "it serves" or "they serve"))
end

-- Fetches the sources in parallel; first() after each one's first slice
-- (or failure), then applies the result and calls done(ids of the lists
-- fetched).
function Feed:fetch_all(which, verbose, first, done)
  local left, fetched = #which, {}
  for _, s in ipairs(which) do
    self:fetch(s[1], s[2], first, function(got)
      if got then fetched[#fetched + 1] = select(3, sources.source(s[2])) end
      left = left - 1
      if left > 0 then return end
      if not self.stopped then
        self:apply(verbose)
        self:probe(fetched)
      end
      done(fetched)
    end)
  end
end

-- Brings the scheduler in line with inline + lists: retires the proxies
-- no list has any more, revives the listed again (the lists' new proxies
-- went in as they were parsed).
function Feed:apply(verbose)
  local lists = { self.inline_ids }
  for _, src in ipairs(self.cfg.sources) do
    lists[#lists + 1] = self.lists[select(3, sources.source(src))]
  end
  local before = self.counted or 0
  local retired, revived = core.list_apply(self.c, self.known, lists)
  self.counted = #self.known
  local new = self.counted - before
  if verbose and (new > 0 or retired > 0 or revived > 0) then
    log.emit("info", self.name, string.format("sources: %d new, %d retired, %d revived proxies",
      new, retired, revived))
  end
end

-- Dead proxies listed again by these sources get a probe (after resting).
function Feed:probe(urls)
  local n = 0
  for _, url in ipairs(urls) do
    if self.lists[url] then n = n + core.list_probe(self.c, self.lists[url]) end
  end
  if n > 0 then log.emit("info", self.name, "sources: " .. n .. " dead proxies listed again get a probe") end
end

function Feed:arm()
  if self.stopped or #self.cfg.sources == 0 then return end
  self.timer = runtime.after(self.cfg.source_refresh_interval, function()
    if self.stopped then return end
    local all = {}
    for i, src in ipairs(self.cfg.sources) do all[i] = { i, src } end
    self:fetch_all(all, true, function() end, function() self:arm() end)
  end)
end

-- For the state file: each source's list as 1-based proxy rows (id + 1).
function Feed:source_rows()
  local out = {}
  for url, list in pairs(self.lists) do out[url] = list:rows() end
  return out
end

-- Why no task can start yet, or nil: dispatch is held until the first
-- slice of every initial list is in (M.start). A task that timed out
-- meanwhile read "no_proxies (its lists were empty, missing or failed)",
-- or "rate limits" when inline proxies waited for the lists too.
function Feed:held()
  if self.holding and not self.stopped then return "the pool's proxy lists are still loading" end
end

-- True when the feed retired proxy `id` (no source lists it any more).
function Feed:is_retired(id)
  return self.known:out(id)
end

-- Marks pool:proxies() entries that no source lists any more.
function Feed:mark(list)
  for _, p in ipairs(list) do p.retired = self.retired[p.key] or false end
  return list
end

function Feed:stop()
  self.stopped = true
  if self.timer then self.timer.cancelled = true end
  if self.loading then self.loading.cancelled = true end
end

return M
