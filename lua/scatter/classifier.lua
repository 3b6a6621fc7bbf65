-- The default classifier (the Rust crate's table) and the safe call that
-- turns a classifier's error, yield or bad return into target_error.
local runtime = require("scatter.runtime")
local log = require("scatter.log")
local core = require("scatter.core")

local M = {}

M.VERDICTS = { success = true, proxy_blocked = true, target_error = true, final = true }

-- src/lua/response.c default_verdict is the same table in C, used when a pool
-- keeps this classifier; spec/classifier_spec.lua holds the two together.
-- A field the answer carries twice is a list: the first one counts, as
-- in C (src/net/retryafter.c)
local function first(v)
  if type(v) == "table" then v = v[1] end
  return type(v) == "string" and v or nil
end
M.first_field = first

function M.default(resp)
  local s = resp.status
  if s >= 200 and s < 300 then
    -- an empty 2xx is the crate's sign of a proxy that ate the page, but
    -- a HEAD or a 204 has no body by definition
    if #resp.body > 0 or s == 204 or resp.method == "HEAD" then return "success" end
    return "proxy_blocked"
  elseif s == 403 or s == 429 then
    return "proxy_blocked"
  elseif s == 503 and first(resp.headers["retry-after"]) and core.retry_after(first(resp.headers["retry-after"])) then
    -- "come back later" to this client: the pair rests (DESIGN.md 11)
    return "proxy_blocked"
  elseif s == 404 or s == 410 then
    -- maybe the target's truth, maybe a proxy's lie: no pair is charged;
    -- in C (a pool keeping this classifier) two proxies agreeing make it
    -- final
    return "target_error"
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

-- A user value in a message: never raising (its __tostring may), never
-- longer than a log line carries.
local function shown(v)
  local s
  if type(v) == "string" then s = ("%q"):format(log.cap(v, 200)) else s = log.show(v) end
  return (log.cap(s, 1000))
end
M.shown = shown

-- Returns verdict, err. Runs the classifier in its own coroutine so that a
-- yield is caught instead of suspending whoever drives the loop.
-- limit (seconds, 0: none): the watchdog's classifier_timeout; name: the
-- pool's, for the watchdog's own line when it cannot interrupt.
function M.call(fn, resp, limit, name)
  local co = coroutine.create(fn)
  runtime.no_wait = "a classifier"
  local armed = limit and limit > 0 and core.watchdog_arm(limit, name, co)
  local ok, v = coroutine.resume(co, resp)
  local overran = armed and core.watchdog_disarm()
  runtime.no_wait = nil
  if overran and not ok then
    return "target_error", "classifier_timeout: the classifier ran past classifier_timeout ("
      .. limit .. " s) and was interrupted", true
  end
  if not ok then
    return "target_error", "classifier error: " .. (type(v) == "string" and log.cap(v, 1000) or shown(v))
  end
  if coroutine.status(co) ~= "dead" then
    return "target_error", "classifier yielded (it must return a verdict without waiting)"
  end
  if type(v) ~= "string" or not M.VERDICTS[v] then
    return "target_error", "classifier returned " .. shown(v)
      .. " (expected success, proxy_blocked, target_error or final)"
  end
  return v
end

return M
