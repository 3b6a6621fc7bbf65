-- A pool: proxies, a scheduler (in C) and the Lua side of its tasks:
-- waiting callers, classification, delivery.
local core = require("scatter.core")
local runtime = require("scatter.runtime")
local config = require("scatter.config")
local classifier = require("scatter.classifier")
local log = require("scatter.log")
local feed = require("scatter.feed")
local sources = require("scatter.sources")
local state = require("scatter.state")
local metrics = require("scatter.metrics")

local M = {}
local Pool = {}
Pool.__index = Pool
local Handle = {}
Handle.__index = Handle

M.open = setmetatable({}, { __mode = "k" }) -- pools to close at exit

local IDEMPOTENT = { GET = true, HEAD = true, OPTIONS = true }
-- What curl itself refuses locally (its send buffer, its URL parser) is
-- refused here first, as invalid_request: failing inside curl, it was
-- charged to every proxy that tried it.
M.MAX_URL = 65536
M.MAX_HEADER_LINE = 65536
M.MAX_HEADERS = 262144
M.MAX_BODY = 2 ^ 32 -- max_body: bytes buffered for one response
local REQ_FIELDS = {
  method = true, url = true, headers = true, body = true, timeout = true,
  race = true, follow_redirects = true, max_body = true, insecure = true,
}
M.REQ_FIELDS = REQ_FIELDS

-- ---- requests ----

-- Returns host or nil, reason.
function M.parse_url(u)
  if type(u) ~= "string" then return nil, "url must be a string, got " .. type(u) end
  if #u > M.MAX_URL then return nil, "url longer than " .. M.MAX_URL .. " bytes" end
  if u:find("%z") then return nil, "url contains a NUL byte" end
  return core.url_host(u)
end

local NO_HEADERS = {} -- only read (by C)

