-- scatter.simulate: the real scheduler on a virtual clock with simulated
-- proxies (src/core/sim.c), deterministic from a seed. Specs use it to pin
-- scheduling rules down exactly; users use it to rehearse a pool config.
--
--   local r = scatter.simulate{ seed = 1, tasks = 1000, hosts = { "a.test" },
--     config = { max_concurrent_per_request = 3 },      -- as scatter.pool{}
--     proxies = { { count = 900, profile = "dead" },
--                 { count = 100, latency = 0.3, jitter = 0.1, success = 0.8 } } }
--   r.delivered, r.attempts, r.virtual_seconds, r.k_mean, ...
--
-- The pool fields that only matter to real traffic (sources, proxies,
-- state_file, classifier, ...) are accepted and ignored.
local core = require("scatter.core")
local config = require("scatter.config")

local M = {}
local WHERE = "scatter.simulate"
local MAX_PROXIES = 10000000 -- ids and counts stay well inside 32 bits

-- Profile defaults (seconds). A latency at or over config.proxy_timeout is
-- a transport failure at proxy_timeout, as the real transport would see it.
local PROFILES = {
  good = { latency = 0.2, jitter = 0 },
  dead = { latency = 0.001, jitter = 0 },     -- refused at once
  blackhole = {},                             -- fails at proxy_timeout
  block = { latency = 0.2, jitter = 0 },      -- answers with a block page
  slow = { latency = 4, jitter = 2 },         -- good, but slow
  script = { latency = 0.2, jitter = 0 },     -- outcomes from `script`
}
local PROFILE_LIST = "good, dead, blackhole, block, slow, script"

-- Which group fields each profile uses; any other is an error.
local USES = {
  good = { latency = true, jitter = true, success = true, target_error = true },
  slow = { latency = true, jitter = true, success = true, target_error = true },
  dead = { latency = true },
  blackhole = {},
  block = { latency = true, jitter = true },
  script = { latency = true, jitter = true, script = true, retry_after = true },
}
local GROUP_FIELDS = { count = true, profile = true, latency = true, jitter = true,
                       success = true, target_error = true, script = true, retry_after = true }
local TOP_FIELDS = { seed = true, tasks = true, hosts = true, config = true, proxies = true,
                     norace = true, time_limit = true, event_limit = true, trace = true,
                     proxy_stats = true, memory = true }

local function fail(msg) error(WHERE .. ": " .. msg, 0) end

local function show(v) return type(v) == "string" and ("%q"):format(v) or tostring(v) end

local function is_int(v) return type(v) == "number" and v == math.floor(v) and v == v and v ~= math.huge end

local function check_int(v, name, lo)
  if not is_int(v) or v < lo then fail(name .. " must be an integer >= " .. lo .. ", got " .. show(v)) end
end

local function check_num(v, name, lo, hi)
  if type(v) ~= "number" or v ~= v or v == math.huge or v < lo or (hi and v > hi) then
    fail(name .. " must be a number " .. (hi and ("from " .. lo .. " to " .. hi) or (">= " .. lo)) .. ", got " .. show(v))
  end
end

local function check_bool(v, name)
  if v ~= nil and type(v) ~= "boolean" then fail(name .. " must be a boolean, got " .. show(v)) end
end

local function check_list(v, name)
  if type(v) ~= "table" then fail(name .. " must be a list, got " .. show(v)) end
  for k in pairs(v) do
    if not is_int(k) or k < 1 or k > #v then fail(name .. " must be a list (it has a key " .. show(k) .. ")") end
  end
  if #v == 0 then fail(name .. " must not be empty") end
end

local function group(g, i)
  local name = "proxies[" .. i .. "]"
  if type(g) ~= "table" then fail(name .. " must be a table, got " .. show(g)) end
  for k in pairs(g) do
    if not GROUP_FIELDS[k] then fail(name .. ": unknown field " .. show(k)) end
  end
  local profile = g.profile == nil and "good" or g.profile
  if not PROFILES[profile] then
    fail(name .. ".profile must be one of " .. PROFILE_LIST .. ", got " .. show(profile))
  end
  for k in pairs(g) do
    if k ~= "count" and k ~= "profile" and not USES[profile][k] then
      fail(name .. "." .. k .. " does not apply to profile " .. profile)
    end
  end
  local count = g.count == nil and 1 or g.count
  check_int(count, name .. ".count", 0)
  local d = PROFILES[profile]
  local latency = g.latency == nil and d.latency or g.latency
  local jitter = g.jitter == nil and d.jitter or g.jitter
  if latency then check_num(latency, name .. ".latency", 0) end
  if jitter then
    check_num(jitter, name .. ".jitter", 0)
    if jitter > latency then
      fail(name .. ".jitter must be <= latency (" .. latency .. "), got " .. show(jitter))
    end
  end
  local success = g.success == nil and 1 or g.success
  check_num(success, name .. ".success", 0, 1)
  local target_error = g.target_error == nil and 0 or g.target_error
  check_num(target_error, name .. ".target_error", 0, 1)
  if profile == "script" then
    local s = g.script
    if type(s) ~= "string" or not s:match("^[sfbetr]+$") then
      fail(name .. ".script must be a string of outcome letters s, f, b, e, t, r, got " .. show(s))
    end
  end
  -- r: a 429 with Retry-After: retry_after seconds (DESIGN.md section 11)
  local retry_after = g.retry_after == nil and 1.5 or g.retry_after
  check_num(retry_after, name .. ".retry_after", 0)
  return { count = count, profile = profile, latency = latency, jitter = jitter,
           success = success, target_error = target_error, script = g.script,
           retry_after = retry_after }
