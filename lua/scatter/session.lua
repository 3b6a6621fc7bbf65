-- Sessions (DESIGN.md section 12): a run of requests through one proxy
-- with one cookie jar, for logins, carts and paginated searches.
--
-- The first request races K proxies like pool:request and its winner
-- becomes the session's proxy; later requests go to that proxy alone
-- (pool:direct, outside the race, their outcomes still recorded in the
-- pool's health). A proxy_blocked verdict, max_errors failures in a row,
-- the proxy's death or cooldown, max_uses or max_age move the session:
-- its next request races again. The jar is curl's cookie engine's, kept
-- here between requests as curl exports it (Netscape lines).
local runtime = require("scatter.runtime")
local core = require("scatter.core")
local classifier = require("scatter.classifier")
local poolmod = require("scatter.pool")

local M = {}
local Session = {}
Session.__index = Session

local FIELDS = { max_uses = true, max_age = true, max_errors = true, reset_cookies = true }

local function check_opts(opts, where)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error(where .. ": bad argument #1 (options table expected, got " .. type(opts) .. ")", 3) end
  for k, v in pairs(opts) do
    if not FIELDS[k] then error(where .. ": unknown option '" .. tostring(k) .. "'", 3) end
    if k == "reset_cookies" then
      if type(v) ~= "boolean" then error(where .. ": reset_cookies must be a boolean", 3) end
    elseif k == "max_age" then
      if type(v) ~= "number" or v ~= v or v <= 0 then error(where .. ": max_age must be a number of seconds > 0", 3) end
    elseif type(v) ~= "number" or v < 1 or v ~= math.floor(v) then
      error(where .. ": " .. k .. " must be an integer >= 1", 3)
    end
  end
  return opts
end

-- pool: a scatter.pool. Returns a session.
function M.new(pool, opts, where)
  opts = check_opts(opts, where or "pool:session")
  return setmetatable({
    pool = pool, max_uses = opts.max_uses, max_age = opts.max_age,
    max_errors = opts.max_errors or 3, reset_cookies = opts.reset_cookies or false,
    jar = {}, uses = 0, errors = 0, moves = 0, proxy = nil,
  }, Session)
end

-- Forgets the proxy: the next request races again.
function Session:_move()
  if self.proxy_id then self.moves = self.moves + 1 end
  self.proxy_id, self.proxy, self.host = nil, nil, nil
  self.uses, self.errors = 0, 0
  if self.reset_cookies then self.jar = {} end
end

local function strip(resp)
  resp.proxy_id, resp.cookies = nil, nil
  return resp
end

-- The first request of a proxy: raced through the pool with the jar.
function Session:_race(req, url)
  local resp, err = poolmod.request(self.pool, req, url, self.jar)
  if not resp then return nil, err end
  self.proxy_id, self.proxy = resp.proxy_id, resp.proxy
  self.jar = resp.cookies or self.jar
  self.since = core.now()
  self.uses = 1
  return strip(resp)
end

-- The race's target_error backoff (sc_config_init's retry_backoff_base
-- and _max: no pool option sets them)
local BACKOFF_BASE, BACKOFF_MAX = 0.5, 30

local function verdict_of(pool, resp)
  if pool.classify == classifier.default then
    -- the race's consensus on a 404/410 (DESIGN.md 13) asks another proxy;
    -- a session asks only its own, whose answer is then the best there
    -- will be (retried on it, the page missing took the caller's timeout)
    if (resp.status == 404 or resp.status == 410) and pool.cfg.consensus_404 ~= false then
      return "final"
    end
    return classifier.default(resp)
  end
  local v = classifier.call(pool.classify, resp)
  return v
end

-- The result of a pinned request's op, or nil at the deadline (the op is
-- then cancelled and its result never read).
local function await_direct(c, op, deadline)
  local w = runtime.waiter()
  runtime.on_op(op, function(res)
    runtime.on_op(op, nil)
    runtime.wake(w, res)
  end)
  local timer = deadline and runtime.at(deadline, runtime.wake, w)
  local res = runtime.block(w)
  if timer then timer.cancelled = true end
  if not res then
    runtime.on_op(op, nil)
    c:direct_cancel(op)
  end
  return res
