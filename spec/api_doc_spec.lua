-- docs/API.md against the code: every exported function, option, error
-- string and metric must be documented there, and every call the doc names
-- must exist. Adding an export without documenting it fails here. And
-- README.md, a new user's first page: its Lua compiles, and the calls,
-- pool and request fields, commands and options it names exist.
local scatter = require("scatter")
local config = require("scatter.config")
local classifier = require("scatter.classifier")
local pool_mod = require("scatter.pool")

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local root = here .. "../"

local function read(path)
  local f = assert(io.open(root .. path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local DOC = read("docs/API.md")

-- Every `code span` of the doc (fenced blocks count as one span each).
local spans = {}
for block in DOC:gmatch("```.-```") do spans[#spans + 1] = block end
for span in DOC:gsub("```.-```", ""):gmatch("`([^`\n]+)`") do spans[#spans + 1] = span end

local function escape(s) return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")) end

-- True when some code span holds `text` as a whole word (not part of a
-- longer identifier).
local function documented(text)
  local pat = "%f[%w_]" .. escape(text) .. "%f[^%w_]"
  for _, s in ipairs(spans) do
    if s:find(pat) then return true end
  end
  return false
end

local function sorted_keys(t, pred)
  local out = {}
  for k, v in pairs(t) do
    if type(k) == "string" and (not pred or pred(k, v)) then out[#out + 1] = k end
  end
  table.sort(out)
  return out
end

local function missing(names, fmt)
  local out = {}
  for _, n in ipairs(names) do
    local text = fmt and fmt:format(n) or n
    if not documented(text) then out[#out + 1] = text end
  end
  return out
end

local function public(k) return k:sub(1, 1) ~= "_" end
local function public_fn(k, v) return public(k) and type(v) == "function" end

-- Live objects, built without any I/O (an inline proxy, no request).
local pool = scatter.pool({ proxies = { "127.0.0.1:9" }, metrics_log_interval = 0 })
local router = scatter.router({ ["a.test"] = { proxies = { "127.0.0.1:9" }, metrics_log_interval = 0 } })
local handle = assert(pool:try_submit({ url = "http://a.test/" }))

local POOL_METHODS = getmetatable(pool).__index
local HANDLE_METHODS = getmetatable(handle).__index
local ROUTER_METHODS = getmetatable(router).__index

-- The stable error strings, read out of the sources: Lua's `nil, "word"` /
-- `nil, "word: ..."` returns, and the kinds C gives a failed transfer.
local function error_strings()
  local found = {}
  local p = assert(io.popen("ls " .. root .. "lua/scatter/*.lua"))
  for path in p:lines() do
    local f = assert(io.open(path, "rb"))
    local src = f:read("*a")
    f:close()
    for word in src:gmatch('nil, "([%l_]+)[":]') do found[word] = true end
  end
  p:close()
  local xfer = read("src/net/xfer.c")
  local body = assert(xfer:match("void sc_xfer_error%(.-\n}\n"), "sc_xfer_error not found in src/net/xfer.c")
  for word in body:gmatch('"([%l_]+)"') do found[word] = true end
  for word in body:gmatch('"([%l_]+): ') do found[word] = true end
  for _, file in ipairs({ "src/lua/core.c", "src/lua/pool.c", "src/lua/response.c" }) do
    for word in read(file):gmatch('lua_pushliteral%(L, "([%l_]+)"%)') do found[word] = true end
  end
  return sorted_keys(found)
end

describe("docs/API.md", function()
  teardown(function()
    handle:cancel()
    pool:close()
    router:close()
  end)

  it("documents every function of the scatter module", function()
    assert.same({}, missing(sorted_keys(scatter, public_fn), "scatter.%s"))
    assert.truthy(documented("scatter._VERSION"))
  end)

  it("documents every function of scatter.log", function()
    assert.same({}, missing(sorted_keys(scatter.log, public_fn), "scatter.log.%s"))
    assert.same({}, missing(sorted_keys(scatter.log, function(_, v) return type(v) == "table" end), "scatter.log.%s"))
  end)

  it("documents every pool, handle and router method", function()
    assert.same({}, missing(sorted_keys(POOL_METHODS, public_fn), "pool:%s"))
    assert.same({}, missing(sorted_keys(HANDLE_METHODS, public_fn), "h:%s"))
    assert.same({}, missing(sorted_keys(ROUTER_METHODS, public_fn), "router:%s"))
  end)

  it("documents every configuration field, rate_limit's too", function()
    assert.same({}, missing(sorted_keys(config.FIELDS)))
    local rl = config.validate({ proxies = { "127.0.0.1:9" } }).rate_limit
    assert.same({}, missing(sorted_keys(rl)))
  end)

  it("documents every request field, response field and verdict", function()
    assert.same({}, missing(sorted_keys(pool_mod.REQ_FIELDS)))
    assert.same({}, missing(sorted_keys(classifier.VERDICTS)))
    -- a real response's fields (classified, so every field a classifier sees)
    for _, f in ipairs({ "status", "headers", "body", "url", "proxy", "method", "attempts", "elapsed" }) do
      assert.truthy(documented("resp." .. f), "resp." .. f)
    end
  end)

  it("documents every error string", function()
    local errs = error_strings()
    -- the scan must keep finding the core ones, or it has gone blind
    for _, e in ipairs({ "timeout", "pool_full", "cancelled", "closed", "unknown_host", "invalid_request",
                         "proxy_refused", "socks_error", "too_large" }) do
      local seen = false
      for _, x in ipairs(errs) do seen = seen or x == e end
      assert.is_true(seen, "the source scan no longer finds " .. e)
    end
    assert.same({}, missing(errs))
  end)

  it("documents every metric, verdict counts included", function()
    local m = pool:metrics()
    assert.same({}, missing(sorted_keys(m)))
    assert.same({}, missing(sorted_keys(m.verdicts)))
    assert.same({}, missing(sorted_keys(router:metrics("a.test"))))
  end)

  it("names no call that does not exist", function()
    local stale = {}
    local tables = { pool = POOL_METHODS, h = HANDLE_METHODS, router = ROUTER_METHODS }
    for _, s in ipairs(spans) do
      for name in s:gmatch("%f[%w_]scatter%.([%a_]+)%s*[%({]") do
        if type(scatter[name]) ~= "function" then stale[#stale + 1] = "scatter." .. name end
      end
      for name in s:gmatch("%f[%w_]scatter%.log%.([%a_]+)%s*%(") do
        if type(scatter.log[name]) ~= "function" then stale[#stale + 1] = "scatter.log." .. name end
      end
      for obj, name in s:gmatch("%f[%w_](%a+):([%a_]+)%s*[%({]") do
        local t = tables[obj]
        if t and type(t[name]) ~= "function" then stale[#stale + 1] = obj .. ":" .. name end
      end
    end
    assert.same({}, stale)
  end)

  it("gives every function, option and metric a row with an example", function()
    -- table rows whose first cell is code must have a code example last
    local bad = {}
    for line in DOC:gmatch("[^\n]+") do
      if line:match("^| `") then
        local last = line:match("|%s*([^|]-)%s*|%s*$")
        if not last or not last:find("`", 1, true) then bad[#bad + 1] = line end
      end
    end
    assert.same({}, bad)
  end)
end)

local README = read("README.md")

-- README's fenced blocks: { lang = "lua" | "sh" | "", body = text }.
local function fences(doc)
  local out = {}
  for lang, body in doc:gmatch("```(%w*)\n(.-)```") do out[#out + 1] = { lang = lang, body = body } end
  return out
end

-- Command lines README shows: lines of non-Lua blocks, indented lines and
-- inline code spans, each from `scatter CMD` on (a pipe ends it).
local function command_lines(doc)
  local texts = {}
  for _, f in ipairs(fences(doc)) do
    if f.lang ~= "lua" then
      for line in f.body:gmatch("[^\n]+") do texts[#texts + 1] = line end
    end
  end
  local prose = doc:gsub("```.-```", "")
  for line in prose:gmatch("[^\n]+") do
    if line:match("^    %S") then texts[#texts + 1] = line end
  end
  for span in prose:gmatch("`([^`\n]+)`") do texts[#texts + 1] = span end
  local out = {}
  for _, t in ipairs(texts) do
    local cmd, rest = t:match("%f[%w]scatter (%l+)(.*)$")
    if cmd then out[#out + 1] = { cmd = cmd, rest = (rest:gsub("%s|%s.*$", "")), text = t } end
  end
  return out
end

-- The keys written at the top level of the table constructor whose brace
-- is at `from` (nested tables and call arguments skipped).
local function table_keys(src, from)
  local keys, depth = {}, 0
  for i = from, #src do
    local c = src:sub(i, i)
    if c == "{" or c == "(" then
      depth = depth + 1
    elseif c == "}" or c == ")" then
      depth = depth - 1
      if depth == 0 then break end
    end
    if depth == 1 and (c == "{" or c == "," or c == "\n") then
      local key = src:match("^%s*([%a_][%w_]*)%s*=[^=]", i + 1)
      if key then keys[#keys + 1] = key end
    end
  end
  return keys
end

describe("README.md", function()
  local cli = require("scatter.cli")

  it("has Lua blocks that all compile", function()
    local bad, n = {}, 0
    for i, f in ipairs(fences(README)) do
      if f.lang == "lua" then
        n = n + 1
        local fn, err = loadstring(f.body, "README block " .. i)
        if not fn then bad[#bad + 1] = err end
      end
    end
    assert.is_true(n >= 5, "the README scan found " .. n .. " Lua blocks")
    assert.same({}, bad)
  end)

  it("names only pool fields and request fields that exist", function()
    local bad, seen = {}, 0
    for _, f in ipairs(fences(README)) do
      if f.lang == "lua" then
        for at in f.body:gmatch("scatter%.pool%s*%(?()%{") do
          for _, k in ipairs(table_keys(f.body, at)) do
            seen = seen + 1
            if not config.FIELDS[k] then bad[#bad + 1] = "scatter.pool field " .. k end
          end
        end
      end
    end
    -- the API table's pool:request{method=, url=, ...}
    local req = README:match("pool:request{([^}]*)}")
    assert.truthy(req, "README no longer shows pool:request{...}")
    for k in req:gmatch("([%a_]+)=") do
      seen = seen + 1
      if not pool_mod.REQ_FIELDS[k] then bad[#bad + 1] = "pool:request field " .. k end
    end
    assert.is_true(seen >= 15, "the README scan found " .. seen .. " fields")
    assert.same({}, bad)
  end)

  it("names no call that does not exist", function()
    local p = scatter.pool({ proxies = { "127.0.0.1:9" }, metrics_log_interval = 0 })
    local s = p:session{ max_uses = 1 }
    local qpath = os.tmpname()
    os.remove(qpath)
    local q = assert(scatter.queue({ path = qpath }))
    local tables = { pool = POOL_METHODS, h = HANDLE_METHODS, router = ROUTER_METHODS,
                     s = getmetatable(s).__index, q = getmetatable(q).__index }
    local texts = {}
    for _, f in ipairs(fences(README)) do
      if f.lang == "lua" then texts[#texts + 1] = f.body end
    end
    for span in README:gsub("```.-```", ""):gmatch("`([^`\n]+)`") do texts[#texts + 1] = span end
    local stale = {}
    for _, t in ipairs(texts) do
      for name in t:gmatch("%f[%w_]scatter%.([%a_]+)%s*[%({]") do
        if type(scatter[name]) ~= "function" then stale[#stale + 1] = "scatter." .. name end
      end
      for name in t:gmatch("%f[%w_]scatter%.log%.([%a_]+)%s*%(") do
        if type(scatter.log[name]) ~= "function" then stale[#stale + 1] = "scatter.log." .. name end
      end
      for obj, name in t:gmatch("%f[%w_](%a+):([%a_]+)%s*[%({]") do
        local m = tables[obj]
        if m and type(m[name]) ~= "function" then stale[#stale + 1] = obj .. ":" .. name end
      end
    end
    q:close()
    p:close()
    for _, f in ipairs({ "", "-wal", "-shm", "-lock" }) do os.remove(qpath .. f) end
    assert.same({}, stale)
  end)

  it("shows only commands and options the CLI has", function()
    local usage = {}
    for _, n in ipairs(cli.COMMANDS) do usage[n] = require("scatter.cmd." .. n).usage end
    local bad, checked = {}, 0
    for _, l in ipairs(command_lines(README)) do
      if not usage[l.cmd] then
        bad[#bad + 1] = "no command '" .. l.cmd .. "': " .. l.text
      else
        -- what follows `run`'s script is the script's
        local rest = l.cmd == "run" and l.rest:gsub("%S+%.lua.*$", "") or l.rest
        for opt in (" " .. rest):gmatch("[%s%[%(](%-%-?%a[%w-]*)") do
          checked = checked + 1
          if opt ~= "--help" and not usage[l.cmd]:find("%f[%w-]" .. escape(opt) .. "%f[^%w-]") then
            bad[#bad + 1] = "scatter " .. l.cmd .. " has no " .. opt .. ": " .. l.text
          end
        end
      end
    end
    assert.is_true(checked >= 20, "the README scan found " .. checked .. " options")
    assert.same({}, bad)
  end)
end)
