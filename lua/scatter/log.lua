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

-- emit("info", pool_name_or_nil, msg, fields_or_nil)
function M.emit(name, pool, msg, fields)
  if LEVELS[name] > level then return end
  if json then
    local o = { ts = os.time(), level = name, pool = pool, msg = msg }
    if fields then for k, v in pairs(fields) do if o[k] == nil then o[k] = v end end end
    M.sink(cjson.encode(o))
  else
    local line = os.date("%Y-%m-%dT%H:%M:%S ") .. name:upper() .. " "
    if pool then line = line .. "[" .. pool .. "] " end
    line = line .. msg
    if fields then
      local keys = {}
      for k in pairs(fields) do keys[#keys + 1] = k end
      table.sort(keys)
      for _, k in ipairs(keys) do line = line .. " " .. k .. "=" .. tostring(fields[k]) end
    end
    M.sink(line)
  end
end

for name in pairs(LEVELS) do
  M[name] = function(msg, fields) M.emit(name, nil, tostring(msg), fields) end
end

return M
