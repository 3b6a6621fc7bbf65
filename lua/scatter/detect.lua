-- What `scatter check --detect` and `--anonymity` find out about a proxy
-- (DESIGN.md section 11): the protocol of a bare host:port, and what an
-- HTTP proxy tells the target about its client.
local core = require("scatter.core")
local runtime = require("scatter.runtime")

local M = {}

-- Tried in parallel; when several answer (dante speaks SOCKS4 and SOCKS5)
-- the first of this list wins.
M.ORDER = { "socks5", "socks4", "http" }

-- One probe; blocks the calling coroutine. Returns the op result and the
-- seconds it took.
function M.probe(args)
  local t0 = core.now()
  local id = core.probe(args)
  local w = runtime.waiter()
  runtime.on_op(id, function(res)
    runtime.on_op(id, nil)
    runtime.wake(w, res, core.now() - t0)
  end)
  return runtime.block(w)
end

-- Is url's host an IPv4 literal? (socks4 carries addresses only: a name
-- needs socks4a, which a plain socks4 server may not speak.)
local function ip_host(url)
  local h = url:match("^%a+://([^/:?#]+)")
  return h ~= nil and h:match("^%d+%.%d+%.%d+%.%d+$") ~= nil
end

-- The bare part of a key: "h:1" for "h:1", "http://h:1" and so on.
function M.bare(key)
  return key:match("^%a[%w]*://(.*)$") or key
end

-- Probes a bare proxy with every protocol at once. `args` are core.probe's
-- (url, timeout, ...). Returns key (scheme-qualified), result, seconds for
-- the protocol that answered, or nil, the first protocol's result, its
-- seconds, and every protocol's error.
function M.detect(bare, args, judge)
  local results, ths = {}, {}
  for i, scheme in ipairs(M.ORDER) do
    ths[i] = require("scatter").spawn(function()
      local a = {}
      for k, v in pairs(args) do a[k] = v end
      a.proxy = bare
      a.scheme = scheme == "socks4" and not ip_host(args.url) and "socks4a" or scheme
      local res, secs = M.probe(a)
      results[i] = { scheme = a.scheme, res = res, secs = secs }
    end)
  end
  require("scatter").wait_all(unpack(ths))
  for _, r in ipairs(results) do
    if judge(r.res) then return r.scheme .. "://" .. bare, r.res, r.secs end
  end
  local errs = {}
  for _, r in ipairs(results) do
    errs[#errs + 1] = r.scheme .. " " .. ((r.res.err or ("HTTP " .. r.res.status)):match("^([%w_ ]+)") or "?")
  end
  return nil, results[1].res, results[1].secs, table.concat(errs, ", ")
end

-- Headers that carry the client's address, and headers that only say a
-- proxy was there. A judge echoes request headers as "Name: value",
-- "name=value" or JSON ("Name": "value"); an empty value is no header.
local LEAK = { "x-forwarded-for", "forwarded", "x-real-ip", "client-ip", "x-client-ip",
               "x-originating-ip", "true-client-ip", "x-cluster-client-ip" }
local TELL = { "via", "proxy-connection", "x-proxy-id", "proxy-agent", "x-bluecoat-via" }

local function has(body, name)
  -- the name at a line or field start, then a separator and a value
  local pat = "[%s\"'{,]" .. name:gsub("%-", "%%-") .. "[\"']?[ \t]*[:=][ \t]*[\"']?([^\r\n\"',}]+)"
  local v = ("\n" .. body):match(pat)
  return v ~= nil and v:match("%S") ~= nil
end

-- "transparent" (the client's address leaks), "anonymous" (the proxy shows
-- itself) or "elite" (nothing tells), from a judge's echo (lower-cased
-- here: header names are case-insensitive).
function M.anonymity(body)
  body = body:lower()
  for _, n in ipairs(LEAK) do
    if has(body, n) then return "transparent", n end
  end
  for _, n in ipairs(TELL) do
    if has(body, n) then return "anonymous", n end
  end
  return "elite"
end

return M
