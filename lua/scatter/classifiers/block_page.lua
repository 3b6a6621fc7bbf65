-- A classifier for HTML sites behind bot protection: captcha and block
-- pages are the proxy's fault (try another), even when they come as 200.
--
--   local block_page = require("scatter.classifiers").block_page
--   local pool = scatter.pool{ sources = {...}, classifier = block_page{
--     markers = { "verify you are human" },   -- added to the built-in ones
--     complete = "</html>",                   -- a page must end like this
--   } }
--
-- Verdicts: 404/410 final (a real "not found" is an answer, not a failure);
-- 5xx target_error (the site's trouble: retry later, blame no proxy);
-- 403, 407, 429, a challenge header, a block-page marker in the head of the
-- body, or a truncated page: proxy_blocked; any other 2xx: success.
local BlockPage = {}
BlockPage.__index = BlockPage

-- Seen on Cloudflare, Akamai, PerimeterX, DataDome, Google and generic WAF
-- pages; lower case, matched as plain substrings.
local MARKERS = {
  "captcha", "attention required", "access denied", "are you a robot",
  "unusual traffic", "cf-chl-", "challenge-platform", "request blocked",
  "pardon our interruption", "bot detection",
}

-- Block pages are small and say so early: scanning the head of a body keeps
-- a multi-megabyte page cheap to judge.
local SCAN_BYTES = 16384

local function new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("block_page: options table expected", 2) end
  -- `classifier = block_page` (no call) gets here with each response: say
  -- so, rather than hand back an object that is no verdict
  if type(opts.status) == "number" and type(opts.body) == "string" then
    error("block_page is a constructor: the classifier is block_page{ ... } (or block_page()), not block_page", 2)
  end
  local self = setmetatable({ markers = {}, complete = opts.complete }, BlockPage)
  for _, m in ipairs(MARKERS) do self.markers[#self.markers + 1] = m end
  for _, m in ipairs(opts.markers or {}) do self.markers[#self.markers + 1] = m:lower() end
  return self
end

function BlockPage:classify(resp)
  local s = resp.status
  if s == 404 or s == 410 then return "final" end
  if s >= 500 then return "target_error" end
  if s == 403 or s == 407 or s == 429 then return "proxy_blocked" end
  if s < 200 or s >= 300 then return "proxy_blocked" end
  -- Cloudflare marks its challenge pages so, whatever their status
  if resp.headers["cf-mitigated"] == "challenge" then return "proxy_blocked" end
  if #resp.body == 0 then return "proxy_blocked" end
  local head = resp.body:sub(1, SCAN_BYTES):lower()
  for _, m in ipairs(self.markers) do
    if head:find(m, 1, true) then return "proxy_blocked" end
  end
  if self.complete and not resp.body:find(self.complete, 1, true) then
    return "proxy_blocked" -- cut short by a dying proxy
  end
  return "success"
end

return new
