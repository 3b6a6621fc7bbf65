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

local function label_value(s)
  return (s:gsub("[\\\n\"]", { ["\\"] = "\\\\", ["\n"] = "\\n", ['"'] = '\\"' }))
end

-- Unique labels: the pool's name, else "pool<id>"; a repeated name gets
-- "#2", "#3" (two series with one label set would be invalid).
local function labels_for(pools)
  local seen, out = {}, {}
  for i, p in ipairs(pools) do
    local base = p.name or ("pool" .. (p.c and not p.closed and p.c:id() or i))
    local name, n = base, 1
    while seen[name] do
      n = n + 1
      name = base .. "#" .. n
    end
    seen[name] = true
    out[i] = 'pool="' .. label_value(name) .. '"'
  end
  return out
end

-- The text format (version 0.0.4) for a list of pools.
function M.render(pools)
  local ms, labels = {}, labels_for(pools)
  for i, p in ipairs(pools) do ms[i] = p:metrics() or {} end
  local out = {}
  for _, f in ipairs(FAMILIES) do
    local name, typ, help, get = f[1], f[2], f[3], f[4]
    out[#out + 1] = "# HELP " .. name .. " " .. help
    out[#out + 1] = "# TYPE " .. name .. " " .. typ
    for i = 1, #pools do
      local v = get(ms[i])
      if type(v) == "table" then
        for _, s in ipairs(v) do
          out[#out + 1] = name .. "{" .. labels[i] .. "," .. s[1] .. "} " .. num(s[2] or 0)
        end
      else
        out[#out + 1] = name .. "{" .. labels[i] .. "} " .. num(v or 0)
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
    local ok, text = pcall(M.render, pools)
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
    srv = { id = id, addr = key, port = bport, providers = {} }
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