end

-- The caller's deadline passed with the pinned request still unanswered.
-- A proxy that accepts and then says nothing (common in free lists) never
-- failed otherwise: every later request timed out on it and the session
-- never moved. It is a failure in a row like any other.
local function pinned_timeout(self)
  self.errors = self.errors + 1
  self.last_error = "proxy_timeout: no answer through the session's proxy before the deadline (proxy "
    .. tostring(self.proxy) .. ")"
  if self.errors >= self.max_errors then self:_move() end
  return false, "timeout"
end

-- The session's proxy cannot carry this host at all (a socks4 proxy and a
-- name or IPv6 target): another proxy, raced, must.
local function unroutable(self, err)
  self.last_error = err
  return false, "move"
end

-- One try through the session's proxy. Returns resp, or false and what
-- to do next: "move", "again", "retry" (after a target_error: back off),
-- "timeout".
function Session:_pinned(req, url, host, method, headers, flags, deadline)
  local c = self.pool.c
  local op, rerr = c:direct(self.proxy_id, host, method, url, headers, req.body, req.max_body, flags, self.jar)
  if not op then return unroutable(self, rerr) end
  local res = await_direct(c, op, deadline)
  if not res then return pinned_timeout(self) end
  if res.err == "closed" then return false, "closed" end
  if res.err then
    self.last_error = res.err
    -- not the proxy's: the body's size, or this process (the race calls
    -- them target errors too)
    if res.err:match("^too_large:") or res.err:match("^local_error:") then return false, "retry" end
    self.errors = self.errors + 1
    return false, self.errors >= self.max_errors and "move" or "again"
  end
  local resp, latency = c:direct_response(op)
  if not resp then return false, "again" end
  local v = verdict_of(self.pool, resp)
  -- a 429 or 503 that says when to come back rests the pair that long, as
  -- a race's does (DESIGN.md section 11); recorded as a plain block it
  -- counted towards the pair's cooldown and eviction
  local rest
  if v ~= "success" and v ~= "final" and (resp.status == 429 or resp.status == 503) then
    local ra = resp.headers and classifier.first_field(resp.headers["retry-after"])
    rest = ra and core.retry_after(ra) or nil
    if rest then v = "proxy_blocked" end
  end
  c:record(self.proxy_id, host, v, latency, rest)
  if v == "success" or v == "final" then
    self.jar = resp.cookies or self.jar
    self.uses = self.uses + 1
    self.errors = 0
    resp.attempts = 1
    return strip(resp)
  end
  self.last_error = v .. ": HTTP " .. tostring(resp.status) .. " (proxy " .. tostring(resp.proxy) .. ")"
  if v == "proxy_blocked" then return false, "move" end
  if v == "target_error" then return false, "retry" end
  self.errors = self.errors + 1
  return false, self.errors >= self.max_errors and "move" or "again"
end

