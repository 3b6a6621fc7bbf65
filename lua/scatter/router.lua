-- scatter.router{ [host] = config, ... }: one pool per target host, each
-- with its own proxies' health, cooldown, eviction, limits and log prefix,
-- so a host whose proxies are all blocked or cooling down holds up only its
-- own tasks. Requests are routed by the URL's host (case-insensitive, port
-- ignored).
local pool = require("scatter.pool")

local M = {}
local Router = {}
Router.__index = Router

-- "Example.COM." and "example.com" are one host: DNS names are
-- case-insensitive and a trailing dot only says "fully qualified".
local function norm(host)
  host = host:lower()
  if #host > 1 and host:sub(-1) == "." then host = host:sub(1, -2) end
  return host
end

-- Returns the normalised host of a configuration key, or nil, why.
local function key_host(k)
  if k == "" then return nil, "an empty host name" end
  -- "u@a.org", "a.org?x", "a.org#x" parse as URLs of a.org: a key with
  -- URL parts would route that host under a name the user never wrote
  if k:find("[/?#@]") then
    return nil, "a URL; give the host name only"
  end
  if k:find("*", 1, true) then
    return nil, "a wildcard pattern; give each host name (routing matches whole names)"
  end
  if not k:match("^%[") and select(2, k:gsub(":", "")) > 1 then
    return nil, "an IPv6 address without brackets; write it as [addr]"
  end
  if k:match("^[^%[].*:%d*$") or k:match("^%[.*%]:%d*$") then
    return nil, "a host with a port; give the host name only (routing ignores ports)"
  end
  local host, why = pool.parse_url("http://" .. k .. "/")
  if not host then return nil, "not a host name (" .. why:gsub(" in URL: .*$", "") .. ")" end
  return norm(host)
end

local function show(v) return type(v) == "string" and ("%q"):format(v) or tostring(v) end

function M.new(hosts, where)
  where = where or "scatter.router"
  if type(hosts) ~= "table" then
    error(where .. ": bad argument #1 (table of host = configuration expected, got " .. type(hosts) .. ")", 3)
  end
  local keys, seen, host_of = {}, {}, {}
  for k, cfg in pairs(hosts) do
    if type(k) ~= "string" then
      error(where .. ": keys must be host names, got " .. type(k) .. " " .. show(k), 0)
    end
    local h, why = key_host(k)
    if not h then error(where .. ": key " .. show(k) .. " is " .. why, 0) end
    if seen[h] then
      local a, b = seen[h], k
      if b < a then a, b = b, a end
      error(where .. ": keys " .. show(a) .. " and " .. show(b) .. " name the same host", 0)
    end
    if type(cfg) ~= "table" then
      error(where .. "[" .. show(k) .. "]: configuration must be a table, got " .. type(cfg), 0)
    end
    seen[h], host_of[k] = k, h
    keys[#keys + 1] = k
  end
  if #keys == 0 then error(where .. ": no hosts (give a table of host = configuration)", 0) end
  table.sort(keys)

  local self = setmetatable({ pools = {}, hosts_list = {} }, Router)
  local ok, err = pcall(function()
    for _, k in ipairs(keys) do
      local h = host_of[k]
      local cfg = {}
      for f, v in pairs(hosts[k]) do cfg[f] = v end
      -- the pool's log lines and errors carry the host it serves
      if cfg.name == nil then cfg.name = h end
      self.pools[h] = pool.new(cfg, where .. "[" .. show(k) .. "]")
      self.hosts_list[#self.hosts_list + 1] = h
    end
  end)
  if not ok then
    for _, p in pairs(self.pools) do p:close() end
    error(err, 0)
  end
  return self
end

local function check(self, fname)
  if getmetatable(self) ~= Router then
    error("router:" .. fname .. ": call it as router:" .. fname .. "(...)", 3)
  end
end

-- Returns the pool for a request's URL, or nil, err.
local function route(self, url)
  if self.closed then return nil, "closed" end
  local host, why = pool.parse_url(url)
  if not host then return nil, "invalid_request: " .. why end
  local p = self.pools[norm(host)]
  if not p then return nil, "unknown_host: " .. host end
  return p
end

local function req_arg(self, req, fname)
  check(self, fname)
  if type(req) ~= "table" then
    error("router:" .. fname .. ": bad argument #1 (request table expected, got " .. type(req) .. ")", 3)
  end
  return route(self, req.url)
end

function Router:request(req)
  local p, err = req_arg(self, req, "request")
  if not p then return nil, err end
  return p:request(req)
end

function Router:submit(req)
  local p, err = req_arg(self, req, "submit")
  if not p then return nil, err end
  return p:submit(req)
end

function Router:try_submit(req)
  local p, err = req_arg(self, req, "try_submit")
  if not p then return nil, err end
  return p:try_submit(req)
end

function Router:get(url, opts)
  check(self, "get")
  if type(url) ~= "string" then
    error("router:get: bad argument #1 (URL string expected, got " .. type(url) .. ")", 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("router:get: bad argument #2 (options table expected, got " .. type(opts) .. ")", 2)
  end
  local p, err = route(self, url)
  if not p then return nil, err end
  return p:get(url, opts)
end

-- Sessions per host: each host's pool keeps its own (scatter.session).
function Router:session(opts)
  check(self, "session")
  return require("scatter.session").for_router(self, opts)
end

-- The pool serving `host` (a host name, any case, no port), or nil, err.
function Router:pool(host)
  check(self, "pool")
  if type(host) ~= "string" then
    error("router:pool: bad argument #1 (host name expected, got " .. type(host) .. ")", 2)
  end
  local p = self.pools[norm(host)]
  if not p then return nil, "unknown_host: " .. host end
  return p
end

-- Configured hosts, sorted.
function Router:hosts()
  check(self, "hosts")
  local out = {}
  for i, h in ipairs(self.hosts_list) do out[i] = h end
  return out
end

-- metrics(host) -> that pool's metrics; metrics() -> { [host] = metrics }.
function Router:metrics(host)
  check(self, "metrics")
  if host == nil then
    local out = {}
    for h, p in pairs(self.pools) do out[h] = p:metrics() end
    return out
  end
  if type(host) ~= "string" then
    error("router:metrics: bad argument #1 (host name or nil expected, got " .. type(host) .. ")", 2)
  end
  local p = self.pools[norm(host)]
  if not p then return nil, "unknown_host: " .. host end
  return p:metrics()
end

-- Closes every host's pool (their tasks end with "closed").
function Router:close()
  check(self, "close")
  if self.closed then return end
  self.closed = true
  for _, h in ipairs(self.hosts_list) do self.pools[h]:close() end
end

Router.__tostring = function(self)
  return "scatter.router (" .. table.concat(self.hosts_list, ", ") .. ")"
end

return M
