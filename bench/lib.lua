-- Helpers shared by the benchmarks in bench/: paths, the test servers of
-- spec/support/env.lua, shell runs, percentiles and the printed tables.
-- Every benchmark is run from the checkout's root, after the build:
--   luajit bench/NAME.lua     (or: bash bench/run.sh NAME)
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;bench/?.lua;" .. package.path
package.cpath = (os.getenv("SCATTER_BUILD_DIR") or "build") .. "/lib/?.so;" .. package.cpath

local env = require("support.env")
local socket = require("socket")

local M = { env = env }

function M.now() return socket.gettime() end

-- Runs a shell command; returns ok, stdout+stderr.
function M.sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1", "r"))
  local out = p:read("*a")
  local ok = p:close()
  return ok == true or ok == 0, out
end

M.write = env.write_file

-- Inside a scatter thread: n requests, `concurrency` at a time; fetch(i)
-- sends request i and returns its response. Returns the number of 200
-- answers and their latencies in seconds (none when `untimed`: a CPU
-- baseline must not pay for the clock).
function M.drive(scatter, concurrency, n, fetch, untimed)
  local ok, next_i, lat, ths = 0, 0, {}, {}
  for w = 1, concurrency do
    ths[w] = scatter.spawn(function()
      while next_i < n do
        next_i = next_i + 1
        local s = not untimed and M.now()
        local resp = fetch(next_i)
        if resp and resp.status == 200 then
          ok = ok + 1
          if s then lat[#lat + 1] = M.now() - s end
        end
      end
    end)
  end
  scatter.wait_all(unpack(ths))
  return ok, lat
end

-- Compiles bench/curl_multi_driver.c once per run into a temp dir.
function M.build_driver(dir)
  local bin = dir .. "/curl_multi_driver"
  local ok, out = M.sh("cc -O2 -Wall -o " .. bin .. " bench/curl_multi_driver.c -lcurl")
  if not ok then error("building the C driver failed:\n" .. out, 0) end
  return bin
end

-- q-quantile (0..1) of a list of numbers, nearest rank.
function M.quantile(xs, q)
  if #xs == 0 then return 0 / 0 end
  local s = {}
  for i, v in ipairs(xs) do s[i] = v end
  table.sort(s)
  local i = math.max(1, math.min(#s, math.ceil(q * #s)))
  return s[i]
end

function M.range(xs)
  local lo, hi = math.huge, -math.huge
  for _, v in ipairs(xs) do lo, hi = math.min(lo, v), math.max(hi, v) end
  return lo, hi
end

-- Prints rows (lists of strings) as an aligned table; row 1 is the header.
function M.table(rows)
  local w = {}
  for _, r in ipairs(rows) do
    for i, c in ipairs(r) do w[i] = math.max(w[i] or 0, #tostring(c)) end
  end
  for n, r in ipairs(rows) do
    local cells = {}
    for i, c in ipairs(r) do
      c = tostring(c)
      cells[i] = i == 1 and (c .. string.rep(" ", w[i] - #c)) or (string.rep(" ", w[i] - #c) .. c)
    end
    print(table.concat(cells, "  "))
    if n == 1 then
      local dash = {}
      for i = 1, #w do dash[i] = string.rep("-", w[i]) end
      print(table.concat(dash, "  "))
    end
  end
end

-- The machine line every benchmark prints first.
function M.banner(title)
  local _, cpu = M.sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")
  local _, n = M.sh("nproc")
  local _, load = M.sh("cut -d' ' -f1-3 /proc/loadavg")
  print(string.format("== %s | %s | cpu:%s x %s | load %s", title, os.date("!%Y-%m-%d %H:%M UTC"),
    (cpu:gsub("%s+$", "")), (n:gsub("%s+$", "")), (load:gsub("%s+$", ""))))
end

M.rss_kib = env.rss_kib

return M
