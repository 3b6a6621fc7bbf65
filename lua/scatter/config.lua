-- Pool configuration: defaults (DESIGN.md section 4) and strict validation.
-- Every error names the field; an unknown field gets a did-you-mean.
local M = {}

local function is_int(v) return type(v) == "number" and v == math.floor(v) and v == v end

-- Every number is bounded: the C side turns seconds into uint64
-- milliseconds and counts into int, where 1e17 s (hedge_delay) or 2^53
-- (max_inflight) overflowed into a spinning timer or an opaque -22.
M.MAX_SECONDS = 30 * 86400 -- 30 days: longer than any sane wait
M.MAX_COUNT = 1e7

local function dur(min_exclusive, max)
  max = max or M.MAX_SECONDS
  local range = (min_exclusive and "> 0" or ">= 0") .. " (seconds, at most " .. max .. ")"
  return function(v)
    if type(v) ~= "number" or v ~= v then return "a number of seconds " .. range end
    if (min_exclusive and v <= 0) or v < 0 or v > max then return "a duration " .. range end
  end
end

local function int(lo, hi)
  hi = hi or M.MAX_COUNT
  local range = ("an integer from %.0f to %.0f"):format(lo, hi)
  return function(v)
    if not is_int(v) or v < lo or v > hi then return range end
  end
end

local function strings(v)
  if type(v) ~= "table" then return "a list of strings" end
  for i, s in ipairs(v) do
    if type(s) ~= "string" then return "a list of strings (item " .. i .. " is a " .. type(s) .. ")" end
  end
  for k in pairs(v) do
    if not is_int(k) or k < 1 or k > #v then return "a list of strings (it has a key " .. tostring(k) .. ")" end
  end
end

-- sources: URL strings, or { url = URL, scheme = S } where S is the
-- protocol of the list's bare host:port lines (DESIGN.md section 11)
local SCHEMES = { socks5 = true, socks5h = true, socks4 = true, socks4a = true, http = true, https = true }
M.SCHEMES = SCHEMES
local function source_list(v)
  if type(v) ~= "table" then return "a list of URL strings or { url =, scheme = } tables" end
  for i, s in ipairs(v) do
    if type(s) == "table" then
      for k in pairs(s) do
        if k ~= "url" and k ~= "scheme" then
          return "a list of sources (item " .. i .. " has an unknown field " .. tostring(k) .. "; url, scheme)"
        end
      end
      if type(s.url) ~= "string" then return "a list of sources (item " .. i .. " needs url = a string)" end
      if s.scheme ~= nil and not SCHEMES[s.scheme] then
        return "a list of sources (item " .. i .. ": scheme " .. ("%q"):format(tostring(s.scheme))
          .. " is not socks5, socks5h, socks4, socks4a, http or https)"
      end
    elseif type(s) ~= "string" then
      return "a list of URL strings or { url =, scheme = } tables (item " .. i .. " is a " .. type(s) .. ")"
    end
  end
  for k in pairs(v) do
    if not is_int(k) or k < 1 or k > #v then return "a list of sources (it has a key " .. tostring(k) .. ")" end
  end
end

local function typed(t)
  return function(v) if type(v) ~= t then return "a " .. t end end
end

local FIELDS = {
  sources = { source_list, {} },
  proxies = { strings, {} },
  source_refresh_interval = { dur(true), 600 },
  rate_limit = { typed("table"), nil },
  proxy_timeout = { dur(true), 8 },
  max_concurrent_per_request = { int(1, 64), 3 },
  max_inflight = { int(1), 100 },
  task_pool_capacity = { int(1), 1000 },
  health_window = { int(1, 64), 30 },
  cooldown_base = { dur(false), 30 },
  cooldown_max = { dur(false), 300 },
  cooldown_consecutive_fails = { int(1), 3 },
  eviction_min_samples = { int(1), 30 },
  -- refused here, not at the first save: "" only warned "cannot save"
  -- 10 s in, and a NUL cut the path short (state went to another file)
  state_file = { function(v)
    if type(v) ~= "string" then return "a string" end
    if v == "" then return "a file path (it is empty)" end
    if v:find("\0", 1, true) then return "a file path without NUL bytes" end
    if v:sub(-1) == "/" then return "a file path, not a directory" end
  end, nil },
  state_save_interval = { dur(true), 300 },
  share = { typed("string"), nil }, -- a Redis URL (scatter.share)
  share_interval = { dur(true), 2 },
  metrics_log_interval = { dur(false), 30 },
  metrics_listen = { function(v)
    if type(v) ~= "string" or not require("scatter.metrics").parse_addr(v) then
      -- "localhost:9464" is a HOST:PORT too: say the host must be an IP
      return 'an address "IP:PORT" (a numeric IP, not a name: "127.0.0.1:9464", "[::1]:9464";'
        .. ' a bare "9464" is loopback)'
    end
  end, nil },
  prefer_remote_dns = { typed("boolean"), true },
  name = { typed("string"), nil },
  classifier = { function(v)
    local t = type(v)
    if t ~= "function" and t ~= "table" and t ~= "userdata" then
      return "a function or an object with :classify(resp)"
    end
  end, nil },
  hedge_delay = { function(v)
    if v == "auto" then return end
    if type(v) ~= "number" or v ~= v or v < 0 or v > 3600 then
      return 'a number of seconds from 0 to 3600, or "auto"'
    end
  end, 0 },
  ca_file = { typed("string"), nil },
  proxy_ca_file = { typed("string"), nil },
  seed = { int(0, 2 ^ 53), 1 },
  -- DESIGN.md section 10: nil learns it from the pool's handshakes
  connect_timeout = { dur(true), nil },
  tls_session_sharing = { typed("boolean"), true },
  -- the default classifier: a 404/410 charges no pair, and two different
  -- proxies agreeing on it make it final
  consensus_404 = { typed("boolean"), true },
  -- the watchdog: a classifier running longer is interrupted (0: off)
  classifier_timeout = { dur(false, 3600), 1 },
  racing = { function(v)
    if v ~= "continuous" and v ~= "rounds" then return '"continuous" or "rounds"' end
  end, "continuous" },
}
M.FIELDS = FIELDS

