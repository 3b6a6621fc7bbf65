-- How the Redis queue backend (queue_redis.lua) names its keys and stores
-- an item in its stream entry and in script arguments (the formats are
-- described in redis_scripts.lua).
local cjson = require("cjson.safe")

local M = {}

local ffi = require("ffi")
pcall(ffi.cdef, "int getpid(void);")
pcall(ffi.cdef, "int gethostname(char *name, size_t len);")

-- host:pid:random, this process's consumer in every group (now: the
-- clock, whose fraction tells two processes of one pid apart)
function M.consumer_name(now)
  local buf = ffi.new("char[256]")
  local host = ffi.C.gethostname(buf, 255) == 0 and ffi.string(buf) or "host"
  return ("%s:%d:%x"):format(host, ffi.C.getpid(), math.floor((now % 1) * 2 ^ 24))
end

local MAX_NAME = 200

-- A name becomes part of every key: printable bytes only (braces would
-- break the cluster hash tag), so what export and redis-cli show is what
-- the user typed.
function M.check_name(name)
  if type(name) ~= "string" or name == "" then
    return nil, "scatter.queue: a Redis queue needs name = a non-empty string, got " .. tostring(name)
  end
  if #name > MAX_NAME then return nil, ("scatter.queue: name is %d bytes, at most %d"):format(#name, MAX_NAME) end
  local bad = name:find("[%z\1-\31\127{}]")
  if bad then
    return nil, ("scatter.queue: name %q has a byte Redis keys here cannot carry at %d (control bytes and braces)")
      :format(name, bad)
  end
  return true
end

-- opts.lease, redis_timeout and retry_for checked; -> lease (seconds) |
-- nil, err. (The client takes the last two unchecked: a string raised, a
-- timeout <= 0 dropped every connection at once, reconnecting for ever.)
function M.check_opts(opts)
  local lease = opts.lease or 60
  if type(lease) ~= "number" or lease ~= lease or lease < 0.1 or lease > 86400 then
    return nil, "scatter.queue: lease must be a number of seconds in [0.1, 86400], got " .. tostring(opts.lease)
  end
  for k, lo in pairs({ redis_timeout = 0, retry_for = -1 }) do
    local v = opts[k]
    if v ~= nil and (type(v) ~= "number" or not (v > lo and v <= 2592000)) then return nil,
      ("scatter.queue: %s must be a number of seconds in %s, 2592000], got %s"):format(k, lo == 0 and "(0" or "[0",
        type(v) == "string" and ("'" .. v .. "'") or tostring(v)) end
  end
  return lease
end

-- Priorities as Redis sees them ("%d"), made once per level.
M.PRIO = setmetatable({}, { __index = function(t, p)
  local s = ("%d"):format(p)
  t[p] = s
  return s
end })

-- The stream entry of a record: "<tries>\t[url, meta, method, headers,
-- body, key]" with defaults left out (short items keep Redis small). A
-- plain GET of a URL JSON carries as it is skips cjson both ways.
local PLAIN = '^[^"\\%c]*$'

function M.encode(rec, tries)
  local url = rec.url
  if rec.meta == "{}" and rec.method == "GET" and not rec.headers and not rec.body
      and rec.key == "GET " .. url and url:find(PLAIN) then
    return tries .. '\t["' .. url .. '"]'
  end
  local t = { url }
  local fields = {
    rec.meta ~= "{}" and rec.meta or nil,
    rec.method ~= "GET" and rec.method or nil,
    rec.headers, rec.body,
    rec.key ~= rec.method .. " " .. url and rec.key or nil,
  }
  local last = 1
  for i = 1, 5 do if fields[i] ~= nil then last = i + 1 end end
  for i = 1, last - 1 do t[i + 1] = fields[i] == nil and cjson.null or fields[i] end
  return tries .. "\t" .. cjson.encode(t)
end

local function nn(v) if v ~= cjson.null then return v end end

-- -> item (without id and tries), the stored tries | nil
function M.decode(prio, data)
  local tries, url = data:match('^(%d+)\t%["([^"\\]*)"%]$')
  if tries then
    return { url = url, meta = "{}", method = "GET", priority = tonumber(prio), key = "GET " .. url }, tonumber(tries)
  end
  local json
  tries, json = data:match("^(%d+)\t(.*)$")
  local t = json and cjson.decode(json)
  if not t then return nil end
  local it = {
    url = t[1], meta = nn(t[2]) or "{}", method = nn(t[3]) or "GET",
    headers = nn(t[4]), body = nn(t[5]), priority = tonumber(prio),
  }
  it.key = nn(t[6]) or (it.method .. " " .. it.url)
  return it, tonumber(tries)
end

-- recs[from..to] (all of them by default) as (key, prio, item) triples
function M.push_args(argv, recs, from, to)
  local n = #argv
  for i = from or 1, to or #recs do
    local r = recs[i]
    argv[n + 1], argv[n + 2], argv[n + 3] = r.key, M.PRIO[r.priority or 0], M.encode(r, 0)
    n = n + 3
  end
  return argv
end

-- The client sends at most 8,000 arguments a command (LuaJIT's C stack
-- bound in src/lua/redis.c's send): a step carries at most ARGS_MAX, a
-- push at most PUSH_CHUNK records (3 arguments each) a script, which also
-- keeps each script short for the other workers.
local ARGS_MAX = 7000
M.PUSH_CHUNK = 2000

-- recs pushed by the push script on connection c in chunks; -> new
-- count, flags | nil, err
function M.push_chunks(c, script, prefix, recs)
  local out, n = {}, 0
  for from = 1, #recs, M.PUSH_CHUNK do
    -- (a failure after some chunks leaves those pushed: a retry finds
    -- them seen, as a retried push after a lost reply does)
    local argv = M.push_args({ "EVALSHA", false, 0, prefix }, recs, from, math.min(#recs, from + M.PUSH_CHUNK - 1))
    local flags, err = c:evalv(script, argv)
    if not flags then return nil, err end
    for _, f in ipairs(flags) do
      out[#out + 1] = f == 1
      if f == 1 then n = n + 1 end
    end
  end
  return n, out
end

-- The step script's completions (redis_scripts.lua) of jobs[from..] added
-- to argv (its 10 head arguments, the count last), as many as ARGS_MAX
-- allows, at least one; -> argv, the first job left out.
function M.step_argv(argv, jobs, from)
  local n, j = #argv, from
  while j <= #jobs do
    local job = jobs[j]
    local it, recs, line = job.item, job.recs, job.line
    if j > from and n + 5 + 3 * #recs > ARGS_MAX then break end
    argv[n + 1], argv[n + 2], argv[n + 3], argv[n + 4], argv[n + 5] =
      M.PRIO[it.priority], it.id, line or "", line and "1" or "0", #recs
    n = n + 5
    if #recs > 0 then
      M.push_args(argv, recs)
      n = #argv
    end
    j = j + 1
  end
  argv[10] = j - from
  return argv, j
end

return M
