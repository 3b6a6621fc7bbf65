-- scatter fetch URL... --proxies SOURCE: one-shot fetch through a racing pool.
local cli = require("scatter.cli")
local getopt = require("scatter.getopt")

local C = {
  summary = "fetch URLs through a racing proxy pool, body to stdout",
  usage = [[
usage: scatter fetch URL... --proxies SOURCE [options]

Fetches each URL (GET, all at once) through a pool made of the proxy lists
(SOURCE: a file, file://, http:// or https:// list; the option repeats),
racing K proxies per URL, and writes the bodies to stdout (or FILE) in the
order of the URLs. The default classifier decides: a 2xx with a body is
delivered, a 403/429/empty answer is the proxy's fault and is retried
through others, a 5xx is retried after a pause.
Exit code 0 when every URL was delivered, 1 when one was not (a timeout,
the target's own 4xx/5xx, no proxy in any SOURCE, a body not written), 2
on a bad command line.

options:
  --proxies SOURCE     a proxy list (required; repeat for several)
  -k N                 proxies raced per URL (default 3)
  -o FILE              write the bodies to FILE instead of stdout
  --timeout S          seconds per URL before giving up (default 30)
  -H, --header 'N: V'  add a request header (repeatable)
  -v                   status, winning proxy, attempts and time on stderr
  --ca-file FILE       CA bundle for https URLs
  --insecure           do not verify TLS certificates
  --expect TEXT        a 2xx body must contain TEXT, else the proxy tampered
                       with it and another one is tried (repeatable: all)
  --classifier FILE    a Lua file returning the classifier (a function of
                       the response, or an object with :classify(resp))
  --max-body BYTES     the largest body taken (default 16777216, 16 MiB;
                       a larger one is an error, too_large)
]],
}

local SPEC = {
  ["--proxies"] = "list", ["-k"] = "value", ["-o"] = "value", ["--timeout"] = "value",
  ["-H"] = "list", ["--header"] = "list", ["-v"] = "flag", ["--ca-file"] = "value",
  ["--insecure"] = "flag", ["--expect"] = "list", ["--classifier"] = "value",
  ["--max-body"] = "value",
}

-- The classifier of --classifier FILE and --expect TEXT (both: the file's
-- verdict counts only for a body that has every TEXT).
local function make_classifier(opts)
  local cls
  if opts.classifier then
    local chunk, err = loadfile(opts.classifier)
    if not chunk then return nil, "--classifier: " .. err end
    local ok, c = pcall(chunk)
    if not ok then return nil, "--classifier " .. opts.classifier .. ": " .. tostring(c) end
    -- examples/classifiers/*.lua return these constructors: taken as the
    -- classifier, every answer would be "no verdict" until the timeout
    for name, ctor in pairs(require("scatter.classifiers")) do
      if c == ctor then
        return nil, ("--classifier %s: the file returns the constructor scatter.classifiers.%s, not a classifier;"
          .. " a file ending in `return require(\"scatter.classifiers\").%s{ ... }` is one"):format(
          opts.classifier, name, name)
      end
    end
    local okc, checked = pcall(require("scatter.classifier").check, c, "--classifier " .. opts.classifier)
    if not okc or c == nil then
      return nil, "--classifier " .. opts.classifier
        .. ": the file must return a function or an object with :classify(resp)"
    end
    cls = checked
  end
  local expect = opts.expect
  if not expect then return cls end
  local base = cls or require("scatter.classifier").default
  return function(resp)
    if resp.status >= 200 and resp.status < 300 then
      for _, text in ipairs(expect) do
        if not resp.body:find(text, 1, true) then return "proxy_blocked" end
      end
    end
    return base(resp)
  end
end

function C.run(args)
  local opts, pos = getopt.parse(args, SPEC)
  if not opts then return cli.usage_error("fetch: " .. pos, C) end
  if opts.help then
    io.stdout:write(C.usage)
    return 0
  end
  if #pos == 0 then return cli.usage_error("fetch: no URL given", C) end
  if not opts.proxies then return cli.usage_error("fetch: --proxies is required", C) end
  local pool_mod = require("scatter.pool")
  for _, u in ipairs(pos) do
    local _, uerr = pool_mod.parse_url(u)
    if uerr then return cli.usage_error("fetch: " .. uerr, C) end
  end
  local k, kerr = getopt.number(opts, "k", 3, "an integer from 1 to 64", 1, true)
  if not k or k > 64 then return cli.usage_error("fetch: " .. (kerr or "-k must be an integer from 1 to 64"), C) end
  -- the requests refuse a longer one, but only once the lists are loaded
  local max = require("scatter.config").MAX_SECONDS
  local twhat = "a number of seconds > 0, at most " .. max
  local timeout, terr = getopt.number(opts, "timeout", 30, twhat, 0.001)
  if timeout and timeout > max then timeout, terr = nil, "--timeout must be " .. twhat .. ", got " .. ("%q"):format(opts.timeout) end
  if not timeout then return cli.usage_error("fetch: " .. terr, C) end
  -- without it a page past the pool's 16 MiB could not be fetched at all
  local max_body, merr = getopt.number(opts, "max-body", nil,
    ("a whole number of bytes from 0 to %.0f"):format(pool_mod.MAX_BODY), 0, true)
  if merr or (max_body and max_body > pool_mod.MAX_BODY) then
    return cli.usage_error("fetch: " .. (merr or ("--max-body must be at most %.0f"):format(pool_mod.MAX_BODY)), C)
  end
  local headers = {}
  for _, list in ipairs({ opts.H or {}, opts.header or {} }) do
    for _, h in ipairs(list) do
      local name, value = h:match("^%s*([^:%s]+)%s*:%s*(.-)%s*$")
      if not name then return cli.usage_error("fetch: bad header " .. ("%q"):format(h) .. " (want 'Name: value')", C) end
      headers[name:lower()] = value
    end
  end
  -- what every request would refuse is a bad command line, found now
  -- rather than once the lists are loaded (a header holding a CR...)
  local req = { timeout = timeout, headers = headers, insecure = opts.insecure, max_body = max_body }
  for _, u in ipairs(pos) do
    local okr, rerr = pool_mod.check_request(req, u)
    if not okr then return cli.usage_error("fetch: " .. rerr:gsub("^invalid_request: ", ""), C) end
  end
  local classify, cerr = make_classifier(opts)
  if cerr then return cli.usage_error("fetch: " .. cerr, C) end
  local srcs = {}
  for i, s in ipairs(opts.proxies) do
    srcs[i] = s:match("^%a[%w+.-]*://") and s or ("file://" .. s)
  end

  local scatter = require("scatter")
  local log = require("scatter.log")
  local sources = require("scatter.sources")
  local results, fatal = {}, nil
  local ok, err = pcall(scatter.run, function()
    -- every list is loaded before the pool counts its proxies (an http
    -- list arrives in the background); the pool then reuses what came
    local why, got = {}, 0
    for i, src in ipairs(srcs) do
      local list, lerr = sources.load(src, { max_age = 600 })
      if list then got = got + #list.keys else why[#why + 1] = opts.proxies[i] .. ": " .. lerr end
    end
    if got == 0 then
      fatal = "no proxies: " .. (#why > 0 and table.concat(why, "; ") or table.concat(opts.proxies, ", ") .. " listed none")
      return
    end
    local pool = scatter.pool({
      sources = srcs, max_concurrent_per_request = k, metrics_log_interval = 0,
      proxy_timeout = math.min(8, timeout), ca_file = opts["ca-file"], classifier = classify,
    })
    local ths = {}
    for i, u in ipairs(pos) do
      ths[i] = scatter.spawn(function()
        local resp, rerr = pool:get(u, req)
        results[i] = { resp = resp, err = rerr }
      end)
    end
    scatter.wait_all(unpack(ths))
    pool:close()
  end)
  if not ok or fatal then
    io.stderr:write("scatter fetch: ", log.redact(fatal or tostring(err)), "\n")
    return 1
  end
  local out, rc = nil, 0
  if opts.o then
    local ferr
    out, ferr = io.open(opts.o, "wb")
    if not out then
      io.stderr:write("scatter fetch: -o: ", tostring(ferr), "\n")
      return 1
    end
  end
  for i, u in ipairs(pos) do
    local r = results[i]
    if r and r.resp and r.resp.status >= 400 then
      -- a final error page (proxies agreeing on a 404): not a body
      rc = 1
      io.stderr:write("scatter fetch: ", u, ": HTTP ", r.resp.status, " (the target's answer, through ",
        r.resp.attempts, " attempt", r.resp.attempts == 1 and "" or "s", ")\n")
    elseif r and r.resp then
      local resp = r.resp
      if opts.v then
        io.stderr:write(string.format("%s: %d via %s (%d attempt%s, %.2f s, %d bytes)\n", u, resp.status,
          resp.proxy, resp.attempts, resp.attempts == 1 and "" or "s", resp.elapsed, #resp.body))
      end
      local wok, werr = (out or io.stdout):write(resp.body)
      -- a body that did not reach -o is not delivered (stdout: scatter.cli)
      if not wok and out then
        io.stderr:write("scatter fetch: -o: ", opts.o, ": ", tostring(werr), "\n")
        out:close()
        return 1
      end
    else
      rc = 1
      io.stderr:write("scatter fetch: ", u, ": ", log.redact(tostring(r and r.err or "not fetched")), "\n")
    end
  end
  if out then
    -- the last of the body is written by the close: it can fail too
    local cok, clerr = out:close()
    if not cok then
      io.stderr:write("scatter fetch: -o: ", opts.o, ": ", tostring(clerr), "\n")
      return 1
    end
  end
  return rc
end

return C
