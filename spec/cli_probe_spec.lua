-- The commands used carelessly: output that cannot be written (a full
-- disk, simulated with a file size limit), state files that are not
-- regular files or hold numbers no snapshot has, a signal that comes while
-- the loop is not turning, and option values the command line must refuse.
local env = require("support.env")
local cjson = require("cjson")

local q = env.shell_quote
local write = env.write_file
local slurp = env.read_file

-- A shell prefix: files written by what follows stop growing at 4 KiB
-- (dash counts 512-byte blocks; bash 1 KiB ones: 8 KiB), and a write past
-- that fails with EFBIG, as on a full disk, instead of killing the process
-- (SIGXFSZ ignored is inherited across exec).
local FULL = "trap '' XFSZ; ulimit -f 8;"

-- A user mistake is reported, not traced back into scatter's sources.
local function no_traceback(err)
  assert.is_nil(err:find("stack traceback", 1, true), err)
  assert.is_nil(err:find("%.lua:%d+:"), err)
end

local SNAPSHOT = {
  format = "scatter-state", version = 2, saved_at = 1000000,
  proxy_fields = { "key", "attempts", "successes", "dead_since" },
  pair_fields = {
    "proxy", "outcomes", "successes", "consecutive_fails", "last_success",
    "cooldown_until", "latency_ewma", "latency_p50", "latency_p95",
  },
  pools = {
    main = {
      proxies = { { "10.0.0.1:1080", 3, 3, -1 } },
      hosts = { ["x.test"] = { { 1, 3, 3, 0, 999990, 0, 0.05, 0.04, 0.1 } } },
      sources = {},
    },
  },
}

