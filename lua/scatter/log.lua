-- Leveled logging to stderr: SCATTER_LOG picks the level (default info),
-- SCATTER_LOG_FORMAT=json gives one JSON object a line.
local cjson = require("cjson")

local M = {}
local LEVELS = { error = 1, warn = 2, info = 3, debug = 4, trace = 5 }
M.LEVELS = LEVELS

local level = LEVELS[(os.getenv("SCATTER_LOG") or "info"):lower()] or LEVELS.info
local json = (os.getenv("SCATTER_LOG_FORMAT") or ""):lower() == "json"
M.sink = function(line) io.stderr:write(line, "\n") end

function M.set_level(name)
  local l = LEVELS[name]
  if not l then return nil, "unknown log level: " .. tostring(name) end
  level = l
  return true
end

function M.set_format(name)
  if name ~= "text" and name ~= "json" then return nil, "unknown log format: " .. tostring(name) end
  json = name == "json"
  return true
end

function M.enabled(name) return LEVELS[name] <= level end

-- Masks proxy credentials in free text: "socks5h://user:pw@h:p" and bare
-- "user:pw@h:p" (list lines, keys) become "...***@h:p". A last line of
-- defence: everything written by scatter passes through it, so a message
-- that quotes a bad list line or a curl error cannot leak a password.
function M.redact(s)
  s = s:gsub("([Ss][Oo][Cc][Kk][Ss][45]?[AaHh]?://)[^%s\"'<>]*@", "%1***@")
  s = s:gsub("(%a[%w+.-]*://)[^%s/\"'<>@]*:[^%s/\"'<>]*@", "%1***@")
  s = (" " .. s):gsub("(%f[^%s\"'(=%[,;<>])[^%s\"'(=%[,;<>/@]+:[^%s\"'<>/]*@", "%1***@")
  return s:sub(2)
end
local redact = M.redact

local function field_value(v)
  local t = type(v)
  if t == "string" then return redact(v) end
  if t == "number" or t == "boolean" then return v end
  return redact(tostring(v))
end

-- emit("info", pool_name_or_nil, msg, fields_or_nil)
function M.emit(name, pool, msg, fields)
  if LEVELS[name] > level then return end
  msg = redact(tostring(msg))
  if json then
    local o = { ts = os.time(), level = name, pool = pool or cjson.null, msg = msg }
    if fields then
      for k, v in pairs(fields) do
        k = tostring(k)
        if o[k] == nil then o[k] = field_value(v) end
      end
    end
    M.sink(cjson.encode(o))
  else
    local line = os.date("%Y-%m-%dT%H:%M:%S ") .. name:upper() .. " "
    if pool then line = line .. "[" .. pool .. "] " end
    line = line .. msg
    if fields then
      local keys = {}
      for k in pairs(fields) do keys[#keys + 1] = tostring(k) end
      table.sort(keys)
      for _, k in ipairs(keys) do
        local v = fields[k]
        if v == nil then v = fields[tonumber(k)] end
        v = tostring(field_value(v))
        if v == "" or v:find("[%s\"=]") then v = ("%q"):format(v) end
        line = line .. " " .. k .. "=" .. v
      end
    end
    M.sink(line)
  end
end

for name in pairs(LEVELS) do
  M[name] = function(msg, fields) M.emit(name, nil, tostring(msg), fields) end
end

return M
