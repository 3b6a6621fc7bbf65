-- Leveled logging to stderr: SCATTER_LOG picks the level (default info),
-- SCATTER_LOG_FORMAT=json gives one JSON object a line.
local cjson = require("cjson")

local M = {}
local LEVELS = { error = 1, warn = 2, info = 3, debug = 4, trace = 5 }
M.LEVELS = LEVELS

M.sink = function(line) io.stderr:write(line, "\n") end

-- A misspelt variable was ignored without a word (SCATTER_LOG=verbose
-- logged at info, SCATTER_LOG_FORMAT=jsn wrote text): it is said once, on
-- stderr, as --log-level and --log-format refuse the same words.
local function from_env(var, known, default)
  local v = os.getenv(var)
  if v == nil or v == "" then return default end
  if known[v:lower()] then return v:lower() end
  local names = {}
  for k in pairs(known) do names[#names + 1] = k end
  table.sort(names)
  io.stderr:write("scatter: ", var, "=", ("%q"):format(v):gsub("\\\n", "\\n"), " is not one of ",
    table.concat(names, ", "), "; using ", default, "\n")
  return default
end

local level = LEVELS[from_env("SCATTER_LOG", LEVELS, "info")]
local json = from_env("SCATTER_LOG_FORMAT", { text = true, json = true }, "text") == "json"

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

-- Masks proxy credentials in free text: "socks5h://user:pw@h:p" and bare
-- "user:pw@h:p" (list lines, keys) become "...***@h:p". A last line of
-- defence: everything written by scatter passes through it, so a message
-- that quotes a bad list line or a curl error cannot leak a password.
--
-- Linear in the length of s: it runs on every log line, and patterns
-- tried at every position of a long run of letters or colons went
-- quadratic (a 40 KB classifier error held the loop for 12 s). So the
-- text is cut into tokens (no space, quote or <>) and only tokens with
-- an '@' are looked at, each only up to its last '@' (every credential
-- ends with one); within that, each pattern's repeats stop at a
-- character that ends its part, so no start position rescans another's.
local SOCKS = "([Ss][Oo][Cc][Kk][Ss][45]?[AaHh]?://)[^%s\"'<>]*@"
local SCHEME = "(%f[%w+.-][%w+.-]*://)[^%s/\"'<>@:]*:[^%s/\"'<>]*@"
local BARE = "(%f[^%s\"'(=%[,;<>])[^%s\"'(=%[,;<>/@][^%s\"'(=%[,;<>/@:]*:[^%s\"'<>/]*@"

-- bare "user:pw@" never spans a '/': each '/'-separated part is masked
-- up to its own last '@'
local function mask_bare(head)
  local out, n, pos, len = {}, 0, 1, #head
  while pos <= len do
    local slash = head:find("/", pos, true) or len + 1
    local part = head:sub(pos, slash - 1)
    local at = part:match(".*()@")
    if at then
      -- " " stands for the token start (a boundary); "/" is none
      local lead = pos == 1 and " " or "/"
      local masked = (lead .. part:sub(1, at)):gsub(BARE, "%1***@")
      part = masked:sub(2) .. part:sub(at + 1)
    end
    n = n + 1
    out[n] = part
    if slash <= len then
      n = n + 1
      out[n] = "/"
    end
    pos = slash + 1
  end
  return table.concat(out)
end

local function mask_token(t)
  local at = t:match(".*()@")
  if not at then return t end
  local head = t:sub(1, at)
  head = head:gsub(SOCKS, "%1***@")
  head = head:gsub(SCHEME, "%1***@")
  return mask_bare(head) .. t:sub(at + 1)
end

function M.redact(s)
  if not s:find("@", 1, true) then return s end
  return (s:gsub("[^%s\"'<>]+", mask_token))
end
local redact = M.redact

-- What one log line carries from a value it quotes (a classifier's error,
-- a list line): a 50 MB string made 50 MB lines and held the loop.
M.MAX_MSG = 4096
M.MAX_FIELD = 1024

-- s cut to at most max bytes, saying how much was left out. Cut at a
-- token boundary first, so redaction sees every credential whole.
function M.cap(s, max)
  max = max or M.MAX_MSG
  if #s <= max then return s end
  local more = #s - max
  local head = s:sub(1, max)
  local cut = head:match("^.*()[%s\"'<>]") or 0
  if cut > max / 2 then
    head = head:sub(1, cut)
  elseif head:find(":", cut + 1, true) then
    -- a token cut short may have lost the '@' that marks a credential
    head = head:sub(1, cut) .. "***"
  end
  return head .. "... (" .. (#s - #head) .. " more bytes)", more
end

-- tostring() that cannot raise: a user value's __tostring may
function M.show(v)
  if type(v) == "string" then return v end
  local ok, s = pcall(tostring, v)
  if ok and type(s) == "string" then return s end
  return "<" .. type(v) .. " (its __tostring failed)>"
end
local show = M.show

local function field_value(v)
  local t = type(v)
  if t == "number" or t == "boolean" then return v end
  return redact(M.cap(show(v), M.MAX_FIELD))
end

-- emit("info", pool_name_or_nil, msg, fields_or_nil)
function M.emit(name, pool, msg, fields)
  if LEVELS[name] > level then return end
  msg = redact(M.cap(show(msg), M.MAX_MSG))
  if json then
    local o = { ts = os.time(), level = name, pool = pool or cjson.null, msg = msg }
    if fields then
      for k, v in pairs(fields) do
        k = tostring(k)
        if o[k] == nil then o[k] = field_value(v) end
      end
    end
    M.sink(cjson.encode(o))
  else
    local line = os.date("%Y-%m-%dT%H:%M:%S ") .. name:upper() .. " "
    if pool then line = line .. "[" .. pool .. "] " end
    line = line .. msg
    if fields then
      local keys = {}
      for k in pairs(fields) do keys[#keys + 1] = tostring(k) end
      table.sort(keys)
      for _, k in ipairs(keys) do
        local v = fields[k]
        if v == nil then v = fields[tonumber(k)] end
        v = tostring(field_value(v))
        if v == "" or v:find("[%s\"=]") then v = ("%q"):format(v) end
        line = line .. " " .. k .. "=" .. v
      end
    end
    M.sink(line)
  end
end

for name in pairs(LEVELS) do
  M[name] = function(msg, fields) M.emit(name, nil, show(msg), fields) end
end

return M