describe("scatter commands used carelessly", function()
  local dir

  setup(function() dir = env.tmpdir() end)
  teardown(env.cleanup)

  describe("stats on a file that is not a snapshot", function()
    local function snapshot(name, edit)
      local text = cjson.encode(SNAPSHOT)
      text = edit(text)
      local path = dir .. "/" .. name
      write(path, text)
      return path
    end

    it("numbers no snapshot holds (NaN, Infinity, 1e300) are exit 1 with the reason", function()
      for _, case in ipairs({
        { "nan.json", function(s) return (s:gsub('"saved_at":%d+', '"saved_at":NaN')) end },
        { "inf.json", function(s) return (s:gsub('"saved_at":%d+', '"saved_at":Infinity')) end },
        { "huge.json", function(s) return (s:gsub('"saved_at":%d+', '"saved_at":1e300')) end },
        { "rownan.json", function(s) return (s:gsub("%[1,3,3,0,", "[1,NaN,3,0,")) end },
        { "hostnum.json", function(s) return (s:gsub('"hosts":{', '"hosts":{"y.test":5,')) end },
      }) do
        local path = snapshot(case[1], case[2])
        for _, flags in ipairs({ "", " --json" }) do
          local rc, out, err = env.cli("stats " .. q(path) .. flags)
          assert.equal(1, rc, case[1] .. flags .. ": " .. out .. err)
          assert.truthy(err:find("scatter stats: " .. path .. ": ", 1, true), case[1] .. ": " .. err)
          no_traceback(err)
        end
      end
    end)

    it("a FIFO, a device or a directory is refused at once, not read", function()
      local fifo = dir .. "/fifo.json"
      assert.equal(0, os.execute("mkfifo " .. q(fifo)))
      -- `timeout` only stops a hang: the answer must be exit 1
      for _, path in ipairs({ fifo, "/dev/zero", dir }) do
        local rc, _, err = env.cli("stats " .. q(path), { env = "timeout 20" })
        assert.equal(1, rc, path .. ": " .. err)
        assert.truthy(err:find("scatter stats: " .. path .. ": ", 1, true), err)
        no_traceback(err)
      end
      local _, _, err = env.cli("stats " .. q(dir))
      assert.truthy(err:find("directory", 1, true), err)
    end)

    it("a version given as a string is shown as one", function()
      local path = snapshot("vstr.json", function(s) return (s:gsub('"version":2', '"version":"2"')) end)
      local rc, _, err = env.cli("stats " .. q(path))
      assert.equal(1, rc)
      assert.truthy(err:find('version "2"', 1, true), err)
    end)
  end)

  describe("output that cannot be written", function()
    local ng, ms, list

    setup(function()
      ng = env.nginx()
      ms = env.microsocks()
      list = dir .. "/proxies.txt"
      write(list, ms.addr .. "\n")
    end)

    it("fetch exits 1 when stdout or -o cannot take the body", function()
      local url = q(ng.url("/big.bin"))
      local rc, _, err = env.cli("fetch " .. url .. " --proxies " .. q(list), { env = FULL })
      assert.equal(1, rc, err)
      assert.truthy(err:find("stdout", 1, true), err)
      no_traceback(err)
      local path = dir .. "/body.bin"
      rc, _, err = env.cli("fetch " .. url .. " --proxies " .. q(list) .. " -o " .. q(path), { env = FULL })
      assert.equal(1, rc, err)
      assert.truthy(err:find("scatter fetch: -o: ", 1, true), err)
      no_traceback(err)
    end)

    it("fetch takes --max-body: a body past the pool's 16 MiB can be fetched", function()
      local url = q(ng.url("/big.bin"))
      local rc, _, err = env.cli("fetch " .. url .. " --proxies " .. q(list) .. " --max-body 1000 --timeout 1")
      assert.equal(1, rc, err)
      assert.truthy(err:find("too_large", 1, true), err)
      local out
      rc, out, err = env.cli("fetch " .. url .. " --proxies " .. q(list) .. " --max-body=" .. ng.big_size)
      assert.equal(0, rc, err)
      assert.equal(ng.big_size, #out)
      for _, bad in ipairs({ "-1", "1.5", "1e10", "x" }) do
        rc, _, err = env.cli("fetch " .. url .. " --proxies " .. q(list) .. " --max-body " .. bad)
        assert.equal(2, rc, bad .. ": " .. err)
        assert.truthy(err:find("--max-body must be", 1, true), err)
      end
    end)

    it("run exits 1 when what the script printed cannot be written", function()
      local path = env.script("loud.lua", [[io.write(string.rep("x", 100000), "\n")]])
      local rc, _, err = env.cli("run " .. q(path), { env = FULL })
      assert.equal(1, rc, err)
      assert.truthy(err:find("stdout", 1, true), err)
    end)

    it("check --out that cannot be written exits 1 and keeps the old list", function()
      -- long credentials: the list is big, the table (masked) is not
      local lines = {}
      for i = 1, 100 do
        lines[i] = "socks5h://user" .. i .. string.rep("u", 100) .. ":pw@" .. ms.addr
      end
      local many = dir .. "/many.txt"
      write(many, table.concat(lines, "\n") .. "\n")
      local out = dir .. "/working.txt"
      write(out, "the old list\n")
      local rc, _, err = env.cli("check " .. q(many) .. " --url " .. q(ng.url("/index.html"))
        .. " --timeout 10 --out " .. q(out), { env = FULL })
      assert.equal(1, rc, err)
      assert.truthy(err:find("scatter check: --out: ", 1, true), err)
      assert.equal("the old list\n", slurp(out))
    end)

    it("check --out leaves a file named like its temp file alone", function()
      local out = dir .. "/good.txt"
      write(out .. ".tmp", "mine\n")
      local rc, _, err = env.cli("check " .. q(list) .. " --url " .. q(ng.url("/index.html")) .. " --out " .. q(out))
      assert.equal(0, rc, err)
      assert.equal(ms.addr .. "\n", slurp(out))
      assert.equal("mine\n", slurp(out .. ".tmp"))
    end)
  end)

  describe("scatter run", function()
    it("a signal that came while the loop was not turning is still the stop", function()
      -- the script never yields: the signal is only noticed after it
      local path = env.script("selfsig.lua", [[
        local ffi = require("ffi")
        ffi.cdef("int getpid(void); int kill(int pid, int sig);")
        ffi.C.kill(ffi.C.getpid(), 2)
        print("after")
      ]])
      local rc, out, err = env.cli("run " .. q(path))
      assert.equal(130, rc, err)
      assert.equal("after\n", out)
      assert.truthy(err:find("SIGINT", 1, true), err)
    end)

    it("a closed pipe after a script that never yields exits 141", function()
      local path = env.script("flood.lua", [[for i = 1, 200000 do print(i) end]])
      local rcfile = dir .. "/flood.rc"
      local cmd = ("(%s run %s 2>/dev/null; echo $? > %s) | head -1 >/dev/null"):format(
        q(env.build_dir() .. "/scatter"), q(path), q(rcfile))
      assert.equal(0, os.execute(cmd))
      assert.equal("141", slurp(rcfile):match("%d+"))
    end)

    it("os.exit in the script closes the pools (state saved) and keeps its code", function()
      local ng, ms = env.nginx(), env.microsocks()
      local path = dir .. "/exit.json"
      local script = env.script("exit.lua", [[
        local scatter = require("scatter")
        local pool = scatter.pool({ proxies = { arg[1] }, state_file = arg[2], metrics_log_interval = 0 })
        assert(pool:get(arg[3], { timeout = 20 }))
        os.exit(3)
      ]])
      local rc, _, err = env.cli("run " .. q(script) .. " " .. q(ms.addr) .. " " .. q(path) .. " " .. q(ng.url("/small.txt")))
      assert.equal(3, rc, err)
      local sections = assert(require("scatter.state").read(path))
      assert.truthy(sections.default, err)
      assert.equal(ms.addr, sections.default.proxies[1][1])
    end)

    it("-- ends the options, so a script may be named like one", function()
      write(dir .. "/--odd.lua", [[print("odd", ...)]])
      local rc, out, err = env.cli("run --quiet -- --odd.lua a", { env = "cd " .. q(dir) .. " &&" })
      assert.equal(0, rc, err)
      assert.equal("odd\ta\n", out)
    end)
  end)

  it("a state_file that is a FIFO (or a device) is neither read nor replaced", function()
    -- state_file = "/dev/null" ("keep no state") replaced /dev/null with a
    -- regular file: a save renames its temp file over the path
    local ng, ms = env.nginx(), env.microsocks()
    local fifo = dir .. "/state.fifo"
    assert.equal(0, os.execute("mkfifo " .. q(fifo)))
    local script = env.script("fifo_state.lua", [[
      local scatter = require("scatter")
      local pool = scatter.pool({ proxies = { arg[1] }, state_file = arg[2], metrics_log_interval = 0 })
      assert(pool:get(arg[3], { timeout = 20 }))
      assert(pool.state:save() == nil)
    ]])
    local rc, _, err = env.cli("run " .. q(script) .. " " .. q(ms.addr) .. " " .. q(fifo) .. " " .. q(ng.url("/small.txt")),
      { env = "timeout 60" })
    assert.equal(0, rc, err)
    assert.equal(0, os.execute("test -p " .. q(fifo)), "the FIFO was replaced")
    assert.truthy(err:find("not a regular file", 1, true), err)
    assert.truthy(err:find("will not save it", 1, true), err)
    assert.is_nil(slurp(fifo .. "-lock"))
  end)

  describe("a state file saved under a clock far ahead", function()
    local scatter = require("scatter")
    local ng, ms

    setup(function()
      ng = env.nginx()
      ms = env.microsocks()
    end)
    after_each(function() scatter.close_all() end)

    -- the only proxy, in cooldown (field 6) or dead (proxy field 4) until
    -- a year past 5000: with the clock set right, that is no rest at all
    local function far_ahead(name, pair_cooldown, dead_since)
      local path = dir .. "/" .. name
      write(path, cjson.encode({
        format = "scatter-state", version = 2, saved_at = 1e11,
        proxy_fields = SNAPSHOT.proxy_fields, pair_fields = SNAPSHOT.pair_fields,
        pools = { default = {
          proxies = { { ms.addr, 5, 4, dead_since } },
          hosts = { ["127.0.0.1"] = { { 1, 5, 4, 1, 1e11, pair_cooldown, 0.01, 0.01, 0.01 } } },
        } },
      }))
      return path
    end

    for _, case in ipairs({
      { "cooldown.json", 1e11, -1, "a cooldown" },
      -- a dead proxy its list names again is probed at a refresh, once it
      -- has rested cooldown_max
      { "dead.json", 0, 1e11, "a death" },
    }) do
      it(case[4] .. " lasts no longer than cooldown_max", function()
        local path = far_ahead(case[1], case[2], case[3])
        local list = dir .. "/" .. case[1] .. ".txt"
        write(list, ms.addr .. "\n")
        local pool = scatter.pool({
          sources = { list }, source_refresh_interval = 0.2, state_file = path,
          metrics_log_interval = 0, cooldown_base = 0.1, cooldown_max = 0.5,
        })
        local resp, err
        scatter.run(function() resp, err = pool:get(ng.url("/small.txt"), { timeout = 20 }) end)
        assert.truthy(resp, err)
        assert.equal(200, resp.status)
      end)
    end
  end)

  it("fetch refuses a --timeout past what a request takes, as a bad command line", function()
    local rc, _, err = env.cli("fetch http://127.0.0.1:1/ --proxies 127.0.0.1:2 --timeout 1e9")
    assert.equal(2, rc, err)
    assert.truthy(err:find("--timeout", 1, true), err)
    rc, _, err = env.cli("fetch http://127.0.0.1:1/ --proxies 127.0.0.1:2 -H " .. q("X-A: a\r\nX-B: b"))
    assert.equal(2, rc, err)
    assert.truthy(err:find("header 'x-a' contains CR", 1, true), err)
  end)
end)