-- Used when a pool names neither sources nor proxies (the Rust crate's
-- behaviour): public free SOCKS5 lists, mostly dead proxies, which is
-- what the scheduler is built to sift.
M.DEFAULT_SOURCES = {
  "https://raw.githubusercontent.com/TheSpeedX/PROXY-List/master/socks5.txt",
  "https://raw.githubusercontent.com/hookzof/socks5_list/master/proxy.txt",
  "https://raw.githubusercontent.com/monosans/proxy-list/main/proxies/socks5.txt",
}

local RATE_FIELDS = { default_interval = true, host_overrides = true }

local function distance(a, b)
  local la, lb = #a, #b
  local prev = {}
  for j = 0, lb do prev[j] = j end
  for i = 1, la do
    local cur = { [0] = i }
    for j = 1, lb do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[lb]
end

local function suggest(name, known)
  local best, bd
  for k in pairs(known) do
    local d = distance(name, k)
    if not bd or d < bd or (d == bd and k < best) then best, bd = k, d end
  end
  if best and bd <= math.max(2, math.floor(#name / 3)) then
    return " (did you mean '" .. best .. "'?)"
  end
  return ""
end

local function fail(where, msg) error(where .. ": " .. msg, 0) end

-- Returns a new table with every field set (defaults filled in).
function M.validate(cfg, where)
  where = where or "scatter.pool"
  if cfg == nil then cfg = {} end
  if type(cfg) ~= "table" then fail(where, "configuration must be a table, got " .. type(cfg)) end
  local out = {}
  for k, v in pairs(cfg) do
    if type(k) ~= "string" then fail(where, "configuration keys must be field names, got " .. tostring(k)) end
    local f = FIELDS[k]
    if not f then fail(where, "unknown field '" .. k .. "'" .. suggest(k, FIELDS)) end
    local want = f[1](v)
    if want then
      fail(where, "field '" .. k .. "' must be " .. want .. ", got " .. (type(v) == "string" and ("%q"):format(v) or tostring(v)))
    end
    out[k] = v
  end
  for k, f in pairs(FIELDS) do
    if out[k] == nil and f[2] ~= nil then
      out[k] = type(f[2]) == "table" and {} or f[2]
    end
  end
  if #out.sources == 0 and #out.proxies == 0 then
    for i, u in ipairs(M.DEFAULT_SOURCES) do out.sources[i] = u end
  end
  if out.cooldown_max < out.cooldown_base then
    fail(where, "field 'cooldown_max' must be >= cooldown_base (" .. out.cooldown_base .. "), got " .. out.cooldown_max)
  end
  local rl = { default_interval = 0.5, host_overrides = {} }
  for k, v in pairs(out.rate_limit or {}) do
    if not RATE_FIELDS[k] then
      fail(where, "unknown field 'rate_limit." .. tostring(k) .. "'" .. suggest(tostring(k), RATE_FIELDS))
    end
    rl[k] = v
  end
  local want = dur(false)(rl.default_interval)
  if want then fail(where, "field 'rate_limit.default_interval' must be " .. want .. ", got " .. tostring(rl.default_interval)) end
  if type(rl.host_overrides) ~= "table" then
    fail(where, "field 'rate_limit.host_overrides' must be a table of host = seconds")
  end
  local ho = {}
  for h, v in pairs(rl.host_overrides) do
    if type(h) ~= "string" or h == "" then fail(where, "field 'rate_limit.host_overrides' keys must be host names") end
    want = dur(false)(v)
    if want then fail(where, "field 'rate_limit.host_overrides[\"" .. h .. "\"]' must be " .. want .. ", got " .. tostring(v)) end
    ho[h:lower()] = v
  end
  rl.host_overrides = ho
  out.rate_limit = rl
  return out
end

-- The scheduler's view of a validated configuration (sc_config_t fields, as
-- core.pool_new and core.simulate read them).
function M.to_core(cfg)
  return {
    rate_interval = cfg.rate_limit.default_interval,
    proxy_timeout = cfg.proxy_timeout,
    k_base = cfg.max_concurrent_per_request,
    max_inflight = cfg.max_inflight,
    task_capacity = cfg.task_pool_capacity,
    health_window = cfg.health_window,
    cooldown_base = cfg.cooldown_base,
    cooldown_max = cfg.cooldown_max,
    cooldown_fails = cfg.cooldown_consecutive_fails,
    eviction_min_samples = cfg.eviction_min_samples,
    hedge_delay = cfg.hedge_delay == "auto" and -1 or cfg.hedge_delay,
    seed = cfg.seed,
    connect_timeout = cfg.connect_timeout or 0,
    rounds = cfg.racing == "rounds" and 1 or 0,
  }
end

return M
