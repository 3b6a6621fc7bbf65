-- serve: what `scatter serve` adds, against the same farm `good` proxies.
--   latency   plain http on healthy proxies, one request at a time: p50 of
--             pool:get in this process vs p50 of a kept-alive HTTP/1.1
--             client (luasocket) through scatter serve; the difference is
--             serve's added latency (target: p50 <= 1 ms)
--   relay     a 100 MiB body through a CONNECT tunnel of scatter serve
--             (curl -p -x) vs curl through the same SOCKS5 proxy directly
--             (target: >= 0.8x); then the same through an https:// farm
--             proxy (serve relays through curl_easy_send/recv) vs curl
--             with that proxy directly
--
--   luajit bench/serve.lua [requests] [runs]
local B = dofile("bench/lib.lua")
local env = B.env
local scatter = require("scatter")
local socket = require("socket")

local N = tonumber(arg[1]) or 2000
local RUNS = tonumber(arg[2]) or 2
B.banner(string.format("serve: %d sequential requests, 100 MiB relay, %d run(s) each", N, RUNS))

local web = env.nginx()
local farm = env.farm({ "good count=4" })
local tfarm = env.farm({ "good proto=https count=2" })
local big = web.root .. "/big100.bin"
assert(B.sh("head -c 104857600 /dev/urandom > " .. big))

local function pool_cfg()
  return { proxies = farm.proxies, rate_limit = { default_interval = 0 }, metrics_log_interval = 0 }
end

