-- The scatter executable: commands, exit codes, and the embedded LuaJIT.
local env = require("support.env")

local q = env.shell_quote

local script, scatter = env.script, env.cli

describe("scatter CLI", function()
  teardown(env.cleanup)

  it("prints help and exits 0", function()
    local rc, out = scatter("help")
    assert.equal(0, rc)
    assert.truthy(out:find("run ", 1, true))
    assert.truthy(out:find("--help", 1, true))
  end)

  it("prints versions", function()
    local rc, out = scatter("version")
    assert.equal(0, rc)
    assert.truthy(out:match("^scatter %d+%.%d+%.%d+\n"))
    assert.truthy(out:find("LuaJIT", 1, true))
    assert.truthy(out:find("libcurl", 1, true))
  end)

  it("exits 2 with usage on a bad command line", function()
    for _, args in ipairs({ "", "bogus", "run", "run /nonexistent/x.lua" }) do
      local rc, _, err = scatter(args)
      assert.equal(2, rc, "for: scatter " .. args)
      assert.truthy(err:find("scatter:", 1, true), err)
    end
    local _, _, err = scatter("bogus")
    assert.truthy(err:find("usage:", 1, true))
  end)

  it("names the option that is wrong, for run and serve alike", function()
    for _, case in ipairs({
      { "run --bogus x.lua", "run: unknown option --bogus" },
      { "run --log-level", "run: --log-level needs a value" },
      { "run --log-level=loud x.lua", "run: --log-level: " },
      { "run --quiet=yes x.lua", "run: unknown option --quiet=yes" },
      { "serve --timeout", "serve: --timeout needs a value" },
      { "serve --timeout=-3", "serve: --timeout: a number of seconds > 0 expected" },
      { "serve socks5h://127.0.0.1:1 --bogus", "serve: unknown option --bogus" },
    }) do
      local rc, _, err = scatter(case[1])
      assert.equal(2, rc, "for: scatter " .. case[1])
      assert.truthy(err:find("scatter: " .. case[2], 1, true), case[1] .. ": " .. err)
      assert.truthy(err:find("usage:", 1, true), case[1])
    end
  end)

  it("hands what follows the script, options too, to the script", function()
    local path = script("opts.lua", [[print(table.concat(arg, " "))]])
    local rc, out, err = scatter("run --quiet --log-level=warn " .. q(path) .. " --quiet -x --log-level")
    assert.equal(0, rc, err)
    assert.equal("--quiet -x --log-level\n", out)
  end)

  it("runs a script with its arguments as the main thread and waits for its threads", function()
    local path = script("args.lua", [[
      local scatter = require("scatter")
      local a, b = ...
      scatter.spawn(function() scatter.sleep(0.05) print("spawned done") end)
      print(arg[0]:match("args.lua$"), arg[1], arg[2], a, b, select("#", ...))
    ]])
    local rc, out, err = scatter("run " .. q(path) .. " x 'y z'")
    assert.equal(0, rc, err)
    assert.equal("args.lua\tx\ty z\tx\ty z\t2\nspawned done\n", out)
  end)

  it("loads C modules such as cjson (the executable exports the Lua API)", function()
    local path = script("cjson.lua", [[print(require("cjson").encode({ a = 1 }))]])
    local rc, out, err = scatter("run " .. q(path))
    assert.equal(0, rc, err)
    assert.equal('{"a":1}\n', out)
  end)

  it("exits 1 with the message and a traceback on an uncaught error", function()
    local path = script("fail.lua", [[
      local function inner() error("something broke") end
      inner()
    ]])
    local rc, _, err = scatter("run " .. q(path))
    assert.equal(1, rc)
    assert.truthy(err:find("something broke", 1, true), err)
    assert.truthy(err:find("stack traceback", 1, true), err)
    assert.truthy(err:find("in function 'inner'", 1, true) or err:find("inner", 1, true), err)
  end)

  it("exits 1 when a spawned thread failed, after the others finished", function()
    local path = script("thread_fail.lua", [[
      local scatter = require("scatter")
      scatter.spawn(function() error("worker broke") end)
      scatter.spawn(function() scatter.sleep(0.05) print("other finished") end)
    ]])
    local rc, out, err = scatter("run " .. q(path))
    assert.equal(1, rc)
    assert.equal("other finished\n", out)
    assert.truthy(err:find("worker broke", 1, true), err)
  end)

  it("reports a syntax error in the script as a bad command line", function()
    local path = script("syntax.lua", "this is not lua")
    local rc, _, err = scatter("run " .. q(path))
    assert.equal(2, rc)
    assert.truthy(err:find("syntax.lua", 1, true), err)
  end)
end)
