-- scatter check SOURCE... --url URL: probe every proxy of the lists once.
local cli = require("scatter.cli")
local getopt = require("scatter.getopt")

local C = {
  summary = "test every proxy of proxy lists against a URL",
  usage = [[
usage: scatter check SOURCE... --url URL [options]
       scatter check SOURCE... --anonymity --judge URL [options]

Sends one GET for URL through each proxy of the lists (SOURCE: a file,
file://, http:// or https:// list, or - for stdin), prints a table
(proxy, ok/fail, latency, reason) sorted fastest first, then a summary line.
A proxy is ok when the answer is a 2xx with a body (containing TEXT with
--expect). Credentials are masked in the output, never in --out.
Exit code 0 when at least one proxy works, 1 when none does, 2 on a bad
command line.

options:
  --url URL            the page to fetch through each proxy (required)
  --concurrency N      probes in flight at once (default 64)
  --timeout S          seconds per probe (default 8)
  --expect TEXT        the body must contain TEXT (catches tampering proxies)
  --out FILE           write the working proxies to FILE, fastest first
  --json               one JSON document instead of the table
  --local-dns          resolve URL's host here (socks5), not at the proxy
  --ca-file FILE       CA bundle for https URLs
  --proxy-ca-file FILE CA bundle for https:// proxies
  --insecure           do not verify TLS certificates
  --detect             find the protocol of scheme-less proxies (SOCKS5,
                       SOCKS4, HTTP tried at once); --out then writes
                       scheme-qualified lines (socks5://, socks4://, ...)
  --anonymity          classify HTTP proxies transparent / anonymous / elite
                       against --judge (SOCKS ones are elite: a tunnel);
                       transparent ones fail unless --allow-transparent
  --judge URL          a page that echoes the request headers it got
                       (needed by --anonymity; it replaces --url)
  --allow-transparent  with --anonymity: transparent proxies may pass
  --quiet              no progress line on a terminal
]],
}

local SPEC = {
  ["--url"] = "value", ["--concurrency"] = "value", ["--timeout"] = "value",
  ["--expect"] = "value", ["--out"] = "value", ["--json"] = "flag",
  ["--local-dns"] = "flag", ["--ca-file"] = "value", ["--insecure"] = "flag",
  ["--quiet"] = "flag", ["--detect"] = "flag", ["--anonymity"] = "flag", ["--judge"] = "value",
  ["--allow-transparent"] = "flag", ["--proxy-ca-file"] = "value",
}

-- The proxies of every SOURCE (a file, a file:// or http(s):// list, or -
-- for stdin), duplicates merged, in order; or nil, err.
local function load_proxies(srcs, log)
  local sources = require("scatter.sources")
  local keys, seen = {}, {}
  for _, src in ipairs(srcs) do
    local got
    if src == "-" then
      local bad, first
      got, bad, first = sources.parse(io.stdin:read("*a") or "")
      if bad > 0 then
        log.warn(string.format("stdin: skipped %d bad line(s), first: %q", bad, first:sub(1, 200)))
      end
    else
      local list, err = sources.load(src:match("^%a[%w+.-]*://") and src or ("file://" .. src))
      if not list then return nil, err end
      got = list.keys
    end
    for _, key in ipairs(got) do
      if not seen[key] then
        seen[key] = true
        keys[#keys + 1] = key
      end
    end
  end
  return keys
end

-- "socks_error: Couldn't ... [reply_connection_refused]: ..." -> the kind,
-- with the SOCKS reply when there is one.
local function short_reason(err)
  local kind = err:match("^([%w_]+):") or err
  local px = err:match("%[([%w_]+)%]")
  if px then kind = kind .. " [" .. px .. "]" end
  return kind
end

local function judge(res, expect)
  if res.err then return false, short_reason(res.err), res.err end
  local s, body = res.status, res.body or ""
  if s < 200 or s > 299 then return false, "HTTP " .. s end
  if #body == 0 then return false, "empty body" end
  if expect and not body:find(expect, 1, true) then return false, "unexpected body" end
  return true, "HTTP " .. s
end

local ffi = require("ffi")
-- pcall: another module in the process may have declared them already
pcall(ffi.cdef, "int chmod(const char *path, unsigned int mode);")
pcall(ffi.cdef, "int getpid(void);")

local function write_out(path, keys)
  -- a temp name of this process only, created afresh ("x": O_EXCL): a
  -- shared PATH.tmp was truncated under a second check writing the same
  -- --out, and a user's own PATH.tmp was renamed over PATH
  local tmp = path .. "." .. ffi.C.getpid() .. ".tmp"
  local f, err = io.open(tmp, "wx")
  if not f and os.remove(tmp) then f, err = io.open(tmp, "wx") end -- a dead process's, same pid
  if not f then return nil, err end
  local secret, wok, werr = false, true, nil
  for _, k in ipairs(keys) do
    if wok then wok, werr = f:write(k, "\n") end
    if k:find("@", 1, true) then secret = true end
  end
  -- a list cut short (a full disk) must not replace the last good one
  local cok, cerr = f:close()
  if not wok or not cok then
    os.remove(tmp)
    return nil, tmp .. ": " .. tostring(werr or cerr)
  end
  if secret then
    -- the list holds credentials: owner-only, like a state file
    ffi.C.chmod(tmp, 384) -- 0600
  end
  local ok, rerr = os.rename(tmp, path)
  if not ok then
    os.remove(tmp)
    return nil, rerr
  end
  return true
end

local function table_text(results, summary)
  local w = 5
  for _, r in ipairs(results) do w = math.max(w, #r.proxy) end
  local out = { string.format("%-" .. w .. "s  %-6s %8s  %s", "PROXY", "RESULT", "LATENCY", "REASON") }
  for _, r in ipairs(results) do
    out[#out + 1] = string.format("%-" .. w .. "s  %-6s %5d ms  %s", r.proxy, r.ok and "ok" or "fail",
      r.latency_ms, r.reason)
  end
  out[#out + 1] = ""
  out[#out + 1] = summary
  out[#out + 1] = ""
  return table.concat(out, "\n")
end

function C.run(args)
  local opts, pos = getopt.parse(args, SPEC)
  if not opts then return cli.usage_error("check: " .. pos, C) end
  if opts.help then
    io.stdout:write(C.usage)
    return 0
  end
  if #pos == 0 then return cli.usage_error("check: no SOURCE given", C) end
  if opts.anonymity and not opts.judge then return cli.usage_error("check: --anonymity needs --judge URL", C) end
  if opts.judge and not opts.anonymity then return cli.usage_error("check: --judge is for --anonymity", C) end
  if opts.judge and opts.url then return cli.usage_error("check: give --url or --judge, not both", C) end
  opts.url = opts.url or opts.judge
  if not opts.url then return cli.usage_error("check: --url is required", C) end
  local pool = require("scatter.pool")
  local _, uerr = pool.parse_url(opts.url)
  if uerr then return cli.usage_error("check: --url: " .. uerr, C) end
  local conc, cerr = getopt.number(opts, "concurrency", 64, "an integer >= 1", 1, true)
  if not conc then return cli.usage_error("check: " .. cerr, C) end
  local timeout, terr = getopt.number(opts, "timeout", 8, "a number of seconds > 0", 0.001)
  if not timeout then return cli.usage_error("check: " .. terr, C) end

  local scatter = require("scatter")
  local core = require("scatter.core")
  local log = require("scatter.log")
  local progress = require("scatter.progress")
  local detect = require("scatter.detect")

  local results, failed_load = {}, nil
  local done, nok = 0, 0
  local t_start = core.now()
  local ok, rerr = pcall(scatter.run, function()
    local keys, lerr = load_proxies(pos, log)
    if not keys then
      failed_load = lerr
      return
    end
    local display
    if not opts.quiet and progress.isatty(2) then
      display = progress.start({
        render = function()
          return string.format("checked %d/%d | %d ok, %d failed", done, #keys, nok, done - nok)
        end,
      })
    end
    local next_i = 1
    local function worker()
      while next_i <= #keys do
        local i = next_i
        next_i = i + 1
        local key = keys[i]
        local pargs = {
          proxy = key, url = opts.url, timeout = timeout, remote_dns = not opts["local-dns"],
          ca_file = opts["ca-file"], insecure = opts.insecure or false,
          proxy_ca_file = opts["proxy-ca-file"],
        }
        local res, secs, tried
        if opts.detect and not key:find("://", 1, true) then
          local found
          found, res, secs, tried = detect.detect(key, pargs, function(r) return (judge(r, opts.expect)) end)
          key = found or key
        else
          res, secs = detect.probe(pargs)
        end
        local good, reason, detail = judge(res, opts.expect)
        if tried then reason = reason .. " (no protocol answered: " .. tried .. ")" end
        local anon
        if good and opts.anonymity then
          local via
          if key:match("^https?://") then anon, via = detect.anonymity(res.body or "") else anon = "elite" end
          reason = reason .. ", " .. anon .. (via and (" (" .. via .. ")") or "")
          if anon == "transparent" and not opts["allow-transparent"] then good = false end
        end
        local scheme = key:match("^(%a[%w]*)://") or "socks5"
        results[#results + 1] = {
          index = i, key = key, proxy = core.redact(key), ok = good, reason = reason,
          error = detail and log.redact(detail) or nil, status = res.status ~= 0 and res.status or nil,
          latency_ms = math.floor(secs * 1000 + 0.5), protocol = scheme, anonymity = anon,
        }
        done = done + 1
        if good then nok = nok + 1 end
      end
    end
    local ths = {}
    for j = 1, math.min(conc, #keys) do ths[j] = scatter.spawn(worker) end
    if #ths > 0 then scatter.wait_all(unpack(ths)) end
    if display then display:stop() end
  end)
  if not ok then
    io.stderr:write("scatter check: ", log.redact(tostring(rerr)), "\n")
    return 1
  end
  if failed_load then
    io.stderr:write("scatter check: ", log.redact(failed_load), "\n")
    return 1
  end
  local elapsed = core.now() - t_start

  table.sort(results, function(a, b)
    if a.ok ~= b.ok then return a.ok end
    if a.ok and a.latency_ms ~= b.latency_ms then return a.latency_ms < b.latency_ms end
    return a.index < b.index
  end)
  local reasons, order = {}, {}
  for _, r in ipairs(results) do
    if not r.ok then
      if not reasons[r.reason] then order[#order + 1] = r.reason end
      reasons[r.reason] = (reasons[r.reason] or 0) + 1
    end
  end
  table.sort(order, function(a, b)
    if reasons[a] ~= reasons[b] then return reasons[a] > reasons[b] end
    return a < b
  end)
  local why = {}
  for _, r in ipairs(order) do why[#why + 1] = reasons[r] .. " " .. r end
  local summary = string.format("%d proxies checked against %s: %d ok, %d failed%s in %.1f s",
    #results, opts.url, nok, #results - nok, #why > 0 and (" (" .. table.concat(why, ", ") .. ")") or "", elapsed)

  if opts.out then
    local good = {}
    for _, r in ipairs(results) do
      -- --detect writes what it found, socks5 included
      if r.ok then good[#good + 1] = (opts.detect and not r.key:find("://", 1, true)) and ("socks5://" .. r.key) or r.key end
    end
    local wok, werr = write_out(opts.out, good)
    if not wok then
      io.stderr:write("scatter check: --out: ", tostring(werr), "\n")
      return 1
    end
  end

  if opts.json then
    local cjson = require("cjson")
    local items = {}
    for i, r in ipairs(results) do
      items[i] = cjson.encode({
        proxy = r.proxy, ok = r.ok, latency_ms = r.latency_ms, reason = r.reason,
        status = r.status, error = r.error, protocol = r.protocol, anonymity = r.anonymity,
      })
    end
    local head = cjson.encode({
      url = opts.url, checked = #results, ok = nok, failed = #results - nok,
      elapsed = math.floor(elapsed * 1000 + 0.5) / 1000, reasons = reasons,
    })
    -- spliced by hand: this cjson encodes an empty table as {}, not []
    io.stdout:write(head:sub(1, -2), ',"results":[', table.concat(items, ","), "]}\n")
  else
    io.stdout:write(table_text(results, summary))
  end
  return nok > 0 and 0 or 1
end

return C
