-- An item of the queue as a JSON line that never fails (export, `scatter
-- queue failed --json`). What the queue recorded is not always UTF-8: a
-- binary POST body, a raw byte in a seed URL or a key, a handler's error
-- message quoting a page; the strict encoder refused the whole export for
-- one such item. Such a field is written as FIELD_base64 (its exact bytes)
-- instead; an error message, read by people, keeps its text with each bad
-- byte shown as \xNN.
local bit = require("bit")
local utf8_bad = require("scatter.core").utf8_bad

local M = {}

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

function M.base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = bit.bor(bit.lshift(a, 16), bit.lshift(b or 0, 8), c or 0)
    local q = {}
    for k = 1, 4 do q[k] = bit.band(bit.rshift(n, 6 * (4 - k)), 63) + 1 end
    out[#out + 1] = B64:sub(q[1], q[1]) .. B64:sub(q[2], q[2]) .. (b and B64:sub(q[3], q[3]) or "=")
      .. (c and B64:sub(q[4], q[4]) or "=")
  end
  return table.concat(out)
end

-- s with every byte that does not start a UTF-8 sequence shown as \xNN.
local function readable(s)
  local out, i = {}, 1
  while true do
    local at = utf8_bad(s:sub(i))
    if not at then break end
    out[#out + 1] = s:sub(i, i + at - 2)
    out[#out + 1] = ("\\x%02X"):format(s:byte(i + at - 1))
    i = i + at
  end
  out[#out + 1] = s:sub(i)
  return table.concat(out)
end

local BYTES = { "url", "key", "method", "body" }

-- Makes rec (an item table: url, key, body..., headers decoded or the
-- stored JSON text in raw_headers) encodable; returns it.
function M.exportable(rec, raw_headers)
  for _, f in ipairs(BYTES) do
    local v = rec[f]
    if type(v) == "string" and utf8_bad(v) then
      rec[f .. "_base64"], rec[f] = M.base64(v), nil
    end
  end
  if type(rec.err) == "string" and utf8_bad(rec.err) then rec.err = readable(rec.err) end
  if raw_headers and utf8_bad(raw_headers) then
    rec.headers, rec.headers_base64 = nil, M.base64(raw_headers)
  end
  return rec
end

return M
