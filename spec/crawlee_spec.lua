-- Crawlee 3 (npm; bench/peers.sh installs it) through `scatter serve`: its
-- own HTTP proxy support, no bridge, over farm proxies some of which
-- block. Skipped, with the reason, when node or the package is missing.
package.path = "spec/?.lua;" .. package.path
local env = require("support.env")
local cjson = require("cjson")

local function have_crawlee()
  if not os.execute("command -v node >/dev/null 2>&1") then return false, "node is not installed" end
  local f = io.open("bench/peers/node_modules/crawlee/package.json")
  if not f then return false, "Crawlee is not installed (run bash bench/peers.sh)" end
  f:close()
  return true
end

local ok_crawlee, why = have_crawlee()

describe("Crawlee through scatter serve", function()
  teardown(function() env.cleanup() end)

  if not ok_crawlee then
    pending("skipped: " .. why)
    return
  end

  it("delivers every page, blocked and tampering proxies notwithstanding", function()
    local marker = "canary-data-ok"
    local page = string.rep("<p>lorem ipsum</p>\n", 100) .. marker .. "\n"
    local ng = env.nginx({ files = { ["page.html"] = page } })
    local farm = env.farm({ "good count=3", "block count=2", "tamper count=1", "refuse count=2" })
    local plist = {}
    for i, a in ipairs(farm.proxies) do plist[i] = ("%q"):format(a) end
    local cfgf = env.script("crawlee_pool.lua", "return { proxies = {" .. table.concat(plist, ",")
      .. "}, rate_limit = { default_interval = 0 }, connect_ports = { " .. ng.port .. ", " .. ng.tls_port .. " },"
      .. " classifier = function(r) if r.status == 200 then return r.body:find('" .. marker
      .. "', 1, true) and 'success' or 'proxy_blocked' end return 'proxy_blocked' end }")
    local p = env.spawn({ env.build_dir() .. "/scatter", "serve", "--listen", "127.0.0.1:0",
                          "--config", cfgf, "--quiet" }, { name = "serve" })
    local port = env.wait_until(function()
      return tonumber((env.read_file(p.log) or ""):match("listening on http://127%.0%.0%.1:(%d+)"))
    end, "serve to listen", p)
    local urls = {}
    for i = 1, 40 do urls[i] = ng.url("/page.html?i=" .. i) end
    local cfg = env.script("crawlee.json", cjson.encode({ urls = urls, proxies = farm.proxies,
      concurrency = 10, timeout = 30, marker = marker, serve = "http://127.0.0.1:" .. port }))
    local h = io.popen("node bench/crawlee_run.cjs " .. cfg .. " 2>&1")
    local out = h:read("*a")
    h:close()
    local line = out:match("({\"ok\".-})%s*$")
    assert(line, "crawlee failed:\n" .. out:sub(-2000))
    local r = cjson.decode(line)
    assert.equals(40, r.ok)
    assert.equals(0, r.failed)
    -- every page came through serve: one answer a page, no retry needed
    assert.equals(40, r.attempts)
    p:stop()
  end)
end)
