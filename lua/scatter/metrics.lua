-- Prometheus exposition of pool metrics (DESIGN.md section 6) over the
-- small HTTP server of src/lua/httpd.c.
--
-- Servers are shared by address: every pool (or router pool, or
-- `scatter run --metrics`) that asks for "127.0.0.1:9464" registers a
-- provider with the one server there, and /metrics shows all of them, one
-- `pool` label each. The server stops when its last provider leaves.
local core = require("scatter.core")
local runtime = require("scatter.runtime")
local log = require("scatter.log")

local M = {}

-- name, type, help, function(m) -> value | { {labels, value}, ... }
local FAMILIES = {
  { "scatter_proxies", "gauge", "Proxies of the pool by state.", function(m)
    return {
      { 'state="healthy"', m.healthy_proxies }, { 'state="cooldown"', m.cooldown_proxies },
      { 'state="dead"', m.dead_proxies }, { 'state="retired"', m.retired_proxies or 0 },
      { 'state="untested"', m.untested_proxies or 0 }, { 'state="failing"', m.failing_proxies or 0 },
    }
  end },
  { "scatter_tasks", "gauge", "Unfinished tasks by state (pending = ready + delayed + running).", function(m)
    return {
      { 'state="pending"', m.pending_tasks }, { 'state="ready"', m.ready_tasks or 0 },
      { 'state="delayed"', m.delayed_tasks }, { 'state="running"', m.running_tasks or 0 },
    }
  end },
  { "scatter_tasks_completed_total", "counter", "Tasks delivered (verdict success or final).",
    function(m) return m.completed_tasks end },
  { "scatter_tasks_failed_total", "counter", "Tasks that ended without a response (cancelled, timed out, closed).",
    function(m) return m.failed_tasks end },
  { "scatter_tasks_requeued_total", "counter", "Rounds after which every path had failed and the task was requeued.",
    function(m) return m.requeued_tasks end },
  { "scatter_throughput_tasks_per_second", "gauge", "Tasks delivered per second over a sliding window.", function(m)
    return {
      { 'window="1s"', m.throughput_1s }, { 'window="10s"', m.throughput_10s },
      { 'window="60s"', m.throughput_60s },
    }
  end },
  { "scatter_attempt_success_ratio", "gauge", "Share of attempts judged success or final over the last minute.",
    function(m) return m.success_rate_1m end },
  { "scatter_attempt_latency_avg_seconds", "gauge", "Moving average of successful attempts' latency.",
    function(m) return m.avg_latency_ms / 1000 end },
  { "scatter_inflight_attempts", "gauge", "Attempts in flight.", function(m) return m.inflight end },
  { "scatter_k", "gauge", "Paths per task in the current round (adaptive K).", function(m) return m.k_current end },
  { "scatter_attempts_started_total", "counter", "Attempts started (one proxy each).",
    function(m) return m.attempts_started end },
  { "scatter_attempts_cancelled_total", "counter", "Attempts cancelled (race lost, task cancelled or timed out).",
    function(m) return m.attempts_cancelled end },
  { "scatter_attempts_finished_total", "counter", "Attempts that ended with a verdict.",
    function(m) return m.attempts_finished or 0 end },
  { "scatter_verdicts_total", "counter", "Finished attempts by verdict (transport: the proxy failed to carry it).", function(m)
    local out = {}
    for _, v in ipairs({ "success", "final", "proxy_blocked", "target_error", "transport" }) do
      out[#out + 1] = { 'verdict="' .. v .. '"', (m.verdicts or {})[v] or 0 }
    end
    return out
  end },
  { "scatter_dispatches_total", "counter", "Dispatch rounds (a task sent over up to K proxies).",
    function(m) return m.dispatch_count end },
  { "scatter_zero_available_events_total", "counter", "Dispatches that found no eligible proxy.",
    function(m) return m.zero_available_events end },
  { "scatter_dispatch_skips_total", "counter", "Proxies passed over while choosing paths, by reason.", function(m)
    return {
      { 'reason="no_permit"', m.skipped_no_permit }, { 'reason="rate_limit"', m.skipped_rate_limit },
      { 'reason="cooldown"', m.skipped_cooldown },
    }
  end },
  { "scatter_classifier_errors_total", "counter", "Classifier calls that raised, yielded or returned no verdict.",
    function(m) return m.classifier_errors or 0 end },
  { "scatter_classifier_timeouts_total", "counter",
    "Classifier calls the watchdog interrupted past classifier_timeout (also counted as errors).",
    function(m) return m.classifier_timeouts or 0 end },
}

local function num(v)
  if v ~= v then return "NaN" end
  if v == math.huge then return "+Inf" end
  if v == -math.huge then return "-Inf" end
  if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return string.format("%d", v) end
  return string.format("%.17g", v)
end

-- Prometheus reads label values as UTF-8: a pool named with a latin-1 or
-- binary byte made the whole exposition invalid ("invalid label value").
-- Every byte that is not part of a well-formed UTF-8 sequence becomes
-- U+FFFD.
local function utf8_clean(s)
  if not s:find("[\128-\255]") then return s end
  local out, i, n = {}, 1, #s
  while i <= n do
    local c = s:byte(i)
    local len = c < 0x80 and 1 or (c >= 0xC2 and c <= 0xDF) and 2 or (c >= 0xE0 and c <= 0xEF) and 3
      or (c >= 0xF0 and c <= 0xF4) and 4 or 0
    local ok = len > 0 and i + len - 1 <= n
    for j = i + 1, ok and i + len - 1 or 0 do
      local b = s:byte(j)
      if b < 0x80 or b > 0xBF then ok = false break end
    end
    if ok and len >= 3 then
      -- no overlong forms, surrogates or code points past U+10FFFF
      local b = s:byte(i + 1)
      if (c == 0xE0 and b < 0xA0) or (c == 0xED and b > 0x9F) or (c == 0xF0 and b < 0x90)
        or (c == 0xF4 and b > 0x8F) then ok = false end
    end
    if ok then
      out[#out + 1] = s:sub(i, i + len - 1)
      i = i + len
    else
      out[#out + 1] = "\239\191\189"
      i = i + 1
    end
  end
  return table.concat(out)
end

local function label_value(s)
  return (utf8_clean(s):gsub("[\\\n\"]", { ["\\"] = "\\\\", ["\n"] = "\\n", ['"'] = '\\"' }))
end

-- A pool's label: its name, else "pool<id>"; a name another shown pool
-- has already gets "#2", "#3" (two series with one label set would be
-- invalid).
local function label_of(p, i, taken)
  local base = p.name
  if base == nil or base == "" then base = "pool" .. (p.c and not p.closed and p.c:id() or i) end
  base = utf8_clean(base)
  local name, n = base, 1
  while taken[name] do
    n = n + 1
    name = base .. "#" .. n
  end
  taken[name] = true
  return name
end

-- memo (one per server) keeps each pool's label for as long as it is
-- shown, and what the pools that have left (closed) had counted under
-- each label: a pool opened again under a closed one's name goes on from
-- its counts. Without it the label's counters fell back to 0 (a reset
-- in the middle of a run, and the closed pool's last counts were lost).
local function new_memo() return { live = {}, order = {}, carried = {} } end

local function carry(memo, p)
  local label = memo.live[p]
  memo.live[p] = nil
  local ok, m = pcall(p.metrics, p)
  if not ok or type(m) ~= "table" then return end
  local acc = memo.carried[label] or {}
  memo.carried[label] = acc
  for _, f in ipairs(FAMILIES) do
    if f[2] == "counter" then
      local v = f[4](m)
      if type(v) == "table" then
        for _, s in ipairs(v) do acc[f[1] .. s[1]] = (acc[f[1] .. s[1]] or 0) + (s[2] or 0) end
      else
        acc[f[1]] = (acc[f[1]] or 0) + (v or 0)
      end
    end
  end
end

-- The labels for this scrape's pools, in order; with a memo, stable.
local function labels_for(pools, memo)
  local out = {}
  if not memo then
    local taken = {}
    for i, p in ipairs(pools) do out[i] = label_of(p, i, taken) end
    return out
  end
  local listed = {}
  for _, p in ipairs(pools) do listed[p] = true end
  local keep = {}
  for _, p in ipairs(memo.order) do
    if listed[p] and not p.closed then keep[#keep + 1] = p else carry(memo, p) end
  end
  memo.order = keep
  local taken = {}
  for _, p in ipairs(keep) do taken[memo.live[p]] = true end
  for i, p in ipairs(pools) do
    if not memo.live[p] and not p.closed then
      memo.live[p] = label_of(p, i, taken)
      memo.order[#memo.order + 1] = p
    end
    out[i] = memo.live[p] or label_of(p, i, taken)
  end
  return out
end

-- The text format (version 0.0.4) for a list of pools; memo: see above.
function M.render(pools, memo)
  local ms, names = {}, labels_for(pools, memo)
  local labels, carried = {}, {}
  for i, p in ipairs(pools) do
    ms[i] = p:metrics() or {}
    labels[i] = 'pool="' .. label_value(names[i]) .. '"'
    carried[i] = memo and memo.live[p] and memo.carried[names[i]] or {}
  end
  local out = {}
  for _, f in ipairs(FAMILIES) do
    local name, typ, help, get = f[1], f[2], f[3], f[4]
    out[#out + 1] = "# HELP " .. name .. " " .. help
    out[#out + 1] = "# TYPE " .. name .. " " .. typ
    local counter = typ == "counter"
    for i = 1, #pools do
      local v, c = get(ms[i]), carried[i]
      if type(v) == "table" then
        for _, s in ipairs(v) do
          local x = (s[2] or 0) + (counter and c[name .. s[1]] or 0)
          out[#out + 1] = name .. "{" .. labels[i] .. "," .. s[1] .. "} " .. num(x)
        end
      else
        out[#out + 1] = name .. "{" .. labels[i] .. "} " .. num((v or 0) + (counter and c[name] or 0))
      end
    end
  end
  return table.concat(out, "\n") .. "\n"
end

-- "127.0.0.1:9464", "[::1]:9464", ":9464" or "9464" (loopback) -> host, port
-- or nil, err. A bare port binds loopback only: exposing metrics beyond the
-- machine should be a deliberate "0.0.0.0:9464".
function M.parse_addr(addr)
  if type(addr) ~= "string" then return nil, "address must be a string like \"127.0.0.1:9464\"" end
  local host, port = addr:match("^%[([%x:.]+)%]:(%d+)$")
  if not host then host, port = addr:match("^([%d.]*):(%d+)$") end
  if not host then port = addr:match("^(%d+)$") host = port and "" end
  if not host then return nil, "bad address " .. ("%q"):format(addr) .. " (want HOST:PORT, e.g. 127.0.0.1:9464)" end
  if host == "" then host = "127.0.0.1" end
  port = tonumber(port)
  if port > 65535 then return nil, "bad port in " .. ("%q"):format(addr) end
  return host, port
end

local servers = {} -- "host:port" (parsed, IPv6 bracketed) -> server

local CTYPE = "text/plain; version=0.0.4; charset=utf-8"

local function answer(srv, res)
  local conn, line = res.status, res.body or ""
  local method, target = line:match("^(%u+) (%S+)$")
  local path = target and target:match("^[^?#]*")
  local status, ctype, body = 200, CTYPE
  if path ~= "/metrics" and path ~= "/" then
    status, ctype, body = 404, "text/plain; charset=utf-8", "not found: try /metrics\n"
  elseif method ~= "GET" and method ~= "HEAD" then
    status, ctype, body = 405, "text/plain; charset=utf-8", "method not allowed\n"
  else
    local pools, seen = {}, {}
    for _, prov in ipairs(srv.providers) do
      for _, p in ipairs(prov.list()) do
        if not seen[p] then
          seen[p] = true
          pools[#pools + 1] = p
        end
      end
    end
    local ok, text = pcall(M.render, pools, srv.memo)
    if ok then
      body = text
    else
      status, ctype, body = 500, "text/plain; charset=utf-8", "metrics failed\n"
      log.emit("error", nil, "metrics endpoint: " .. tostring(text))
    end
    if method == "HEAD" then body = "" end
  end
  core.httpd_respond(conn, status, ctype, body)
end

-- Serves /metrics at addr for list() (a function returning the pools to
-- show, in order). Returns a token for M.unserve and the bound port, or
-- nil, err.
function M.serve(addr, list)
  if type(list) ~= "function" then error("metrics.serve: bad argument #2 (function expected)", 2) end
  local host, port = M.parse_addr(addr)
  if not host then return nil, port end
  -- keyed by the address, not its spelling: "9464", ":9464" and
  -- "127.0.0.1:9464" are one socket, and the second bind of it failed
  -- with "address already in use" instead of sharing the server
  local key = (host:find(":", 1, true) and ("[" .. host .. "]") or host) .. ":" .. port
  local srv = servers[key]
  if not srv then
    local id, bport = core.httpd_listen(host, port)
    if not id then return nil, "cannot listen on " .. addr .. ": " .. bport end
    srv = { id = id, addr = key, port = bport, providers = {}, memo = new_memo() }
    servers[key] = srv
    runtime.on_op(id, function(res) answer(srv, res) end)
    log.emit("debug", nil, "metrics at http://" .. host .. ":" .. bport .. "/metrics")
  end
  local token = { srv = srv, list = list }
  srv.providers[#srv.providers + 1] = token
  return token, srv.port
end

function M.unserve(token)
  local srv = token and token.srv
  if not srv then return end
  token.srv = nil
  for i, t in ipairs(srv.providers) do
    if t == token then table.remove(srv.providers, i) break end
  end
  if #srv.providers == 0 then
    servers[srv.addr] = nil
    runtime.on_op(srv.id, nil)
    core.httpd_close(srv.id)
    while core.op_take(srv.id) do end -- requests that arrived meanwhile
  end
end

return M