local function header_lines(h)
  if h == nil then return NO_HEADERS end
  if type(h) ~= "table" then return nil, "headers must be a table" end
  local out, total = {}, 0
  for name, value in pairs(h) do
    if type(name) ~= "string" or not name:match("^[%w!#$%%&'*+%-.^_`|~]+$") then
      return nil, "bad header name " .. ("%q"):format(runtime.show(name))
    end
    local vals = type(value) == "table" and value or { value }
    for _, v in ipairs(vals) do
      if type(v) == "number" then v = tostring(v) end
      if type(v) ~= "string" then return nil, "header '" .. name .. "' must be a string" end
      if v:find("[\r\n%z]") then return nil, "header '" .. name .. "' contains CR, LF or NUL" end
      if #name + #v + 2 > M.MAX_HEADER_LINE then
        return nil, "header '" .. name .. "' is longer than " .. M.MAX_HEADER_LINE .. " bytes"
      end
      total = total + #name + #v + 4
      if total > M.MAX_HEADERS then return nil, "headers are longer than " .. M.MAX_HEADERS .. " bytes in all" end
      -- "Name:" with nothing after it would make curl drop the header
      out[#out + 1] = v == "" and (name .. ";") or (name .. ": " .. v)
    end
  end
  return out
end

local function bad(msg) return nil, "invalid_request: " .. msg end

local EMPTY = {}

-- Checks request `req` (its url: `url`, which pool:get passes apart) and
-- returns what the C pool takes: host, method, header lines, flags (1
-- follow redirects, 2 insecure, 4 no race); or nil, "invalid_request: ...".
-- (no closure or table in here: this runs for every request)
local function check(req, url)
  for k in pairs(req) do
    if not REQ_FIELDS[k] then return bad("unknown field '" .. runtime.show(k) .. "'") end
  end
  local method = req.method or "GET"
  if method ~= "GET" then
    if type(method) ~= "string" or not method:match("^%a+$") then return bad("bad method") end
    method = method:upper()
  end
  local host, why = M.parse_url(url)
  if not host then return bad(why) end
  local headers, herr = header_lines(req.headers)
  if not headers then return bad(herr) end
  if req.body ~= nil and type(req.body) ~= "string" then return bad("body must be a string") end
  local t = req.timeout
  if t ~= nil and (type(t) ~= "number" or t ~= t or t <= 0 or t > config.MAX_SECONDS) then
    return bad("timeout must be a number of seconds > 0 (at most " .. config.MAX_SECONDS .. ")")
  end
  local mb = req.max_body
  if mb ~= nil and (type(mb) ~= "number" or mb < 0 or mb ~= math.floor(mb) or mb > M.MAX_BODY) then
    return bad(("max_body must be a whole number of bytes from 0 to %.0f"):format(M.MAX_BODY))
  end
  local race = req.race
  if race == nil then race = IDEMPOTENT[method] or false end
  return host, method, headers,
    (req.follow_redirects and 1 or 0) + (req.insecure and 2 or 0) + (race and 0 or 4)
end

-- check(req, url) for callers that check a request before they have one
-- to send (scatter.crawl's fields common to every item, item:push).
M.check_request = check

-- ---- pool ----

local function metrics_line(self)
  local m = self:metrics()
  return string.format(
    "throughput=%.1f/s | success=%d%% | pool: %d healthy, %d untested, %d failing, %d cooldown, %d dead"
      .. " | tasks: %d pending, %d delayed, %d inflight | K=%d",
    m.throughput_10s, math.floor(m.success_rate_1m * 100 + 0.5), m.healthy_proxies, m.untested_proxies,
    m.failing_proxies, m.cooldown_proxies,
    m.dead_proxies, m.pending_tasks, m.delayed_tasks, m.inflight, m.k_current)
    -- only when there is something to say: most pools never see one
    .. (m.classifier_errors > 0 and string.format(" | classifier: %d errors, %d timeouts",
      m.classifier_errors, m.classifier_timeouts) or "")
end

local function arm_metrics(self)
  local iv = self.cfg.metrics_log_interval
  if iv <= 0 then return end
  self.metrics_timer = runtime.after(iv, function()
    if self.closed then return end
    log.emit("info", self.name, metrics_line(self))
    arm_metrics(self)
  end)
end

function M.new(cfg, where)
  where = where or "scatter.pool"
  cfg = config.validate(cfg, where)
  local cc = config.to_core(cfg)
  cc.remote_dns = cfg.prefer_remote_dns
  cc.ca_file = cfg.ca_file
  cc.proxy_ca_file = cfg.proxy_ca_file
  cc.tls_session_sharing = cfg.tls_session_sharing
  cc.consensus_404 = cfg.consensus_404
  local c = core.pool_new(cc)
  local self = setmetatable({
    c = c, cfg = cfg, name = cfg.name, tasks = {}, room = {},
    classify = classifier.check(cfg.classifier, where),
    classifier_errors = 0, classifier_timeouts = 0, last_classifier_log = -math.huge,
  }, Pool)
  for host, iv in pairs(cfg.rate_limit.host_overrides) do c:host_interval(host, iv) end
  for i, line in ipairs(cfg.proxies) do
    local key, err
    if line:find("%z") then
      err = "contains a NUL byte" -- the C parser's "spaces" named it wrongly
    else
      key, err = c:add_proxy(line)
    end
    if key == nil then
      c:close()
      error(where .. ": proxies[" .. i .. "]: " .. err .. ": "
        .. log.redact(("%q"):format(sources.show_line(line))), 0)
    end
  end
  if cfg.metrics_listen then
    local tok, merr = metrics.serve(cfg.metrics_listen, function() return { self } end)
    if not tok then
      c:close()
      error(where .. ": metrics_listen: " .. merr, 0)
    end
    self.metrics_token = tok
  end
  -- the state file first: the feed needs to know what it brought back
  local ok, err = pcall(function()
    local restored
    self.state, restored = state.attach(self, where)
    self.feed = feed.start(self, restored)
    if cfg.share then self.share = require("scatter.share").start(self, where) end
  end)
  if not ok then
    self:close()
    error(err, 0)
  end
  runtime.handlers[c:id()] = function(ah, th) self:_on_response(ah, th) end
  arm_metrics(self)
  M.open[self] = true
  return self
end

local function wake_room(self)
  if self.room[1] then runtime.wake(table.remove(self.room, 1)) end
end

local function finish(self, rec, resp, err)
  if rec.ended then return end
  rec.ended, rec.resp, rec.err = true, resp, err
  self.tasks[rec.th] = nil
  local ws = rec.waiters
  rec.waiters = nil
  if ws then
    for _, w in ipairs(ws) do runtime.wake(w) end
  end
  wake_room(self)
end

-- A won task's response goes to its waiters.
local function deliver(self, th, resp, attempts)
  local rec = self.tasks[th]
  if not rec then return end
  resp.attempts = attempts
  resp.elapsed = core.now() - rec.t0
  finish(self, rec, resp, nil)
end

function Pool:_on_response(ah, th)
  local rec = self.tasks[th]
  if rec and rec.tunnel then
    -- an open tunnel has nothing to classify: it wins its task
    local tun, proxy, attempts, pid = self.c:tunnel(ah)
    if tun then deliver(self, th, { status = 200, tunnel = tun, proxy = proxy, proxy_id = pid }, attempts) end
    return
  end
  if self.classify == classifier.default then
    -- classified in C, and a failed attempt never becomes a Lua table
    local resp, attempts = self.c:settle_default(ah)
    if resp then deliver(self, th, resp, attempts) end
    return
  end
  local resp = self.c:response(ah)
  if not resp then return end -- its task ended meanwhile
  local verdict, err, timed_out = classifier.call(self.classify, resp, self.cfg.classifier_timeout, self.name or "")
  if timed_out then self.classifier_timeouts = self.classifier_timeouts + 1 end
  if err then
    self.classifier_errors = self.classifier_errors + 1
    local now = core.now()
    if now - self.last_classifier_log >= 1 then
      self.last_classifier_log = now
      log.emit("error", self.name, err .. " (treated as target_error)")
    end
  end
  -- the classifier closed the pool (pool:close, scatter.close_all): the
  -- task ended "closed" and the C pool is gone
  if self.closed then return end
  local attempts = self.c:attempts(th)
  if self.c:verdict(ah, verdict, err) then deliver(self, th, resp, attempts) end
end

local function check_open(self, fname)
  if getmetatable(self) ~= Pool then
    error("pool:" .. fname .. ": call it as pool:" .. fname .. "(...)", 3)
  end
end

-- a wait for room ran out: w.pool is the pool it waits in
local function room_expired(w)
  local room = w.pool.room
  for i = 1, #room do
    if room[i] == w then table.remove(room, i) break end
  end
  w.expired = true
  runtime.wake(w)
end

-- Returns handle or nil, err; waits for room when `wait`, until
-- `deadline` (scatter.now() time) if given. `url` is req.url, or
-- pool:get's URL (then req holds only its options).
local function submit(self, req, url, wait, deadline, cookies)
  if self.closed then return nil, "closed" end
  local host, method, headers, flags = check(req, url)
  if not host then return nil, method end
  while not self.c:has_room() do
    if not wait then return nil, "pool_full" end
    local w = runtime.waiter()
    self.room[#self.room + 1] = w
    local timer
    if deadline then
      w.pool = self
      timer = runtime.at(deadline, room_expired, w)
    end
    runtime.block(w)
    if timer then timer.cancelled = true end
    if self.closed then return nil, "closed" end
    if w.expired then
      return nil, "timeout: waiting for room in a full pool (task_pool_capacity "
        .. self.cfg.task_pool_capacity .. ")"
    end
  end
  local th, serr = self.c:submit(host, method, url, headers, req.body, req.max_body, flags, cookies)
  if not th then return nil, serr end
  -- the handle is the task's record: one table a task, waiters made on
  -- the first wait
  local rec = setmetatable({ pool = self, th = th, t0 = core.now() }, Handle)
  self.tasks[th] = rec
  return rec
end

local function check_req(self, req, fname)
  check_open(self, fname)
  if type(req) ~= "table" then
    error("pool:" .. fname .. ": bad argument #1 (request table expected, got " .. type(req) .. ")", 3)
  end
end

function Pool:submit(req)
  check_req(self, req, "submit")
  return submit(self, req, req.url, true)
end

function Pool:try_submit(req)
  check_req(self, req, "try_submit")
  return submit(self, req, req.url, false)
end

-- Why a timed-out task had no attempt to blame: nil, or "no_proxies ...".
local function no_proxies(self)
  local m = self.c:metrics()
  local usable = m.total_proxies - m.retired_proxies - m.dead_proxies
  if usable > 0 then return nil end
  if m.total_proxies - m.retired_proxies == 0 then
    return "no_proxies (the pool has none: its lists were empty, missing or failed)"
  end
  return "no_proxies (all " .. (m.total_proxies - m.retired_proxies) .. " listed proxies are dead)"
end
M.no_proxies = no_proxies

-- The error of a task its caller's timeout ended (h: its handle, not yet
-- cancelled). Without a last error and no attempt it says what held every
-- proxy back: a bare "timeout" after the proxies had failed once read as
-- a slow target.
local function timed_out(self, h)
  local attempts = not self.closed and self.c:attempts(h.th) or -1
  local last = h:cancel()
  if last then return "timeout: last error: " .. last end
  if self.closed then return "timeout" end
  local held = attempts == 0 and self.feed and self.feed:held()
  if held then return "timeout: no attempt started (" .. held .. ")" end
  local why = no_proxies(self)
  if why then return "timeout: " .. why end
  if attempts ~= 0 then return "timeout" end
  local m = self.c:metrics()
  local usable = m.total_proxies - m.retired_proxies - m.dead_proxies
  local of = usable == 1 and "1 usable proxy" or usable .. " usable proxies"
  if m.cooldown_proxies > 0 then
    return ("timeout: no attempt started (%d of %s cooling down after failures)"):format(m.cooldown_proxies, of)
  end
  return ("timeout: no attempt started (%s, none free: rate limits or max_inflight)"):format(of)
end

local function request(self, req, url, cookies)
  -- refused before anything is submitted: an inner task left behind by
  -- the refusal would have no timeout and hold a slot for good
  if runtime.no_wait then
    error("scatter: pool:get and pool:request inside " .. runtime.no_wait
      .. " must not wait (it runs inside the event loop)", 3)
  end
  local deadline = req.timeout and core.now() + req.timeout
  local h, err = submit(self, req, url, true, deadline, cookies)
  if not h then return nil, err end
  local resp, werr = h:wait(deadline and math.max(0, deadline - core.now()))
  if werr == "timeout" then return nil, timed_out(self, h) end
  return resp, werr
end

-- For `scatter serve`: opens a tunnel to host:port through the first
-- proxy (of K raced) that can; the tunnel is the caller's (a userdata for
-- core.proxyd_tunnel: the socket, and for an https:// proxy the curl
-- handle that carries its bytes; the GC closes one never relayed).
-- Returns {tunnel =, proxy =, proxy_id =, attempts =, elapsed =} or nil, err.
function Pool:_tunnel(host, port, timeout)
  if self.closed then return nil, "closed" end
  local url = "http://" .. (host:find(":", 1, true) and ("[" .. host .. "]") or host) .. ":" .. port
  local h, why = M.parse_url(url)
  if not h then return bad(why) end
  while not self.c:has_room() do
    local w = runtime.waiter()
    self.room[#self.room + 1] = w
    runtime.block(w)
    if self.closed then return nil, "closed" end
  end
  local th, serr = self.c:submit(h, "CONNECT", url, NO_HEADERS, nil, nil, 8)
  if not th then return nil, serr end
  local rec = setmetatable({ pool = self, th = th, t0 = core.now(), tunnel = true }, Handle)
  self.tasks[th] = rec
  local resp, werr = rec:wait(timeout)
  if werr == "timeout" then return nil, timed_out(self, rec) end
  return resp, werr
end

-- for sessions (scatter.session): the request checks, and a raced
-- request that carries a cookie jar
M.check = check
M.request = request

function Pool:request(req)
  check_req(self, req, "request")
  return request(self, req, req.url)
end

function Pool:get(url, opts)
  check_open(self, "get")
  if type(url) ~= "string" then
    error("pool:get: bad argument #1 (URL string expected, got " .. type(url) .. ")", 2)
  end
  if opts == nil then
    opts = EMPTY
  elseif type(opts) ~= "table" then
    error("pool:get: bad argument #2 (options table expected, got " .. type(opts) .. ")", 2)
  end
  if opts.method ~= nil and runtime.show(opts.method):upper() ~= "GET" then
    return nil, "invalid_request: pool:get is GET only; use pool:request"
  end
  return request(self, opts, url)
end

-- One proxy and one cookie jar for a run of requests (scatter.session).
function Pool:session(opts)
  check_open(self, "session")
  if self.closed then error("pool:session: the pool is closed", 2) end
  return require("scatter.session").new(self, opts, "pool:session")
end

function Pool:metrics()
  check_open(self, "metrics")
  if self.closed then return self.final_metrics end
  local m = self.c:metrics()
  m.classifier_errors = self.classifier_errors
  m.classifier_timeouts = self.classifier_timeouts
  return m
end

function Pool:proxies()
  check_open(self, "proxies")
  if self.closed then return {} end
  local list = self.c:proxies()
  return self.feed and self.feed:mark(list) or list
end

function Pool:close()
  check_open(self, "close")
  if self.closed then return end
  self.closed = true
  M.open[self] = nil
  if self.metrics_timer then self.metrics_timer.cancelled = true end
  metrics.unserve(self.metrics_token)
  runtime.handlers[self.c:id()] = nil
  local recs = {}
  for _, rec in pairs(self.tasks) do recs[#recs + 1] = rec end
  if self.feed then self.feed:stop() end
  if self.share then pcall(self.share.stop, self.share) end
  -- in-flight attempts stop before the final snapshot is taken
  for _, rec in ipairs(recs) do self.c:cancel(rec.th) end
  -- taken once its tasks have ended: pending 0, each of them failed
  local m = self.c:metrics()
  m.classifier_errors = self.classifier_errors
  m.classifier_timeouts = self.classifier_timeouts
  self.final_metrics = m
  local write = self.state and self.state:freeze()
  self.c:close()
  for _, rec in ipairs(recs) do finish(self, rec, nil, "closed") end
  for _, w in ipairs(self.room) do runtime.wake(w) end
  self.room = {}
  if write then write() end -- close returns once the snapshot is on disk
end

Pool.__tostring = function(self)
  return "scatter.pool" .. (self.name and (" [" .. self.name .. "]") or "")
end

-- ---- handles ----

-- a wait's timeout: w.rec is the task it waits for
local function wait_expired(w)
  local ws = w.rec.waiters
  for i = 1, ws and #ws or 0 do
    if ws[i] == w then table.remove(ws, i) break end
  end
  runtime.wake(w)
end

function Handle:wait(timeout)
  if getmetatable(self) ~= Handle then error("handle:wait: call it as handle:wait(...)", 2) end
  if timeout ~= nil and (type(timeout) ~= "number" or timeout ~= timeout or timeout < 0) then
    error("handle:wait: bad argument #1 (number of seconds >= 0 expected)", 2)
  end
  if self.ended then return self.resp, self.err end
  local w = runtime.waiter()
  local ws = self.waiters
  if not ws then
    ws = {}
    self.waiters = ws
  end
  ws[#ws + 1] = w
  local timer
  if timeout then
    w.rec = self
    timer = runtime.after(timeout, wait_expired, w)
  end
  runtime.block(w)
  if timer then timer.cancelled = true end
  if self.ended then return self.resp, self.err end
  return nil, "timeout"
end

-- Stops every in-flight attempt; returns the task's last transport error.
function Handle:cancel()
  if getmetatable(self) ~= Handle then error("handle:cancel: call it as handle:cancel()", 2) end
  local pool = self.pool
  if self.ended then return nil end
  local last = not pool.closed and pool.c:cancel(self.th) or nil
  finish(pool, self, nil, "cancelled")
  return last
end

function Handle:done()
  if getmetatable(self) ~= Handle then error("handle:done: call it as handle:done()", 2) end
  return self.ended == true
end

return M