-- The loop every request of a session goes through: pinned to its proxy
-- while it has a usable one, raced (race(remaining seconds)) when not;
-- pinned() answers resp, or false and what next ("move", "again",
-- "retry", "timeout", "closed").
function Session:_run(host, t0, deadline, race, pinned)
  local backoff = 0
  self.last_error = nil -- this request's, not an earlier one's
  while true do
    -- (again after a backoff: the pool may have closed while it slept)
    if self.pool.closed or self.closed then return nil, "closed" end
    if self.proxy_id then
      -- a proxy its source dropped gets no new attempts, pinned ones too
      local feed = self.pool.feed
      local expired = (self.max_uses and self.uses >= self.max_uses)
        or (self.max_age and core.now() - self.since >= self.max_age)
        or not self.pool.c:pair_usable(self.proxy_id, host)
        or (feed and feed:is_retired(self.proxy_id))
      if expired then self:_move() end
    end
    if not self.proxy_id then
      local resp, err = race(deadline and math.max(0.001, deadline - core.now()))
      -- moved by a pinned failure, the race found no proxy in time: the
      -- pool saw no attempt, but the caller must learn what went wrong
      if not resp and self.last_error and type(err) == "string"
        and (err == "timeout" or err:match("^timeout: no attempt started")) then
        err = "timeout: last error: " .. self.last_error
      end
      return resp, err
    end
    local resp, what = pinned()
    if resp then
      resp.elapsed = core.now() - t0
      return resp
    end
    if what == "closed" then return nil, "closed" end
    if what == "timeout" then
      return nil, self.last_error and ("timeout: last error: " .. self.last_error) or "timeout"
    end
    if self.pool.closed or self.closed then return nil, "closed" end
    if what == "move" then
      self:_move()
    elseif what == "retry" then
      -- the target's fault: back off as the pool would
      backoff = backoff == 0 and BACKOFF_BASE or math.min(backoff * 2, BACKOFF_MAX)
      if deadline and core.now() + backoff >= deadline then
        return nil, "timeout: last error: " .. self.last_error
      end
      runtime.sleep(backoff)
    end
  end
end

function Session:_request(req, url)
  if self.closed then return nil, "closed" end
  if self.pool.closed then return nil, "closed" end
  local host, method, headers, flags = poolmod.check(req, url)
  if not host then return nil, method end
  local t0 = core.now()
  local deadline = req.timeout and (t0 + req.timeout)
  return self:_run(host, t0, deadline, function(remaining)
    local r = req
    if remaining then
      r = {}
      for k, v in pairs(req) do r[k] = v end
      r.timeout = remaining
    end
    return self:_race(r, url)
  end, function()
    return self:_pinned(req, url, host, method, headers, flags, deadline)
  end)
end

-- One tunnel through the session's proxy (pool:direct, flag 8).
function Session:_pinned_tunnel(url, host, deadline)
  local c = self.pool.c
  local op, rerr = c:direct(self.proxy_id, host, "CONNECT", url, nil, nil, nil, 8, nil)
  if not op then return unroutable(self, rerr) end
  local res = await_direct(c, op, deadline)
  if not res then return pinned_timeout(self) end
  if res.err == "closed" then return false, "closed" end
  local tun, latency
  if not res.err then tun, latency = c:direct_tunnel(op) end
  if not tun then
    self.errors = self.errors + 1
    self.last_error = res.err or "transport: the tunnel was lost"
    return false, self.errors >= self.max_errors and "move" or "again"
  end
  c:record(self.proxy_id, host, "success", latency)
  self.uses = self.uses + 1
  self.errors = 0
  return { status = 200, tunnel = tun, proxy = self.proxy, attempts = 1 }
end

-- For `scatter serve`: a CONNECT tunnel to host:port through the
-- session's proxy; the first one (and one after a move) is raced by
-- pool:_tunnel and its winner becomes the session's proxy. Returns
-- pool:_tunnel's answer or nil, err.
function Session:_tunnel(host, port, timeout)
  if self.closed or self.pool.closed then return nil, "closed" end
  local url = "http://" .. (host:find(":", 1, true) and ("[" .. host .. "]") or host) .. ":" .. port
  local h, why = poolmod.parse_url(url)
  if not h then return nil, "invalid_request: " .. tostring(why) end
  local t0 = core.now()
  local deadline = timeout and (t0 + timeout)
  return self:_run(h, t0, deadline, function(remaining)
    local resp, err = self.pool:_tunnel(host, port, remaining)
    if not resp then return nil, err end
    self.proxy_id, self.proxy = resp.proxy_id, resp.proxy
    resp.proxy_id = nil
    self.since, self.uses, self.errors = core.now(), 1, 0
    return resp
  end, function()
    return self:_pinned_tunnel(url, h, deadline)
  end)
