-- SIGINT and SIGTERM under `scatter run`: the first stops dispatching,
-- cancels what is in flight, saves state and exits 130 or 143; a second
-- one exits at once, even while Lua is stuck and the loop cannot turn.
local env = require("support.env")
local ffi = require("ffi")
local cjson = require("cjson")
local state = require("scatter.state")

pcall(ffi.cdef, "int kill(int pid, int sig);")

local SIGHUP, SIGINT, SIGTERM = 1, 2, 15

local read = env.read_file

describe("scatter run and signals", function()
  local ng, farm, dir, script

  setup(function()
    ng = env.nginx()
    farm = env.farm({ "blackhole count=3", "good" })
    dir = env.tmpdir()
    script = dir .. "/hang.lua"
    local f = assert(io.open(script, "w"))
    -- tasks hang on blackholes (attempts in flight) until a signal comes;
    -- "spin" then wedges Lua so that only the C handler can act
    f:write([[
      local scatter = require("scatter")
      local path, target, mode = arg[1], arg[2], arg[3]
      local proxies = {}
      for i = 4, #arg do proxies[#proxies + 1] = arg[i] end
      local pool = scatter.pool({ proxies = proxies, state_file = path, proxy_timeout = 60,
                                  metrics_log_interval = 0 })
      for i = 1, 6 do
        scatter.spawn(function() pool:get(target .. "?i=" .. i, { timeout = 120 }) end)
      end
      scatter.sleep(0.2)
      print("inflight " .. pool:metrics().inflight)
      io.stdout:flush()
      if mode == "spin" then
        local x = 0
        while true do x = x + 1 end
      end
      scatter.sleep(120)
    ]])
    f:close()
  end)

  teardown(env.cleanup)

  local function start(name, mode)
    local path = dir .. "/" .. name .. ".json"
    local out = dir .. "/" .. name .. ".out"
    local argv = { env.build_dir() .. "/scatter", "run", script, path, ng.url("/small.txt"), mode }
    for i = 1, 3 do argv[#argv + 1] = farm.proxies[i] end
    local proc = env.spawn(argv, { log = out, name = "scatter-" .. name })
    local line = env.wait_until(function() return (read(out) or ""):match("inflight (%d+)") end,
      "the tasks to be in flight", proc, 30)
    assert.is_true(tonumber(line) > 0)
    return proc, path, out
  end

  local function active()
    local s = cjson.decode(assert(farm.control("stats")):match("^OK (.*)$"))
    local n = 0
    for i = 1, 3 do n = n + s.per_proxy[i].active end
    return n
  end

  for _, case in ipairs({ { "SIGINT", SIGINT, 130 }, { "SIGTERM", SIGTERM, 143 }, { "SIGHUP", SIGHUP, 129 } }) do
    local name, sig, code = case[1], case[2], case[3]
    it("stops, saves state and exits " .. code .. " on " .. name, function()
      local proc, path, out = start(name:lower(), "wait")
      assert.is_nil(read(path)) -- not saved yet (state_save_interval is 300 s)
      assert.is_true(active() > 0)
      assert.equal(0, ffi.C.kill(proc.pid, sig))
      env.wait_until(function() return proc:reap() end, "the run to exit", nil, 30)
      assert.equal("exit " .. code, proc.status)
      local sections = assert(state.read(path))
      assert.equal(3, #sections.default.proxies)
      assert.truthy(read(out):find(name .. ": stopping and saving state", 1, true))
      env.wait_until(function() return active() == 0 end, "the blackholes' connections to close", nil, 10)
    end)
  end

  it("exits at once on a second signal, even when Lua does not give the loop a turn", function()
    local proc, path = start("twice", "spin")
    assert.equal(0, ffi.C.kill(proc.pid, SIGTERM))
    env.sleep(0.3)
    assert.is_true(proc:alive()) -- wedged: the first signal cannot be acted on
    assert.equal(0, ffi.C.kill(proc.pid, SIGINT))
    env.wait_until(function() return proc:reap() end, "the run to exit", nil, 30)
    assert.equal("exit 130", proc.status)
    assert.is_nil(read(path)) -- it did not stop to save
  end)

  it("a closed stdout pipe (SIGPIPE) stops, saves state and exits 141", function()
    local path = dir .. "/pipe.json"
    local pipe = dir .. "/pipe.lua"
    local f = assert(io.open(pipe, "w"))
    f:write([[
      local scatter = require("scatter")
      local pool = scatter.pool({ proxies = { arg[3] }, state_file = arg[1], metrics_log_interval = 0 })
      pool:get(arg[2], { timeout = 20 })
      for i = 1, 200 do
        print("line " .. i)
        io.stdout:flush()
        scatter.sleep(0.05)
      end
    ]])
    f:close()
    local cmd = ("%s run %s %s %s %s 2>%s | head -1 >/dev/null; echo ${PIPESTATUS[0]}"):format(
      env.build_dir() .. "/scatter", pipe, path, ng.url("/small.txt"), farm.proxies[4], dir .. "/pipe.err")
    local p = io.popen("bash -c '" .. cmd .. "'")
    local rc = p:read("*a")
    p:close()
    assert.equal("141", rc:match("%d+"), read(dir .. "/pipe.err"))
    local sections = assert(state.read(path))
    assert.equal(1, #sections.default.proxies)
    assert.truthy(read(dir .. "/pipe.err"):find("SIGPIPE: stopping and saving state", 1, true))
  end)

  it("scatter.on_signal gives a library user the same stop, hook first", function()
    local path = dir .. "/lib.json"
    local lib = dir .. "/lib.lua"
    local f = assert(io.open(lib, "w"))
    f:write([[
      package.path = arg[4] .. "/?.lua;" .. arg[4] .. "/?/init.lua;" .. package.path
      package.cpath = arg[5] .. "/lib/?.so;" .. package.cpath
      local scatter = require("scatter")
      scatter.run(function()
        local pool = scatter.pool({ proxies = { arg[3] }, state_file = arg[1], metrics_log_interval = 0 })
        scatter.on_signal(function(name)
          print("hook " .. name .. " stopping=" .. tostring(scatter.stopping()))
          io.stdout:flush()
        end)
        for i = 1, 4 do
          scatter.spawn(function()
            local _, err = pool:get(arg[2] .. "?i=" .. i, { timeout = 120 })
            print("got " .. tostring(err) .. " stopping=" .. tostring(scatter.stopping()))
            io.stdout:flush()
          end)
        end
        print("ready")
        io.stdout:flush()
        scatter.sleep(120)
      end)
    ]])
    f:close()
    local out = dir .. "/lib.out"
    local argv = { "luajit", lib, path, ng.url("/small.txt"), farm.proxies[1], "lua", env.build_dir() }
    -- the sanitizer build's module needs the ASan runtime first (env execs
    -- luajit, so the pid signalled is the script's)
    if env.asan_preload then table.insert(argv, 1, "env") table.insert(argv, 2, "LD_PRELOAD=" .. env.asan_preload) end
    local proc = env.spawn(argv, { log = out, name = "lib-signal" })
    env.wait_until(function() return (read(out) or ""):find("ready", 1, true) end, "the script to start", proc, 30)
    env.sleep(0.3)
    assert.equal(0, ffi.C.kill(proc.pid, SIGTERM))
    env.wait_until(function() return proc:reap() end, "the script to exit", nil, 30)
    assert.equal("exit 143", proc.status)
    local text = read(out)
    assert.truthy(text:find("hook SIGTERM stopping=true", 1, true), text)
    assert.truthy(text:find("got closed stopping=true", 1, true), text)
    assert.truthy(assert(state.read(path)).default, "no state saved")
  end)
end)
