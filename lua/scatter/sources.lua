-- Proxy list sources: file:// lists read from disk, http(s):// lists
-- fetched directly (never through the pool's proxies), TLS verified.
local core = require("scatter.core")
local runtime = require("scatter.runtime")

local M = {}
M.FETCH_TIMEOUT = 10

local MAX_BYTES = 64 * 1024 * 1024

-- Returns an array of lines, or nil, reason.
function M.load(url)
  if type(url) ~= "string" then return nil, "source must be a URL string" end
  local path = url:match("^[Ff][Ii][Ll][Ee]://(.+)$")
  if path then
    local f, err = io.open(path, "rb")
    if not f then return nil, "cannot read " .. url .. ": " .. tostring(err) end
    local data = f:read(MAX_BYTES + 1)
    f:close()
    data = data or ""
    if #data > MAX_BYTES then return nil, url .. ": larger than 64 MiB" end
    local lines = {}
    for line in data:gmatch("[^\n]+") do lines[#lines + 1] = line end
    return lines
  end
  if url:match("^[Hh][Tt][Tt][Pp][Ss]?://") then
    local res = runtime.await(core.fetch({ url = url, timeout = M.FETCH_TIMEOUT, max_body = MAX_BYTES }))
    if res.err then return nil, url .. ": " .. res.err end
    if res.status < 200 or res.status > 299 then
      return nil, url .. ": HTTP " .. res.status
    end
    local lines = {}
    for line in res.body:gmatch("[^\n]+") do lines[#lines + 1] = line end
    return lines
  end
  return nil, "unsupported source URL " .. ("%q"):format(url) .. " (file://, http:// or https://)"
end

return M
