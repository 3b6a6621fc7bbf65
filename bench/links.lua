-- scatter.links on hostile and on big flat pages: parse time against
-- nesting depth (Gumbo's grows with its square; parse_timeout bounds it),
-- and a big flat page's parse, the cost of the budget's block tracking.
-- Compare builds with SCATTER_BUILD_DIR=<other build> (the Lua side is
-- this checkout's). Usage: luajit bench/links.lua [runs]
dofile("bench/lib.lua") -- paths (SCATTER_BUILD_DIR)
local scatter = require("scatter")

local runs = tonumber(arg[1]) or 3

local function best(fn)
  local b = math.huge
  for _ = 1, runs do
    local t0 = os.clock()
    fn()
    b = math.min(b, os.clock() - t0)
  end
  return b
end

print(("== scatter.links | %s | build %s | best of %d"):format(os.date("!%Y-%m-%d %H:%M UTC"),
  os.getenv("SCATTER_BUILD_DIR") or "build", runs))
print("depth      CPU s  result")
for _, n in ipairs({ 1000, 5000, 20000, 50000 }) do
  local body = ("<div>"):rep(n) .. '<a href="/x">x</a>'
  local got
  local t = best(function()
    local links, err = scatter.links({ url = "http://a.test/", body = body }, { parse_timeout = 30 })
    got = links and (#links .. " link") or err
  end)
  print(("%-9d %6.3f  %s"):format(n, t, got))
end
local flat = ('<p><a href="/a">a</a><b class="x">x</b></p>'):rep(50000)
local t = best(function() assert(scatter.links({ url = "http://a.test/", body = flat }, { parse_timeout = 30 })) end)
print(("flat page of %d bytes (50,000 x 3 tags): %.3f s CPU"):format(#flat, t))