local function pool_latencies()
  local pool = scatter.pool(pool_cfg())
  local lat = {}
  scatter.run(function()
    for i = 1, N + 100 do
      local t0 = B.now()
      local r = assert(pool:get(web:url("/small.txt?i=" .. i)))
      assert(r.status == 200)
      if i > 100 then lat[#lat + 1] = B.now() - t0 end -- after a warm-up
    end
  end)
  pool:close()
  return lat
end

local function start_serve(proxies, name)
  local plist = {}
  for i, a in ipairs(proxies) do plist[i] = ("%q"):format(a) end
  local cfgf = env.script(name .. ".lua", "return { proxies = {" .. table.concat(plist, ",")
    .. "}, rate_limit = { default_interval = 0 }, metrics_log_interval = 0, connect_ports = { "
    .. web.port .. " }, proxy_ca_file = " .. ("%q"):format(web.ca) .. " }")
  local p = env.spawn({ env.build_dir() .. "/scatter", "serve", "--listen", "127.0.0.1:0",
                        "--config", cfgf, "--quiet" }, { name = "serve" })
  local port = env.wait_until(function()
    return tonumber((env.read_file(p.log) or ""):match("listening on http://127%.0%.0%.1:(%d+)"))
  end, "scatter serve", p)
  return p, port
end

-- One kept-alive connection, one request at a time.
local function serve_latencies(port)
  local c = assert(socket.connect("127.0.0.1", port))
  c:setoption("tcp-nodelay", true)
  c:settimeout(30)
  local lat = {}
  for i = 1, N + 100 do
    local t0 = B.now()
    c:send("GET " .. web:url("/small.txt?i=" .. i) .. " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    local status = assert(c:receive("*l"))
    assert(status:find("^HTTP/1.1 200"), status)
    local len
    while true do
      local l = assert(c:receive("*l"))
      if l == "" then break end
      len = len or tonumber(l:match("^[Cc]ontent%-[Ll]ength: (%d+)"))
    end
    assert(c:receive(len))
    if i > 100 then lat[#lat + 1] = B.now() - t0 end
  end
  c:close()
  return lat
end

local function curl_speed(args)
  local ok, out = B.sh("curl -sS -o /dev/null -w '%{speed_download} %{size_download}' " .. args)
  local speed, size = out:match("([%d.]+) (%d+)")
  assert(ok and tonumber(size) == 104857600, "curl: " .. out)
  return tonumber(speed) / (1024 * 1024)
end

local sp, sport = start_serve(farm.proxies, "serve_bench")
local tsp, tsport = start_serve(tfarm.proxies, "serve_bench_tls")
local rows = { { "measure", "pool:get", "through serve", "difference / ratio" } }
local lat_rows, p50_diffs = {}, {}
for run = 1, RUNS do
  local a, b = pool_latencies(), serve_latencies(sport)
  local pa, pb = B.quantile(a, 0.5) * 1000, B.quantile(b, 0.5) * 1000
  p50_diffs[#p50_diffs + 1] = pb - pa
  lat_rows[#lat_rows + 1] = { "latency p50 / p99 ms (run " .. run .. ")",
    string.format("%.3f / %.3f", pa, B.quantile(a, 0.99) * 1000),
    string.format("%.3f / %.3f", pb, B.quantile(b, 0.99) * 1000),
    string.format("+%.3f ms at p50", pb - pa) }
end
for _, r in ipairs(lat_rows) do rows[#rows + 1] = r end
local url = web:url("/big100.bin")
-- one unmeasured transfer of each kind first: the first 100 MiB after the
-- latency loops ran measurably slower, whichever path it took
curl_speed("--socks5-hostname " .. farm.proxies[1] .. " " .. url)
curl_speed("-p -x http://127.0.0.1:" .. sport .. " " .. url)

local function cpu_s(pid) -- utime + stime of a process, seconds
  local f = assert(io.open("/proc/" .. pid .. "/stat"))
  local st = f:read("*a"):gsub("^.*%) ", "")
  f:close()
  local fields = {}
  for x in st:gmatch("%S+") do fields[#fields + 1] = x end
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100 -- USER_HZ
end

-- Each run: PAIRS pairs (direct, through serve), alternating which goes
-- first (the first of a pair ran measurably slower), on a machine whose
-- other load moves single transfers by 2x; the run's figure is the
-- median of its pairs' ratios, and the pairs' range is shown beside it.
local PAIRS = 5
local function relay_runs(label, direct_args, via_port, serve_pid)
  local medians = {}
  for run = 1, RUNS do
    local rs, ds, vs, cpu = {}, {}, {}, 0
    for k = 1, PAIRS do
      local direct, via
      local function d() direct = curl_speed(direct_args .. " " .. url) end
      local function v()
        local c0 = cpu_s(serve_pid)
        via = curl_speed("-p -x http://127.0.0.1:" .. via_port .. " " .. url)
        cpu = cpu + cpu_s(serve_pid) - c0
      end
      if (run + k) % 2 == 1 then v() d() else d() v() end
      rs[k], ds[k], vs[k] = via / direct, direct, via
    end
    local med = B.quantile(rs, 0.5)
    medians[#medians + 1] = med
    local rlo, rhi = B.range(rs)
    rows[#rows + 1] = { label .. " MiB/s (run " .. run .. ")",
      string.format("%.0f", B.quantile(ds, 0.5)),
      string.format("%.0f (serve %.3f CPU s/100 MiB)", B.quantile(vs, 0.5), cpu / PAIRS),
      string.format("%.2fx (pairs %.2f-%.2f)", med, rlo, rhi) }
  end
  return medians
end
rows[#rows + 1] = { "(relay rows: medians of " .. PAIRS .. " pairs)", "curl direct", "curl -p -x serve", "" }
local ratios = relay_runs("SOCKS5 relay", "--socks5-hostname " .. farm.proxies[1], sport, sp.pid)
local tratios = relay_runs("https proxy relay", "--proxy-cacert " .. web.ca .. " -p -x " .. tfarm.proxies[1],
  tsport, tsp.pid)
sp:stop()
tsp:stop()
B.table(rows)
local dlo, dhi = B.range(p50_diffs)
local rlo, rhi = B.range(ratios)
local tlo, thi = B.range(tratios)
print(string.format("serve's added p50 latency: %.3f-%.3f ms (target <= 1 ms); relay %.2fx-%.2fx of curl direct "
  .. "(target >= 0.8x); through an https proxy %.2fx-%.2fx", dlo, dhi, rlo, rhi, tlo, thi))
env.cleanup()
