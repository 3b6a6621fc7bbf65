-- Proxy list sources. file:// lists are read here; http(s) lists need a
-- direct (proxy-less) fetch, which is not built yet (issue 5).
local M = {}

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
    return nil, url .. ": http(s) sources are not supported in this version (use file://)"
  end
  return nil, "unsupported source URL " .. ("%q"):format(url) .. " (file://, http:// or https://)"
end

return M
