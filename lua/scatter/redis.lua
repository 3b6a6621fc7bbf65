-- scatter.redis: a Redis connection on the scatter loop (src/lua/redis.c on
-- hiredis). Calls block the calling scatter thread (or drive the loop when
-- made outside one), never the loop. The connection reconnects by itself
-- with backoff; call_retry waits for it and sends again, for commands that
-- are safe to repeat (every script of the queue backend is).
--
--   local c, err = redis.connect("redis://[user:password@]host[:port][/db]", opts)
--   c:call("SET", "k", "v")          -> reply | nil, err, lost
--   c:call_block(5, "XREADGROUP", "BLOCK", 5000, ...)   a blocking command
--   c:call_retry("GET", "k")         -> reply | nil, err  (retries while down)
--   c:script(src)                    -> a script for c:eval
--   c:eval(script, keys, args)       -> reply | nil, err  (EVALSHA, retried)
--   c:evalv(script, argv)            -> the same with argv = { "EVALSHA",
--                                       false, nkeys, keys..., args... }
--   c:call_cb(extra, args, fn)       -> true | nil, err: sends, and fn(reply |
--                                       nil, err, lost) runs from the loop
--                                       when it is answered (fn must not wait)
--   c:close()
--
-- Replies: strings, numbers, arrays as tables, a nil reply as false, an
-- error reply as nil, "ERR ...". `lost` is true when the command may or
-- may not have run (the connection went down, no reply in time).
local core = require("scatter.core")
local runtime = require("scatter.runtime")
local log = require("scatter.log")

local M = {}
local Conn = {}
Conn.__index = Conn

local decode = core.redis_decode

-- Parses a redis:// URL: { host, port, db, user, password, shown } or
-- nil, err. `shown` is the URL without its password, for messages.
function M.parse_url(url)
  if type(url) ~= "string" then return nil, "Redis URL string expected, got " .. type(url) end
  if url:match("^[Rr][Ee][Dd][Ii][Ss][Ss]://") then
    return nil, ("%s: TLS (rediss://) is not supported by this Redis client"):format(url)
  end
  local rest = url:match("^[Rr][Ee][Dd][Ii][Ss]://(.*)$")
  if not rest then return nil, ("%q: not a Redis URL (redis://host[:port][/db] expected)"):format(url) end
  local u = { port = 6379, db = 0 }
  local auth, hostpart = rest:match("^([^@/]*)@(.*)$")
  if auth then
    local user, pass = auth:match("^([^:]*):(.*)$")
    if user then
      u.user = user ~= "" and user or nil
      u.password = pass
    else
      u.password = auth
    end
    rest = hostpart
  end
  local hostport, path = rest:match("^([^/]*)(.*)$")
  local host, port
  if hostport:sub(1, 1) == "[" then
    host, port = hostport:match("^%[([^%]]+)%]:?(.*)$")
  else
    host, port = hostport:match("^([^:]*):?(.*)$")
  end
  if not host or host == "" then return nil, ("%q: no host in Redis URL"):format(url) end
  if port ~= "" then
    u.port = port:match("^%d+$") and tonumber(port)
    if not u.port or u.port < 1 or u.port > 65535 then return nil, ("%q: bad port in Redis URL"):format(url) end
  end
  if path ~= "" and path ~= "/" then
    local db = path:match("^/(%d+)$")
    if not db then return nil, ("%q: bad database in Redis URL (/0, /1, ... expected)"):format(url) end
    u.db = tonumber(db)
  end
  u.host = host
  u.shown = ("redis://%s%s:%d/%d"):format(u.user and (u.user .. "@") or "",
    host:find(":") and ("[" .. host .. "]") or host, u.port, u.db)
  return u
end

-- Opens a connection and waits for it to be ready: conn, or nil, err.
-- opts: connect_timeout (5 s), timeout (10 s a reply), retry_for (how long
-- call_retry waits for a lost connection, 300 s), backoff_max (5 s).
function M.connect(url, opts)
  opts = opts or {}
  local u, err = M.parse_url(url)
  if not u then return nil, err end
  local c, op = core.redis_open(u.host, u.port, {
    password = u.password, user = u.user, db = u.db,
    connect_timeout = opts.connect_timeout, timeout = opts.timeout,
    backoff_max = opts.backoff_max,
  })
  if not c then return nil, u.shown .. ": " .. tostring(op) end
  local self = setmetatable({
    c = c, op = op, url = u.shown, up = false, waiters = {},
    retry_for = opts.retry_for or 300, name = opts.name,
  }, Conn)
  local first = runtime.waiter()
  runtime.on_op(op, function(res)
    self.up = res.status == 1
    self.err = res.err
    if first then
      local w = first
      first = nil
      runtime.wake(w)
      return
    end
    if self.up then
      if self.down_since then
        log.emit("info", nil, ("%s: connected again after %.1fs"):format(self.url, core.now() - self.down_since))
      end
      self.down_since = nil
      local ws = self.waiters
      self.waiters = {}
      for _, w in ipairs(ws) do runtime.wake(w) end
    elseif not self.down_since then
      self.down_since = core.now()
      log.emit("warn", nil, ("%s: connection lost (%s); reconnecting"):format(self.url, tostring(res.err)))
    end
  end)
  runtime.block(first)
  if not self.up then
    local why = self.err
    self:close()
    return nil, ("%s: cannot connect: %s"):format(u.shown, tostring(why))
  end
  return self