end

-- Returns the report table (fields in README / sim.h).
function M.run(opts)
  if type(opts) ~= "table" then
    error(WHERE .. ": bad argument #1 (table expected, got " .. type(opts) .. ")", 2)
  end
  for k in pairs(opts) do
    if not TOP_FIELDS[k] then fail("unknown field " .. show(k)) end
  end
  local seed = opts.seed == nil and 1 or opts.seed
  check_int(seed, "seed", 0)
  if seed >= 2 ^ 53 then fail("seed must be below 2^53, got " .. show(seed)) end
  check_int(opts.tasks, "tasks", 0)
  if opts.tasks >= 2 ^ 53 then fail("tasks must be below 2^53, got " .. show(opts.tasks)) end
  local hosts = opts.hosts == nil and { "example.test" } or opts.hosts
  check_list(hosts, "hosts")
  for i, h in ipairs(hosts) do
    if type(h) ~= "string" or not h:match("^[%w.%-_]+$") or #h > 253 then
      fail("hosts[" .. i .. "] must be a host name, got " .. show(h))
    end
  end
  if opts.config ~= nil and type(opts.config) ~= "table" then
    fail("config must be a table, got " .. show(opts.config))
  end
  local cfg = config.validate(opts.config, WHERE)
  check_list(opts.proxies, "proxies")
  local groups, total = {}, 0
  for i, g in ipairs(opts.proxies) do
    groups[i] = group(g, i)
    total = total + groups[i].count
  end
  if total > MAX_PROXIES then
    fail("proxies: at most " .. MAX_PROXIES .. " simulated proxies in all, got " .. total)
  end
  if opts.time_limit ~= nil then
    check_num(opts.time_limit, "time_limit", 0)
    if opts.time_limit == 0 then fail("time_limit must be > 0, got 0") end
  end
  if opts.event_limit ~= nil then
    check_int(opts.event_limit, "event_limit", 1)
    if opts.event_limit >= 2 ^ 53 then fail("event_limit must be below 2^53, got " .. show(opts.event_limit)) end
  end
  check_bool(opts.norace, "norace")
  check_bool(opts.proxy_stats, "proxy_stats")
  check_bool(opts.memory, "memory")

  local trace = opts.trace
  if trace == true then
    trace = { limit = 100000 }
  elseif trace == false then
    trace = nil
  elseif trace ~= nil then
    if type(trace) ~= "table" then fail("trace must be a boolean or a table, got " .. show(trace)) end
    local t = { limit = 100000 }
    for k, v in pairs(trace) do
      if k == "limit" then
        check_int(v, "trace.limit", 1)
        if v >= 2 ^ 32 then fail("trace.limit must be below 2^32, got " .. show(v)) end
        t.limit = v
      elseif k == "proxy" then
        check_int(v, "trace.proxy", 1)
        if v > total then fail("trace.proxy must be a proxy number from 1 to " .. total .. ", got " .. v) end
        t.proxy = v
      elseif k == "host" then
        for i, h in ipairs(hosts) do
          if type(v) == "string" and h:lower() == v:lower() then t.host = i break end
        end
        if not t.host then fail("trace.host must be one of hosts, got " .. show(v)) end
      else
        fail("trace: unknown field " .. show(k))
      end
    end
    trace = t
  end

  -- per-host rate limits, as scatter.pool applies rate_limit.host_overrides
  local intervals = {}
  for i, h in ipairs(hosts) do intervals[i] = cfg.rate_limit.host_overrides[h:lower()] or -1 end

  local core_cfg = config.to_core(cfg)
  -- the scheduler's selection jitter follows the run's seed unless the
  -- config pins its own
  if not (opts.config and opts.config.seed ~= nil) then core_cfg.seed = seed end
  return core.simulate({
    seed = seed, tasks = opts.tasks, norace = opts.norace, time_limit = opts.time_limit,
    event_limit = opts.event_limit, trace = trace, proxy_stats = opts.proxy_stats,
    memory = opts.memory, hosts = hosts, intervals = intervals, groups = groups,
    config = core_cfg,
  })
end

return M