end

function Session:request(req)
  if getmetatable(self) ~= Session then error("session:request: call it as session:request(...)", 2) end
  if type(req) ~= "table" then
    error("session:request: bad argument #1 (request table expected, got " .. type(req) .. ")", 2)
  end
  return self:_request(req, req.url)
end

function Session:get(url, opts)
  if getmetatable(self) ~= Session then error("session:get: call it as session:get(...)", 2) end
  if type(url) ~= "string" then
    error("session:get: bad argument #1 (URL string expected, got " .. type(url) .. ")", 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("session:get: bad argument #2 (options table expected, got " .. type(opts) .. ")", 2)
  end
  opts = opts or {}
  if opts.method ~= nil and tostring(opts.method):upper() ~= "GET" then
    return nil, "invalid_request: session:get is GET only; use session:request"
  end
  return self:_request(opts, url)
end

-- The cookie jar as curl exports it (one Netscape cookie-file line each).
function Session:cookies()
  local out = {}
  for i, l in ipairs(self.jar) do out[i] = l end
  return out
end

function Session:close()
  self.closed = true
  self.jar = {}
  self.proxy_id, self.proxy = nil, nil
end

Session.__tostring = function(self)
  return "scatter.session" .. (self.proxy and (" [" .. self.proxy .. "]") or "")
end

-- ---- on a router: one session per host's pool ----

local RouterSession = {}
RouterSession.__index = RouterSession

function M.for_router(router, opts)
  check_opts(opts, "router:session")
  return setmetatable({ router = router, opts = opts, by_pool = {}, moves = 0 }, RouterSession)
end

-- s.proxy and s.moves, as a pool's session has them (the proxy of the
-- host last asked; the moves of every host's session)
local function sync(self, s)
  self.proxy = s.proxy
  local moves = 0
  for _, hs in pairs(self.by_pool) do moves = moves + hs.moves end
  self.moves = moves
end

function RouterSession:_for(url)
  if self.closed then return nil, "closed" end
  local host, why = poolmod.parse_url(url)
  if not host then return nil, "invalid_request: " .. tostring(why) end
  local pool, perr = self.router:pool(host)
  if not pool then return nil, perr or ("unknown_host: " .. host) end
  local s = self.by_pool[pool]
  if not s then
    s = M.new(pool, self.opts, "router:session")
    self.by_pool[pool] = s
  end
  sync(self, s)
  return s
end

function RouterSession:_tunnel(host, port, timeout)
  local s, err = self:_for("http://" .. (host:find(":", 1, true) and ("[" .. host .. "]") or host) .. ":" .. port)
  if not s then return nil, err end
  local resp, rerr = s:_tunnel(host, port, timeout)
  sync(self, s)
  return resp, rerr
end

function RouterSession:request(req)
  if type(req) ~= "table" then error("session:request: bad argument #1 (request table expected)", 2) end
  local s, err = self:_for(req.url)
  if not s then return nil, err end
  local resp, rerr = s:request(req)
  sync(self, s)
  return resp, rerr
end

function RouterSession:get(url, opts)
  if type(url) ~= "string" then error("session:get: bad argument #1 (URL string expected)", 2) end
  local s, err = self:_for(url)
  if not s then return nil, err end
  local resp, rerr = s:get(url, opts)
  sync(self, s)
  return resp, rerr
end

-- Every host's jar (the hosts' sessions keep one each), in host order.
function RouterSession:cookies()
  local hosts, out = {}, {}
  for _, s in pairs(self.by_pool) do hosts[#hosts + 1] = s end
  table.sort(hosts, function(a, b) return (a.pool.name or "") < (b.pool.name or "") end)
  for _, s in ipairs(hosts) do
    for _, l in ipairs(s:cookies()) do out[#out + 1] = l end
  end
  return out
end

function RouterSession:close()
  self.closed = true
  for _, s in pairs(self.by_pool) do s:close() end
  self.proxy = nil
end

return M