end

local function result(res)
  if res.status ~= 0 then return nil, res.err, true end
  local v, e = decode(res.body)
  if v == nil then return nil, e, false end
  return v
end

function Conn:send(extra, args)
  if not self.c then return nil, self.url .. ": the connection is closed", false end
  local id, err = self.c:send(extra, args)
  if not id then return nil, err, true end
  return result(runtime.await(id))
end

function Conn:call(...) return self:send(0, { ... }) end

function Conn:call_block(seconds, ...) return self:send(seconds, { ... }) end

function Conn:call_cb(extra, args, fn)
  if not self.c then return nil, self.url .. ": the connection is closed" end
  local id, err = self.c:send(extra, args)
  if not id then return nil, err end
  runtime.on_op(id, function(res)
    runtime.on_op(id, nil)
    fn(result(res))
  end)
  return true
end

-- Error replies a restarting or busy server gives: worth a retry.
local function transient(err)
  return err and (err:match("^LOADING") or err:match("^BUSY") or err:match("^TRYAGAIN")
    or err:match("^MASTERDOWN")) ~= nil
end

-- Waits until the connection is up again, at most until `deadline`.
function Conn:wait_up(deadline)
  if self.up or not self.c then return self.up end
  local w = runtime.waiter()
  self.waiters[#self.waiters + 1] = w
  local t = runtime.at(deadline, runtime.wake, w)
  runtime.block(w)
  t.cancelled = true
  return self.up
end

-- send, repeated while the connection is down or the server is loading,
-- for at most retry_for seconds. Only for commands that may run twice.
function Conn:send_retry(extra, args)
  local deadline, pause = core.now() + self.retry_for, 0.05
  while true do
    local v, err, lost = self:send(extra, args)
    if v ~= nil or not (lost or transient(err)) or not self.c then return v, err end
    if core.now() >= deadline then
      return nil, ("%s: unreachable for %ds: %s"):format(self.url, self.retry_for, tostring(err))
    end
    if lost and not self.up then self:wait_up(deadline) end
    runtime.sleep(pause)
    pause = math.min(pause * 2, 1)
  end
end

function Conn:call_retry(...) return self:send_retry(0, { ... }) end

function Conn.script(_, src) return { src = src } end

-- EVALSHA, loading the script when the server does not have it (a fresh
-- or restarted server; threads that find it loading wait for that load);
-- retried like send_retry. argv[2] is set to the script's SHA.
function Conn:evalv(script, argv)
  for _ = 1, 3 do
    while not script.sha do
      if script.loading then
        local w = runtime.waiter()
        script.loading[#script.loading + 1] = w
        runtime.block(w)
      else
        script.loading = {}
        local sha, err = self:send_retry(0, { "SCRIPT", "LOAD", script.src })
        local ws = script.loading
        script.loading, script.sha = nil, sha or nil
        for _, w in ipairs(ws) do runtime.wake(w) end
        if not sha then return nil, err end
      end
    end
    argv[2] = script.sha
    local v, err = self:send_retry(0, argv)
    if v ~= nil or not (err and err:match("^NOSCRIPT")) then return v, err end
    script.sha = nil
  end
  return nil, self.url .. ": the server keeps forgetting scripts"
end

function Conn:eval(script, keys, args)
  local argv = { "EVALSHA", false, #keys }
  for _, k in ipairs(keys) do argv[#argv + 1] = k end
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return self:evalv(script, argv)
end

function Conn:close()
  if self.c then
    runtime.on_op(self.op, nil)
    self.c:close()
    self.c = nil
    self.up = false
    local ws = self.waiters
    self.waiters = {}
    for _, w in ipairs(ws) do runtime.wake(w) end
  end
  return true
end

return M
