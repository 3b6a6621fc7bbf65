-- The default classifier (the Rust crate's table) and the safe call that
-- turns a classifier's error, yield or bad return into target_error.
local M = {}

M.VERDICTS = { success = true, proxy_blocked = true, target_error = true, final = true }

function M.default(resp)
  local s = resp.status
  if s >= 200 and s < 300 then
    return #resp.body > 0 and "success" or "proxy_blocked"
  elseif s == 403 or s == 429 then
    return "proxy_blocked"
  elseif s >= 500 and s < 600 then
    return "target_error"
  end
  return "proxy_blocked"
end

-- Accepts a function or an object with :classify(resp).
function M.check(c, where)
  if c == nil then return M.default end
  if type(c) == "function" then return c end
  if type(c) == "table" or type(c) == "userdata" then
    local ok, m = pcall(function() return c.classify end)
    if ok and type(m) == "function" then
      return function(resp) return m(c, resp) end
    end
  end
  error(where .. ": classifier must be a function or an object with :classify(resp)", 3)
end

-- Returns verdict, err. Runs the classifier in its own coroutine so that a
-- yield is caught instead of suspending whoever drives the loop.
function M.call(fn, resp)
  local co = coroutine.create(fn)
  local ok, v = coroutine.resume(co, resp)
  if not ok then
    return "target_error", "classifier error: " .. tostring(v)
  end
  if coroutine.status(co) ~= "dead" then
    return "target_error", "classifier yielded (it must return a verdict without waiting)"
  end
  if not M.VERDICTS[v] then
    return "target_error", "classifier returned " .. (type(v) == "string" and ("%q"):format(v) or tostring(v))
      .. " (expected success, proxy_blocked, target_error or final)"
  end
  return v
end

return M
