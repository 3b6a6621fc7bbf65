-- A classifier for a site that answers 200 even when it fails: its error
-- pages ("service temporarily unavailable", "no such item") come with
-- status 200, so the status alone would call them a success.
--
--   local soft_error = require("scatter.classifiers").soft_error
--   local pool = scatter.pool{ sources = {...}, classifier = soft_error{
--     retry = { "temporarily unavailable", "please try again" },
--     final = { "item not found" },
--     complete = "</html>",
--   } }
--
-- Verdicts: a `retry` phrase: target_error (the site's trouble: the task is
-- retried after a backoff and no proxy is blamed); a `final` phrase or a
-- real 404/410: final (delivered as is, the caller looks at the body); a
-- page that lacks `complete`: proxy_blocked (cut short or rewritten on the
-- way); 5xx target_error; 403/429 and other statuses proxy_blocked; the
-- rest success. Phrases are matched case-insensitively.
local SoftError = {}
SoftError.__index = SoftError

local function lower_all(list, name)
  local out = {}
  for i, p in ipairs(list or {}) do
    if type(p) ~= "string" or p == "" then error("soft_error: " .. name .. "[" .. i .. "] must be a non-empty string", 3) end
    out[i] = p:lower()
  end
  return out
end

local function new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("soft_error: options table expected", 2) end
  -- `classifier = soft_error` (no call) gets here with each response
  if type(opts.status) == "number" and type(opts.body) == "string" then
    error("soft_error is a constructor: the classifier is soft_error{ ... } (or soft_error()), not soft_error", 2)
  end
  return setmetatable({
    retry = lower_all(opts.retry, "retry"),
    final = lower_all(opts.final, "final"),
    complete = opts.complete,
  }, SoftError)
end

local function has_any(body, phrases)
  for _, p in ipairs(phrases) do
    if body:find(p, 1, true) then return true end
  end
  return false
end

function SoftError:classify(resp)
  local s = resp.status
  if s == 404 or s == 410 then return "final" end
  if s >= 500 then return "target_error" end
  if s < 200 or s >= 300 or #resp.body == 0 then return "proxy_blocked" end
  local body = resp.body:lower()
  if has_any(body, self.retry) then return "target_error" end
  if has_any(body, self.final) then return "final" end
  if self.complete and not resp.body:find(self.complete, 1, true) then return "proxy_blocked" end
  return "success"
end

return new
