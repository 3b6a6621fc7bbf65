-- A classifier for a JSON API: the body must decode and carry a field.
-- A proxy that injects HTML, truncates or rewrites the body fails the
-- decode; a block page served as JSON lacks the field.
--
--   local json_api = require("scatter.classifiers").json_api
--   local pool = scatter.pool{ sources = {...}, classifier = json_api{
--     field = "data.id",           -- dotted path that must be present
--     error_field = "error",       -- present: the API itself failed
--   } }
--   -- the decoded document is left in resp.json for the caller
--
-- Verdicts: 404/410 final; 5xx and an error_field (e.g. {"error": "busy"})
-- target_error (the API's trouble: retry later, blame no proxy); 403, 429,
-- a body that does not decode or lacks the field: proxy_blocked.
local cjson = require("cjson.safe")

local JsonApi = {}
JsonApi.__index = JsonApi

local function new(opts)
  -- `classifier = json_api` (no call) gets here with each response
  if type(opts) == "table" and type(opts.status) == "number" and type(opts.body) == "string" then
    error("json_api is a constructor: the classifier is json_api{ field = \"a.b.c\" }, not json_api", 2)
  end
  if type(opts) ~= "table" or type(opts.field) ~= "string" or opts.field == "" then
    error("json_api: options { field = \"a.b.c\" } expected", 2)
  end
  local path = {}
  for part in opts.field:gmatch("[^.]+") do path[#path + 1] = part end
  return setmetatable({ path = path, error_field = opts.error_field }, JsonApi)
end

-- Follows a dotted path; numeric parts index arrays (1-based).
local function dig(doc, path)
  for _, k in ipairs(path) do
    if type(doc) ~= "table" then return nil end
    local v = doc[k]
    if v == nil and tonumber(k) then v = doc[tonumber(k)] end
    doc = v
  end
  if doc == cjson.null then return nil end
  return doc
end

function JsonApi:classify(resp)
  local s = resp.status
  if s == 404 or s == 410 then return "final" end
  if s >= 500 then return "target_error" end
  if s < 200 or s >= 300 then return "proxy_blocked" end
  local doc = cjson.decode(resp.body)
  if type(doc) ~= "table" then return "proxy_blocked" end
  if self.error_field and doc[self.error_field] ~= nil and doc[self.error_field] ~= cjson.null then
    return "target_error"
  end
  if dig(doc, self.path) == nil then return "proxy_blocked" end
  resp.json = doc
  return "success"
end

return new
