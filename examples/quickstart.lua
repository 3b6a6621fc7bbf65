-- The demo crawl: N pages fetched through a pool of unreliable proxies.
--   scatter run examples/quickstart.lua SOURCE BASE_URL [N]
-- SOURCE is a proxy list URL (file://...), BASE_URL serves /page<i>.html.
-- examples/demo.sh starts a local proxy farm and target and runs this.
local scatter = require("scatter")

local source, base, n = ...
n = tonumber(n) or 200
if not source or not base then
  -- a usage line, not a traceback: nothing went wrong inside the script
  io.stderr:write("usage: scatter run examples/quickstart.lua SOURCE BASE_URL [N]\n")
  os.exit(2)
end

-- A page is good only if it is complete and untouched: block pages and
-- tampering proxies fail this check, so another proxy gets the task.
local function classify(resp)
  if resp.status == 404 then return "final" end
  if resp.status ~= 200 then return "proxy_blocked" end
  if not resp.body:find("<!-- end of page -->", 1, true) then return "proxy_blocked" end
  if resp.body:find("captcha", 1, true) then return "proxy_blocked" end
  return "success"
end

local pool = scatter.pool({
  name = "demo",
  sources = { source },
  proxy_timeout = 2,
  rate_limit = { default_interval = 0.1 },
  max_inflight = 64,
  classifier = classify,
  metrics_log_interval = 1,
})

-- a local list is read before scatter.pool{} returns: none in it means
-- every page would only wait out its timeout (the warning says why)
local still_loading = source:match("^%a[%w+.-]*://") and not source:match("^file://")
if not still_loading and pool:metrics().total_proxies == 0 then
  io.stderr:write("quickstart: no proxies in ", source, "\n")
  os.exit(1)
end

local t0 = scatter.now()
local threads = {}
for i = 1, n do
  threads[i] = scatter.spawn(function()
    local resp, err = pool:get(base .. "/page" .. i .. ".html", { timeout = 60 })
    if not resp then return nil, err end
    local want = "page " .. i .. " "
    assert(resp.body:find(want, 1, true), "wrong page delivered for " .. i)
    return resp.attempts
  end)
end

local delivered, attempts, failures = 0, 0, {}
for _, r in ipairs(scatter.wait_all(unpack(threads))) do
  if r[1] and r[2] then
    delivered = delivered + 1
    attempts = attempts + r[2]
  else
    failures[#failures + 1] = tostring(r[3] or r[2])
  end
end

local m = pool:metrics()
print(string.format("delivered %d/%d pages in %.2f s, %.2f attempts per page", delivered, n,
  scatter.now() - t0, attempts / math.max(1, delivered)))
print(string.format("proxies: %d total, %d healthy, %d cooldown, %d dead; attempts cancelled (race losers): %d",
  m.total_proxies, m.healthy_proxies, m.cooldown_proxies, m.dead_proxies, m.attempts_cancelled))
if #failures > 0 then error(#failures .. " pages failed, first: " .. failures[1], 0) end
