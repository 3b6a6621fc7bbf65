-- JSON of what users hand scatter to keep (a crawl's output records, an
-- item's meta): lua-cjson's encoder with every number exact. Debian's
-- lua-cjson 2.1.0 writes numbers with at most 14 significant digits
-- (encode_number_precision refuses more), so a 16-digit product id came
-- out of a crawl as 1.2345678901235e+15: a different number, silently.
-- cjson still writes everything; a number it would round is swapped for a
-- token before and for its exact digits after.
local cjson = require("cjson.safe")
local utf8_bad = require("scatter.core").utf8_bad

local M = {}

local floor, abs, format = math.floor, math.abs, string.format
local HUGE = math.huge

-- True when cjson's 14 digits would change x.
local function lossy(x)
  if x == floor(x) and abs(x) < 1e14 then return false end -- (most numbers)
  if x ~= x or x == HUGE or x == -HUGE then return false end -- (cjson refuses those)
  return tonumber(format("%.14g", x)) ~= x
end

-- (v encoded already: no cycle, at most cjson's depth; a table shared
-- twice is walked twice, as cjson walked it)
local function any_lossy(v)
  for _, x in pairs(v) do
    local t = type(x)
    if t == "number" then
      if lossy(x) then return true end
    elseif t == "table" and any_lossy(x) then
      return true
    end
  end
  return false
end

-- (a token is a string no record holds: a control byte, a name, a count)
local function token(i) return "\1scatter-number:" .. i .. "\1" end
local TOKEN_JSON = '"\\u0001scatter%-number:(%d+)\\u0001"'

local function swapped(v, exact)
  local t = {}
  for k, x in pairs(v) do
    local tx = type(x)
    if tx == "number" and lossy(x) then
      -- an integer's own digits (a double holds them exactly); a fraction
      -- in the 17 digits that read back as the same double
      exact[#exact + 1] = x == floor(x) and format("%.0f", x) or format("%.17g", x)
      x = token(#exact)
    elseif tx == "table" then
      x = swapped(x, exact)
    end
    t[k] = x
  end
  return t
end

-- Where the first string of v that is not UTF-8 is: "body, byte 3".
local function where_bad(v, path)
  if type(v) == "string" then
    local at = utf8_bad(v)
    return at and (path or "the value") .. ", byte " .. at
  end
  if type(v) ~= "table" then return nil end
  for k, x in pairs(v) do
    local name = (path and path .. "." or "") .. tostring(k)
    local w = type(k) == "string" and utf8_bad(k) and "a key in " .. (path or "the value")
      or where_bad(x, name)
    if w then return w end
  end
end

local function text(s, v)
  -- (cjson's output is ASCII but for the bytes of the strings it copied)
  if not utf8_bad(s) then return s end
  return nil, "a string that is not UTF-8 (" .. tostring(where_bad(v)) .. "): JSON holds text; "
    .. "encode binary data first (as base64 or hex)"
end

-- encode(v) -> JSON text | nil, err (cjson's error, or a string that is
-- not UTF-8: a line strict JSON readers would refuse)
function M.encode(v)
  local s, err = cjson.encode(v)
  if not s then return nil, err end
  s, err = text(s, v)
  if not s then return nil, err end
  if type(v) ~= "table" then
    if type(v) == "number" and lossy(v) then
      return v == floor(v) and format("%.0f", v) or format("%.17g", v)
    end
    return s
  end
  if not any_lossy(v) then return s end
  local exact = {}
  s, err = cjson.encode(swapped(v, exact))
  if not s then return nil, err end
  local n = 0
  s = s:gsub(TOKEN_JSON, function(i)
    n = n + 1
    return exact[tonumber(i)]
  end)
  -- (a record holding a token's very text itself would be read wrong)
  if n ~= #exact then return nil, "a string in the value looks like scatter's number token" end
  return s
end

return M
