-- scatter stats STATE.json: the proxies' health per pool and host, from a
-- state file (DESIGN.md section 5; the format is lua/scatter/state.lua's).
local cli = require("scatter.cli")
local getopt = require("scatter.getopt")

local C = {
  summary = "show per-host proxy health from a state file",
  usage = [[
usage: scatter stats STATE.json [options]

Reads a state file (a pool's state_file) and shows, for each pool and
target host, its proxies by health: healthy (best success rate first, then
fastest), failing (tried there, never a success yet), cooling down, dead
(proxies never tried on a host are only counted). Columns: success rate and samples over the
health window, p50/p95 latency of successful attempts, consecutive
failures, cooldown left and last success, both as of the snapshot.
Credentials are masked. Exit code 0, 1 when the file cannot be read, 2 on
a bad command line.

options:
  --pool NAME          only this pool (a router's pools are named by host)
  --host HOST          only this target host
  --top N              at most N proxies per host (default: all)
  --json               one JSON document instead of the tables
]],
}

local SPEC = { ["--pool"] = "value", ["--host"] = "value", ["--top"] = "value", ["--json"] = "flag" }

local RANK = { healthy = 1, failing = 2, cooldown = 3, dead = 4 }

-- Rows by the file's own field names, so a reordered layout still reads.
local function accessor(fields, want)
  local idx = {}
  for i, f in ipairs(type(fields) == "table" and fields or {}) do idx[f] = i end
  for _, f in ipairs(want) do
    if not idx[f] then return nil, "the file's rows have no field " .. ("%q"):format(f) end
  end
  return function(row, f) return row[idx[f]] end
end

-- NaN and the infinities are no field's value (the decoder below refuses
-- them; a row could still hold 1e308): treated as missing.
local function num(v) return type(v) == "number" and v == v and v > -math.huge and v < math.huge and v or nil end

-- Unix seconds os.date can show (a year from 1970 to 5138).
local function is_time(v) return type(v) == "number" and v >= 0 and v <= 1e11 end

-- Returns { saved_at =, pools = { {name, hosts = { {host, proxies, counts} } } } }
-- or nil, err.
local function analyse(doc, opts, redact)
  local state = require("scatter.state")
  if type(doc) ~= "table" or doc.format ~= state.FORMAT then return nil, "not a scatter state file" end
  if not state.READS[doc.version] then
    local v = doc.version
    return nil, "state file version " .. (type(v) == "string" and ("%q"):format(v) or tostring(v))
      .. ", this scatter reads versions 1 to " .. state.VERSION
  end
  -- every time shown is relative to it, and the header is its date
  if doc.saved_at ~= nil and not is_time(doc.saved_at) then return nil, "saved_at is not a time" end
  local P, perr = accessor(doc.proxy_fields, { "key", "dead_since" })
  if not P then return nil, perr end
  local R, rerr = accessor(doc.pair_fields, {
    "proxy", "outcomes", "successes", "consecutive_fails", "last_success", "cooldown_until",
    "latency_p50", "latency_p95",
  })
  if not R then return nil, rerr end
  if type(doc.pools) ~= "table" then return nil, "pools is not an object" end
  local saved = num(doc.saved_at) or os.time()
  local out = { saved_at = saved, pools = {} }
  local names = {}
  for name in pairs(doc.pools) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    if not opts.pool or opts.pool == name then
      local sec = doc.pools[name]
      if type(sec) ~= "table" or type(sec.proxies) ~= "table" or type(sec.hosts) ~= "table" then
        return nil, "pools[" .. name .. "] is not a pool section"
      end
      local pool = { name = name, hosts = {} }
      local hosts = {}
      for h in pairs(sec.hosts) do hosts[#hosts + 1] = h end
      table.sort(hosts)
      for _, h in ipairs(hosts) do
        if not opts.host or opts.host:lower() == h then
          local list, counts = {}, { healthy = 0, failing = 0, cooldown = 0, dead = 0 }
          if type(sec.hosts[h]) ~= "table" then
            return nil, "pools[" .. name .. "].hosts[" .. h .. "] is not a list of rows"
          end
          for _, row in ipairs(sec.hosts[h]) do
            local prow = type(row) == "table" and sec.proxies[R(row, "proxy")]
            if type(prow) ~= "table" or type(P(prow, "key")) ~= "string" then
              return nil, "pools[" .. name .. "].hosts[" .. h .. "] has a bad row"
            end
            local outcomes, succ = num(R(row, "outcomes")) or 0, num(R(row, "successes")) or 0
            local cool_until = num(R(row, "cooldown_until")) or 0
            local dead_since = num(P(prow, "dead_since")) or -1
            -- healthy means it has succeeded here; tried without a success: failing
            local st = dead_since >= 0 and "dead" or (cool_until > saved and "cooldown")
              or (succ > 0 and "healthy") or "failing"
            counts[st] = counts[st] + 1
            local function ms(v)
              v = num(v)
              return v and v >= 0 and v < 1e6 and math.floor(v * 10000 + 0.5) / 10 or nil
            end
            local last = num(R(row, "last_success")) or -1
            list[#list + 1] = {
              proxy = redact(P(prow, "key")), state = st,
              success_rate = outcomes > 0 and succ / outcomes or nil,
              outcomes = outcomes, successes = succ,
              p50_ms = ms(R(row, "latency_p50")), p95_ms = ms(R(row, "latency_p95")),
              consecutive_fails = num(R(row, "consecutive_fails")) or 0,
              cooldown_left = st == "cooldown" and cool_until - saved or nil,
              last_success_ago = last >= 0 and math.floor(math.max(0, saved - last) * 10 + 0.5) / 10 or nil,
            }
          end
          table.sort(list, function(a, b)
            if a.state ~= b.state then return RANK[a.state] < RANK[b.state] end
            local ra, rb = a.success_rate or -1, b.success_rate or -1
            if ra ~= rb then return ra > rb end
            local la, lb = a.p50_ms or math.huge, b.p50_ms or math.huge
            if la ~= lb then return la < lb end
            return a.proxy < b.proxy
          end)
          if opts.top then
            for i = #list, opts.top + 1, -1 do list[i] = nil end
          end
          counts.untried = math.max(0, #sec.proxies - #sec.hosts[h])
          pool.hosts[#pool.hosts + 1] = { host = h, proxies = list, counts = counts }
        end
      end
      out.pools[#out.pools + 1] = pool
    end
  end
  return out
end

local function ago(s)
  if not s then return "never" end
  if s < 120 then return string.format("%ds ago", s) end
  if s < 7200 then return string.format("%dm ago", s / 60) end
  if s < 172800 then return string.format("%dh ago", s / 3600) end
  return string.format("%dd ago", s / 86400)
end

local function ms_text(v)
  if not v then return "-" end
  return v < 10 and string.format("%.1f ms", v) or string.format("%d ms", v)
end

local function render_text(a)
  local out = { "snapshot saved " .. os.date("%Y-%m-%d %H:%M:%S", math.floor(a.saved_at)) }
  for _, pool in ipairs(a.pools) do
    if #pool.hosts == 0 then
      out[#out + 1] = ""
      out[#out + 1] = string.format("[%s] no host has been tried yet", pool.name)
    end
    for _, h in ipairs(pool.hosts) do
      local c = h.counts
      out[#out + 1] = ""
      out[#out + 1] = string.format("[%s] %s: %d healthy, %d failing, %d cooldown, %d dead, %d untested", pool.name,
        h.host, c.healthy, c.failing, c.cooldown, c.dead, c.untried)
      local w = 5
      for _, p in ipairs(h.proxies) do w = math.max(w, #p.proxy) end
      local fmt = "%-" .. w .. "s  %-8s %7s %7s %8s %8s %5s %8s  %s"
      out[#out + 1] = string.format(fmt, "PROXY", "STATE", "SUCCESS", "SAMPLES", "P50", "P95", "FAILS",
        "COOLDOWN", "LAST OK")
      for _, p in ipairs(h.proxies) do
        out[#out + 1] = string.format(fmt, p.proxy, p.state,
          p.success_rate and string.format("%d%%", math.floor(p.success_rate * 100 + 0.5)) or "-",
          tostring(p.outcomes), ms_text(p.p50_ms), ms_text(p.p95_ms),
          tostring(p.consecutive_fails), p.cooldown_left and string.format("%ds", math.ceil(p.cooldown_left)) or "-",
          ago(p.last_success_ago))
      end
    end
  end
  return table.concat(out, "\n") .. "\n"
end

-- cjson writes an empty table as {}: lists are encoded here so that an
-- empty one is still [].
local function render_json(a)
  local cjson = require("cjson")
  local function list(items, f)
    local parts = {}
    for i, x in ipairs(items) do parts[i] = f(x) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  local function obj(t, extra)
    local s = cjson.encode(t)
    if extra then s = s:sub(1, -2) .. (s == "{}" and "" or ",") .. extra .. "}" end
    return s
  end
  return obj({ saved_at = a.saved_at }, '"pools":' .. list(a.pools, function(p)
    return obj({ name = p.name }, '"hosts":' .. list(p.hosts, function(h)
      return obj({ host = h.host, healthy = h.counts.healthy, failing = h.counts.failing,
        cooldown = h.counts.cooldown, dead = h.counts.dead,
        -- untested is the name of every other report; untried is kept
        untested = h.counts.untried, untried = h.counts.untried },
        '"proxies":' .. list(h.proxies, function(x) return obj(x) end))
    end))
  end)) .. "\n"
end

function C.run(args)
  local opts, pos = getopt.parse(args, SPEC)
  if not opts then return cli.usage_error("stats: " .. pos, C) end
  if opts.help then
    io.stdout:write(C.usage)
    return 0
  end
  if #pos ~= 1 then return cli.usage_error("stats: give one STATE.json", C) end
  if opts.top then
    local top, terr = getopt.number(opts, "top", nil, "an integer >= 1", 1, true)
    if not top then return cli.usage_error("stats: " .. terr, C) end
    opts.top = top
  end
  local path = pos[1]
  -- not io.open: it hung on a FIFO and read /dev/zero until memory ran out
  local state = require("scatter.state")
  local data, err = require("scatter.core").read_file(path, state.MAX_BYTES)
  if not data then
    io.stderr:write("scatter stats: ", path, ": ", tostring(err), "\n")
    return 1
  end
  -- a snapshot never holds NaN or Infinity (cjson writes neither)
  local jsafe = require("cjson.safe").new()
  jsafe.decode_invalid_numbers(false)
  local doc, derr = jsafe.decode(data)
  if doc == nil then
    io.stderr:write("scatter stats: ", path, ": not JSON (", tostring(derr), "; truncated?)\n")
    return 1
  end
  local a, aerr = analyse(doc, opts, require("scatter.core").redact)
  if not a then
    io.stderr:write("scatter stats: ", path, ": ", aerr, "\n")
    return 1
  end
  io.stdout:write(opts.json and render_json(a) or render_text(a))
  return 0
end

return C
