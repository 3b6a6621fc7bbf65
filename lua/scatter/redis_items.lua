-- How the Redis queue backend (queue_redis.lua) stores an item in its
-- stream entry (the entry format is described in redis_scripts.lua).
local cjson = require("cjson.safe")

local M = {}

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

function M.push_args(argv, recs)
  local n = #argv
  for i = 1, #recs do
    local r = recs[i]
    argv[n + 1], argv[n + 2], argv[n + 3] = r.key, M.PRIO[r.priority or 0], M.encode(r, 0)
    n = n + 3
  end
  return argv
end

return M
