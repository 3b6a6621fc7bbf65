-- The live progress line of `scatter run` on a terminal, seen through a
-- real terminal (tmux): its content, at most 4 redraws a second, out of the
-- way of log lines and print(), cleared at exit; off without a terminal or
-- with --quiet.
local env = require("support.env")
local socket = require("socket")

local q = env.shell_quote

local function slurp(path) return env.read_file(path) or "" end

local write = env.write_file

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("*a")
  p:close()
  return out
end

-- "[0:00:01] tasks 3 done / 1 pending | 2.0/s | success 60% | proxies 2
-- healthy, 0 untested, 0 failing, 3 cooldown, 0 dead | K=6"
local LINE = "%[%d+:%d%d:%d%d%] tasks (%d+) done / (%d+) pending | %d+%.%d/s | success (%d+)%% | "
  .. "proxies (%d+) healthy, (%d+) untested, (%d+) failing, (%d+) cooldown, (%d+) dead | K=%d+"

describe("progress line", function()
  local ng, farm, dir, sock
  local sessions = 0

  setup(function()
    ng = env.nginx()
    -- slow good proxies: every refusal lands before a winner could cancel it
    farm = env.farm({ "slow latency=0.2 count=2", "refuse count=3" })
    dir = env.tmpdir()
    sock = dir .. "/tmux.sock"
  end)

  teardown(function()
    -- only the tmux server on our own socket
    sh("tmux -S " .. q(sock) .. " kill-server")
    env.cleanup()
  end)

  -- Runs `scatter run ARGS` in a new tmux window; the raw terminal output
  -- goes to a file through pipe-pane. Returns a session handle.
  local function start(args)
    sessions = sessions + 1
    local name = "s" .. sessions
    local raw = dir .. "/" .. name .. ".raw"
    local t0 = socket.gettime() -- before the run starts: elapsed can only be longer
    local cmd = q(env.build_dir() .. "/scatter") .. " run " .. args .. "; echo EXIT=$?; exec sleep 600"
    local out = sh("tmux -S " .. q(sock) .. " new-session -d -s " .. name .. " -x 200 -y 40 " .. q(cmd)
      .. " && tmux -S " .. q(sock) .. " pipe-pane -t " .. name .. " -o " .. q("cat >> " .. q(raw)))
    assert.equal("", out)
    local s = { name = name, raw = raw, t0 = t0 }
    function s.screen() return sh("tmux -S " .. q(sock) .. " capture-pane -p -t " .. name) end
    function s.wait(pred, what) return env.wait_until(function() return pred(s.screen()) end, what, nil, 60) end
    return s
  end

  local function crawl_script(stopfile)
    return string.format([[
      local scatter = require("scatter")
      local pool = scatter.pool({
        name = "prog.test", proxies = %s, rate_limit = { default_interval = 0 },
        cooldown_base = 600, cooldown_max = 600, metrics_log_interval = 0.3,
      })
      local i = 0
      while not io.open(%q) do
        i = i + 1
        local resp, err = pool:get(%q, { timeout = 30 })
        print("item " .. i .. " " .. (resp and resp.status or err))
        scatter.sleep(0.1)
      end
      print("crawl over")
    ]], "{ '" .. table.concat(farm.proxies, "', '") .. "' }", stopfile, ng.url("/small.txt"))
  end

  it("shows tasks, throughput, success, proxies and K, and is gone at exit", function()
    local stop = dir .. "/stop1"
    local path = dir .. "/crawl1.lua"
    write(path, crawl_script(stop))
    local s = start(q(path))
    local screen = s.wait(function(text)
      for line in text:gmatch("[^\n]+") do
        local done, _, _, healthy, untested, failing, cool, dead = line:match(LINE)
        -- wait until the refusing proxies are seen cooling
        if done and tonumber(cool) == 3 then return text end
        if done then assert.is_true(healthy + untested + failing + cool + dead <= 5, line) end
      end
    end, "a progress line with 3 proxies cooling")
    local line
    for l in screen:gmatch("[^\n]+") do if l:match(LINE) then line = l end end
    local done, pending, success, healthy, untested, failing, cool, dead = line:match(LINE)
    assert.is_true(tonumber(done) >= 1, line)
    assert.is_true(tonumber(pending) <= 1, line)
    assert.is_true(tonumber(success) <= 100, line)
    -- the good ones: healthy once they succeeded, untested until tried
    assert.same({ 2, 0, 3, 0 }, { tonumber(healthy) + tonumber(untested), tonumber(failing), tonumber(cool),
      tonumber(dead) })

    -- log lines and print() output are never glued to the progress line
    s.wait(function(text) return select(2, text:gsub("throughput=", "")) >= 2 end, "two summary lines")
    write(stop, "")
    screen = s.wait(function(text) return text:match("EXIT=%d+") and text end, "the run to end")
    local elapsed = socket.gettime() - s.t0
    assert.truthy(screen:find("EXIT=0", 1, true), screen)
    for l in screen:gmatch("[^\n]+") do
      assert.is_nil(l:match(LINE), "left on screen: " .. l)
      if l:find("item ", 1, true) then assert.truthy(l:match("^item %d+ 200$"), l) end
      if l:find("throughput=", 1, true) then assert.truthy(l:match("^%d%d%d%d%-%S+ INFO %[prog%.test%]"), l) end
    end
    assert.truthy(screen:find("\ncrawl over\nEXIT=0", 1, true), screen)

    -- every draw starts with "\r\27[K[": at most 4 a second (+1 for a draw
    -- already under way when the clock started)
    local raw = env.wait_until(function()
      local r = slurp(s.raw)
      return r:find("EXIT=", 1, true) and r
    end, "the raw output", nil, 10)
    local _, draws = raw:gsub("\r\27%[K%[", "")
    assert.is_true(draws >= 1, "no draw captured")
    assert.is_true(draws <= 4 * elapsed + 1, draws .. " draws in " .. elapsed .. " s")
  end)

  it("is off with --quiet", function()
    local path = dir .. "/quiet.lua"
    write(path, string.format([[
      local scatter = require("scatter")
      local pool = scatter.pool({ proxies = { %q }, metrics_log_interval = 0 })
      for _ = 1, 8 do assert(pool:get(%q, { timeout = 30 })) scatter.sleep(0.15) end
      print("quiet over")
    ]], farm.proxies[1], ng.url("/small.txt")))
    local s = start("--quiet " .. q(path))
    local screen = s.wait(function(text) return text:match("EXIT=%d+") and text end, "the run to end")
    assert.truthy(screen:find("quiet over\nEXIT=0", 1, true), screen)
    local raw = env.wait_until(function()
      local r = slurp(s.raw)
      return r:find("EXIT=", 1, true) and r
    end, "the raw output", nil, 10)
    assert.is_nil(raw:find("\27[K", 1, true), "drawn despite --quiet")
  end)

  it("is off when stderr is not a terminal", function()
    local path = dir .. "/pipe.lua"
    write(path, string.format([[
      local scatter = require("scatter")
      local pool = scatter.pool({ proxies = { %q }, metrics_log_interval = 0 })
      for _ = 1, 8 do assert(pool:get(%q, { timeout = 30 })) scatter.sleep(0.15) end
    ]], farm.proxies[1], ng.url("/small.txt")))
    local out = sh(q(env.build_dir() .. "/scatter") .. " run " .. q(path) .. " 2>" .. q(dir .. "/pipe.err")
      .. "; echo rc=$?")
    assert.truthy(out:find("rc=0", 1, true), out)
    assert.equal("", slurp(dir .. "/pipe.err"))
  end)
end)
