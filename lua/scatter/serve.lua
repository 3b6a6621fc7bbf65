-- `scatter serve`: a local HTTP forward proxy in front of a pool, for tools
-- that are not written in Lua (curl -x, Scrapy, Crawlee, browsers).
--
-- C (src/lua/proxyd.c) accepts and parses; each complete request becomes
-- one light thread here. An absolute-form request is raced and classified
-- like pool:request and its response written back; a CONNECT is raced at
-- setup (pool:_tunnel: the first proxy to open the tunnel wins) and then
-- relayed by C. No usable answer is a 502, a timeout a 504, each with the
-- reason in X-Scatter-Error. `X-Scatter-Session: NAME` (or, without it,
-- the user of proxy credentials: http://NAME:x@serve) pins a client's
-- requests and tunnels to a session (pool:session) of that name.
local core = require("scatter.core")
local runtime = require("scatter.runtime")
local log = require("scatter.log")

local M = {}
local Server = {}
Server.__index = Server

M.DEFAULT_TIMEOUT = 30
M.DEFAULT_CONNECT_PORTS = { 443 }
-- Named sessions kept at most; past it the least recently used one goes
-- (a client inventing a name per request must not grow memory forever).
M.MAX_SESSIONS = 10000
-- A named session unused this long (seconds) is closed; its next request
-- starts a new one (a fresh race, an empty jar).
M.DEFAULT_SESSION_IDLE = 300
-- A CONNECT tunnel that moves no byte either way this long (seconds) is
-- closed: a client that vanished without a FIN (a crashed host, a dropped
-- NAT entry) would otherwise hold two descriptors and a proxy forever.
M.DEFAULT_TUNNEL_IDLE = 300

-- Hop-by-hop (RFC 9110 section 7.6.1) and what the transport sets itself:
-- never forwarded upstream.
local REQ_DROP = {
  connection = true, ["proxy-connection"] = true, ["keep-alive"] = true,
  ["proxy-authorization"] = true, te = true, trailer = true,
  ["transfer-encoding"] = true, upgrade = true, host = true,
  ["content-length"] = true, expect = true, ["accept-encoding"] = true,
  ["x-scatter-session"] = true,
}
-- Never passed back: hop-by-hop, and what no longer holds for the body we
-- send (curl decoded it and it goes out whole, with its own length).
local RESP_DROP = {
  connection = true, ["keep-alive"] = true, ["proxy-connection"] = true,
  ["proxy-authenticate"] = true, trailer = true, ["transfer-encoding"] = true,
  upgrade = true, ["content-length"] = true, ["content-encoding"] = true,
}

local REASONS = {
  [200] = "OK", [201] = "Created", [202] = "Accepted", [204] = "No Content",
  [206] = "Partial Content", [301] = "Moved Permanently", [302] = "Found",
  [303] = "See Other", [304] = "Not Modified", [307] = "Temporary Redirect",
  [308] = "Permanent Redirect", [400] = "Bad Request", [401] = "Unauthorized",
  [403] = "Forbidden", [404] = "Not Found", [405] = "Method Not Allowed",
  [410] = "Gone", [429] = "Too Many Requests", [500] = "Internal Server Error",
  [502] = "Bad Gateway", [503] = "Service Unavailable", [504] = "Gateway Timeout",
}

local function clean(s)
  s = tostring(s):gsub("[%c]", " ")
  if #s > 400 then s = s:sub(1, 400) .. "..." end
  return s
end

-- An answer of our own (errors); the connection closes after it.
local function reply(conn, status, why)
  local body = why .. "\n"
  local head = ("HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nX-Scatter-Error: %s\r\nContent-Length: %d\r\n")
    :format(status, REASONS[status] or "Error", clean(why), #body)
  core.proxyd_respond(conn, head, body)
end

local function fail(conn, err)
  err = tostring(err)
  local status = 502
  if err:find("^timeout") then
    status = 504
  elseif err:find("^invalid_request") or err:find("^unknown_host") then
    status = 400
  elseif err == "closed" then
    status = 503
  end
  reply(conn, status, err)
end

-- The client's header list {name, value, ...} as pool request headers,
-- and the session name it asks for.
local function request_headers(hl)
  local named = {} -- tokens of Connection: hop-by-hop as well
  for i = 1, #hl, 2 do
    local n = hl[i]:lower()
    if n == "connection" or n == "proxy-connection" then
      for tok in hl[i + 1]:gmatch("[^,%s]+") do named[tok:lower()] = true end
    end
  end
  local out, session = {}, nil
  for i = 1, #hl, 2 do
    local name, value = hl[i], hl[i + 1]
    local n = name:lower()
    if n == "x-scatter-session" then
      session = value
    elseif not REQ_DROP[n] and not named[n] then
      local have = out[n]
      if have == nil then
        out[n] = value
      elseif type(have) == "table" then
        have[#have + 1] = value
      else
        out[n] = { have, value }
      end
    end
  end
  return out, session
end

local function response_head(resp, method)
  local status = resp.status
  local parts = { ("HTTP/1.1 %d %s\r\n"):format(status, REASONS[status] or "Status") }
  local bodyless = method == "HEAD" or status == 204 or status == 304 or status < 200
  for name, value in pairs(resp.headers) do
    -- a HEAD's length describes the body it would have had: keep it
    if not RESP_DROP[name] or (name == "content-length" and method == "HEAD") then
      if type(value) == "table" then
        for _, v in ipairs(value) do parts[#parts + 1] = name .. ": " .. v .. "\r\n" end
      else
        parts[#parts + 1] = name .. ": " .. value .. "\r\n"
      end
    end
  end
  -- which path won, and how many were started for it
  parts[#parts + 1] = "X-Scatter-Proxy: " .. clean(resp.proxy or "") .. "\r\n"
  parts[#parts + 1] = "X-Scatter-Attempts: " .. (resp.attempts or 1) .. "\r\n"
  if not bodyless then parts[#parts + 1] = "Content-Length: " .. #resp.body .. "\r\n" end
  return table.concat(parts), bodyless and "" or resp.body
end

-- The pool or session a request goes through.
function Server:_via(name)
  if name == nil or name == "" then return self.target end
  local s = self.sessions[name]
  if not s or s.closed then
    if not self.target.session then return nil, "invalid_request: sessions need a pool or router" end
    -- made first: if it raises, nothing was counted or evicted for it
    local new = self.target:session(self.session_opts)
    if not s and self.nsessions >= M.MAX_SESSIONS then
      local oldest, at
      for n, x in pairs(self.sessions) do
        if not at or x.serve_used < at then oldest, at = n, x.serve_used end
      end
      self.sessions[oldest]:close()
      self.sessions[oldest] = nil
      self.nsessions = self.nsessions - 1
    end
    if not s then self.nsessions = self.nsessions + 1 end
    s = new
    self.sessions[name] = s
    self:_sweep_later()
  end
  s.serve_used = core.now()
  return s
end

-- Closes the sessions idle for session_idle seconds (none in use: a
-- request through one counts as use until it ends). Runs every quarter
-- of that (at most 30 s) while there are sessions.
function Server:_sweep()
  self.sweeper = nil
  if self.closed then return end
  local now, idle = core.now(), self.session_idle
  for name, s in pairs(self.sessions) do
    if (s.serve_busy or 0) == 0 and now - s.serve_used >= idle then
      s:close()
      self.sessions[name] = nil
      self.nsessions = self.nsessions - 1
      log.emit("debug", nil, "serve: session " .. clean(name) .. " closed after " .. idle .. " s idle")
    end
  end
  self:_sweep_later()
end

function Server:_sweep_later()
  if self.sweeper or self.nsessions == 0 or self.closed then return end
  local every = math.min(math.max(self.session_idle / 4, 0.05), 30)
  self.sweeper = runtime.after(every, self._sweep, self)
end

function Server:_http(conn, method, url, hl, body, user)
  local scheme = url:match("^(%a[%w+.-]*)://")
  scheme = scheme and scheme:lower()
  if scheme ~= "http" and scheme ~= "https" then
    return reply(conn, 400, "invalid_request: an absolute-form http:// URL is expected (this is a proxy)")
  end
  local headers, sname = request_headers(hl)
  local via, verr = self:_via(sname or user)
  if not via then return fail(conn, verr) end
  local named = via ~= self.target
  if named then via.serve_busy = (via.serve_busy or 0) + 1 end
  -- a HEAD has no body to bound, but curl refuses a Content-Length over
  -- max_body all the same (too_large, blamed on every proxy, then a 504):
  -- 0 is curl's "no limit"
  local resp, err = via:request{
    method = method, url = url, headers = headers, body = body, timeout = self.timeout,
    max_body = method == "HEAD" and 0 or nil,
  }
  if named then
    via.serve_busy = via.serve_busy - 1
    via.serve_used = core.now()
  end
  if not resp then return fail(conn, err) end
  local head, out = response_head(resp, method)
  core.proxyd_respond(conn, head, out)
end

function Server:_connect(conn, target, hl, user)
  local host, port = target:match("^%[([%x:.]+)%]:(%d+)$")
  if not host then host, port = target:match("^([^:/%s]+):(%d+)$") end
  port = tonumber(port)
  if not host or not port or port < 1 or port > 65535 then
    return reply(conn, 400, "invalid_request: CONNECT needs host:port, got " .. clean(target))
  end
  if not self.connect_ports[port] then
    return reply(conn, 403, "connect_port: CONNECT to port " .. port .. " is not allowed (connect_ports)")
  end
  local _, sname = request_headers(hl)
  sname = sname or user
  local resp, err
  if sname and sname ~= "" then
    -- a named session: the tunnel goes through its proxy
    local s, verr = self:_via(sname)
    if not s then return fail(conn, verr) end
    s.serve_busy = (s.serve_busy or 0) + 1
    resp, err = s:_tunnel(host, port, self.timeout)
    s.serve_busy = s.serve_busy - 1
    s.serve_used = core.now()
  else
    local pool = self.target
    if pool.pool and not pool._tunnel then pool = pool:pool(host) end -- a router
    if not pool or not pool._tunnel then return fail(conn, "invalid_request: no pool for " .. host) end
    resp, err = pool:_tunnel(host, port, self.timeout)
  end
  if not resp then return fail(conn, err) end
  local ok, terr = core.proxyd_tunnel(conn, resp.tunnel, self.tunnel_idle)
  if not ok then log.emit("debug", nil, "serve: tunnel to " .. target .. " not relayed: " .. terr) end
end

function Server:_handle(conn)
  local method, target, hl, body, user = core.proxyd_request(conn)
  if not method then return end -- the client went away
  self.active = self.active + 1
  local ok, err = pcall(function()
    if method == "CONNECT" then
      self:_connect(conn, target, hl, user)
    else
      self:_http(conn, method, target, hl, body, user)
    end
  end)
  self.active = self.active - 1
  if not ok then
    log.emit("error", nil, "serve: " .. tostring(err))
    pcall(reply, conn, 502, "internal: " .. tostring(err))
  end
  if self.active == 0 and self.drained then runtime.wake(self.drained) end
end

-- Starts serving `target` (a pool or a router) at host:port.
-- opts: timeout (seconds, default 30), connect_ports (list of ports a
-- CONNECT may reach, default {443}), session (options for the sessions
-- that X-Scatter-Session names), session_idle (seconds without a request
-- after which such a session is closed, default 300), tunnel_idle
-- (seconds without a byte either way after which a CONNECT tunnel is
-- closed, default 300). Returns server, bound port or nil, err.
function M.start(target, host, port, opts)
  opts = opts or {}
  for _, k in ipairs({ "timeout", "session_idle", "tunnel_idle" }) do
    local v = opts[k]
    if v ~= nil and (type(v) ~= "number" or not (v > 0 and v < 1e9)) then
      return nil, "serve: " .. k .. " must be a number of seconds > 0, got " .. tostring(v)
    end
  end
  -- the session options are checked now: a bad one used to surface as a
  -- 502 "internal" on every request that named a session
  if opts.session ~= nil and target.session then
    local ok, s = pcall(target.session, target, opts.session)
    if not ok then return nil, "serve: session: " .. tostring(s):gsub("^[^:]*:%d+: ", "") end
    s:close()
  end
  local ports = {}
  for _, p in ipairs(opts.connect_ports or M.DEFAULT_CONNECT_PORTS) do ports[p] = true end
  local id, bport = core.proxyd_listen(host, port)
  if not id then return nil, "cannot listen on " .. host .. ":" .. port .. ": " .. bport end
  local self = setmetatable({
    id = id, port = bport, target = target, timeout = opts.timeout or M.DEFAULT_TIMEOUT,
    connect_ports = ports, sessions = {}, nsessions = 0, session_opts = opts.session, active = 0,
    session_idle = opts.session_idle or M.DEFAULT_SESSION_IDLE,
    tunnel_idle = opts.tunnel_idle or M.DEFAULT_TUNNEL_IDLE,
  }, Server)
  runtime.on_op(id, function(res) runtime.spawn(self._handle, self, res.status) end)
  return self, bport
end

-- In-flight requests.
function Server:active_requests() return self.active end

-- Stops accepting and closes idle clients; waits (at most `grace`
-- seconds) for the requests in flight to be answered; then closes every
-- connection, tunnels included, and the sessions.
function Server:close(grace)
  if self.closed then return end
  self.closed = true
  core.proxyd_close(self.id, true)
  if self.active > 0 and (grace or 0) > 0 then
    local w = runtime.waiter()
    self.drained = w
    local t = runtime.after(grace, runtime.wake, w)
    runtime.block(w)
    t.cancelled = true
  end
  if self.sweeper then self.sweeper.cancelled = true end
  runtime.on_op(self.id, nil)
  core.proxyd_close(self.id, false)
  while core.op_take(self.id) do end
  for _, s in pairs(self.sessions) do pcall(s.close, s) end
end

return M
