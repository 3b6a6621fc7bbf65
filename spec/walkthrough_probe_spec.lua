-- What a new user trips over following README.md: the example files used
-- the way the docs suggest, mistakes a first script makes.
local env = require("support.env")

local q = env.shell_quote
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local root = here .. "../"
local NAMES = { "block_page", "json_api", "soft_error" }

describe("a first user", function()
  local dir, dead_list

  setup(function()
    dir = env.tmpdir()
    dead_list = dir .. "/dead.txt"
    env.write_file(dead_list, "127.0.0.1:" .. env.dead_port() .. "\n")
  end)

  teardown(env.cleanup)

  it("gets a clear error at once from fetch --classifier examples/classifiers/*.lua", function()
    -- the files return constructors: taken as classifiers, every answer
    -- was "no verdict" and the fetch waited out its timeout
    for _, name in ipairs(NAMES) do
      local file = root .. "examples/classifiers/" .. name .. ".lua"
      local rc, out, err = env.cli("fetch http://127.0.0.1:9/ --timeout 2 --proxies " .. q(dead_list)
        .. " --classifier " .. q(file))
      assert.equal(2, rc, err)
      assert.equal("", out)
      assert.truthy(err:find("returns the constructor scatter.classifiers." .. name .. ", not a classifier", 1, true), err)
      assert.truthy(err:find(name .. "{ ... }", 1, true), err)
    end
  end)

  it("is told a constructor passed as the classifier is one", function()
    local classifiers = require("scatter.classifiers")
    local resp = { status = 200, headers = {}, body = "<html>ok</html>", url = "http://a.test/" }
    for _, name in ipairs(NAMES) do
      local ok, err = pcall(classifiers[name], resp)
      assert.is_false(ok, name)
      assert.truthy(tostring(err):find(name .. " is a constructor", 1, true), tostring(err))
    end
    -- built ones still judge
    assert.equal("success", classifiers.block_page():classify(resp))
    assert.equal("success", classifiers.soft_error{ complete = "</html>" }:classify(resp))
  end)

  it("sees the pool's log name the constructor mistake", function()
    local ng = env.nginx()
    local farm = env.farm({ "good" })
    local script = env.script("ctor.lua", ([[
local scatter = require("scatter")
local pool = scatter.pool{ proxies = { %q }, metrics_log_interval = 0,
  classifier = require("scatter.classifiers").block_page }
local resp, err = pool:get(%q, { timeout = 1 })
print(resp and resp.status or err)
]]):format(farm.proxies[1], ng.url("/small.txt")))
    local rc, out, err = env.cli("run " .. q(script))
    assert.equal(0, rc, err)
    assert.truthy(out:find("^timeout"), out)
    assert.truthy(err:find("block_page is a constructor", 1, true), err)
  end)

  it("gets a usage line, exit 2 and no traceback from the quickstart without arguments", function()
    local rc, _, err = env.cli("run " .. q(root .. "examples/quickstart.lua"))
    assert.equal(2, rc, err)
    assert.truthy(err:find("usage: scatter run examples/quickstart.lua SOURCE BASE_URL", 1, true), err)
    assert.is_nil(err:find("traceback", 1, true), err)
  end)

  it("is stopped at once by a quickstart list with no proxy, not after every page's timeout", function()
    local empty = dir .. "/empty.txt"
    env.write_file(empty, "# nothing here\n")
    for _, src in ipairs({ "file://" .. empty, empty, "file://" .. dir .. "/missing.txt" }) do
      local rc, out, err = env.cli("run " .. q(root .. "examples/quickstart.lua") .. " " .. q(src)
        .. " http://127.0.0.1:9 1")
      assert.equal(1, rc, err)
      assert.equal("", out)
      assert.truthy(err:find("quickstart: no proxies in " .. src, 1, true), err)
    end
  end)
end)
