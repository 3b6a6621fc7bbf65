-- `scatter fetch`: bodies through a racing pool, -o, -v, exit codes; and
-- every command's --help.
local env = require("support.env")

local q = env.shell_quote

local write = env.write_file

local SECRET = "f3tchPW"

describe("scatter fetch", function()
  local ng, farm, dir, list

  local scatter = env.cli

  setup(function()
    ng = env.nginx()
    farm = env.farm({ "good user=dave pass=" .. SECRET, "refuse count=2", "block", "blackhole" })
    dir = env.tmpdir()
    list = dir .. "/proxies.txt"
    local lines = { "socks5h://dave:" .. SECRET .. "@" .. farm.proxies[1] }
    for i = 2, #farm.proxies do lines[#lines + 1] = farm.proxies[i] end
    write(list, table.concat(lines, "\n") .. "\n")
  end)

  teardown(env.cleanup)

  it("writes the body to stdout and, with -v, the status and winning proxy to stderr", function()
    local rc, out, err = scatter("fetch " .. q(ng.url("/small.txt")) .. " --proxies " .. q(list) .. " -v -k 2")
    assert.equal(0, rc, err)
    assert.equal(ng.small_text, out)
    local u = ng.url("/small.txt")
    assert.truthy(err:find(u .. ": 200 via ***@" .. farm.proxies[1] .. " (", 1, true), err)
    assert.is_nil(err:find(SECRET, 1, true))
  end)

  it("fetches several URLs, bodies in the order given", function()
    local rc, out, err = scatter("fetch " .. q(ng.url("/json")) .. " " .. q(ng.url("/small.txt"))
      .. " --proxies " .. q(list) .. " --timeout 30")
    assert.equal(0, rc, err)
    assert.equal('{"ok":true,"data":{"id":7}}' .. ng.small_text, out)
  end)

  it("writes to a file with -o, byte for byte", function()
    local path = dir .. "/big.bin"
    local rc, out, err = scatter("fetch " .. q(ng.url("/big.bin")) .. " --proxies file://" .. list .. " -o " .. q(path))
    assert.equal(0, rc, err)
    assert.equal("", out)
    local p = io.popen("sha256sum " .. q(path))
    local sum = p:read("*a"):match("^(%x+)")
    p:close()
    assert.equal(ng.big_sha256, sum)
  end)

  it("exits 1 when a URL times out, with the last error", function()
    -- a 500 is the target failing: retried until the timeout
    local rc, out, err = scatter("fetch " .. q(ng.url("/status/500")) .. " --proxies " .. q(list) .. " --timeout 1")
    assert.equal(1, rc)
    assert.equal("", out)
    assert.truthy(err:find(ng.url("/status/500") .. ": timeout: last error: ", 1, true), err)
    assert.is_nil(err:find(SECRET, 1, true))
  end)

  it("exits 1 when the lists hold no proxy", function()
    local path = dir .. "/none.txt"
    write(path, "# nothing here\n")
    local rc, _, err = scatter("fetch " .. q(ng.url("/small.txt")) .. " --proxies " .. q(path))
    assert.equal(1, rc)
    assert.truthy(err:find("no proxies", 1, true), err)
  end)

  it("rejects bad command lines with exit 2", function()
    for _, args in ipairs({
      "fetch", "fetch " .. q(ng.url("/")), "fetch ftp://x/ --proxies " .. q(list),
      "fetch " .. q(ng.url("/")) .. " --proxies " .. q(list) .. " -k 0",
      "fetch " .. q(ng.url("/")) .. " --proxies " .. q(list) .. " --timeout x",
      "fetch " .. q(ng.url("/")) .. " --proxies " .. q(list) .. " -H nocolon",
    }) do
      local rc, _, err = scatter(args)
      assert.equal(2, rc, args .. "\n" .. err)
      assert.truthy(err:find("usage: scatter fetch", 1, true), err)
    end
  end)

  it("every command has --help, and `scatter help` lists them all", function()
    local rc, out = scatter("help")
    assert.equal(0, rc)
    local cli = require("scatter.cli")
    for _, name in ipairs(cli.COMMANDS) do
      assert.truthy(out:find("\n  " .. name .. " ", 1, true), name .. " missing from:\n" .. out)
      local code, usage = scatter(name .. " --help")
      assert.equal(0, code, name)
      assert.truthy(usage:find("usage: scatter " .. name, 1, true), name .. ": " .. usage)
      local hcode, husage = scatter("help " .. name)
      assert.equal(0, hcode, name)
      assert.equal(usage, husage)
    end
    for _, name in ipairs({ "check", "fetch", "stats" }) do
      assert.truthy(out:find("\n  " .. name .. " ", 1, true), name .. " missing from:\n" .. out)
    end
  end)

  describe("issue 17", function()
    it("--proxies takes an http:// list (loaded before the proxies are counted)", function()
      local srv = env.tmpdir()
      os.execute("chmod 755 " .. q(srv))
      write(srv .. "/list.txt", farm.proxies[2] .. "\n" .. farm.proxies[3] .. "\n" ..
        "socks5h://dave:" .. SECRET .. "@" .. farm.proxies[1] .. "\n")
      local port = env.free_port()
      local p = env.spawn({ "python3", "-m", "http.server", "--bind", "127.0.0.1", "--directory", srv,
        tostring(port) }, { name = "list-server", log = dir .. "/http.log" })
      env.wait_port(port, p)
      local rc, out, err = scatter("fetch " .. q(ng.url("/small.txt")) .. " --proxies "
        .. q("http://127.0.0.1:" .. port .. "/list.txt") .. " --timeout 20")
      p:stop()
      assert.equal(0, rc, err)
      assert.equal(ng.small_text, out)
    end)

    it("--proxies naming a missing file or an empty list: one clear line, no traceback", function()
      local rc, out, err = scatter("fetch " .. q(ng.url("/small.txt")) .. " --proxies /nonexistent/list.txt")
      assert.equal(1, rc)
      assert.equal("", out)
      assert.truthy(err:find("no proxies: /nonexistent/list.txt: ", 1, true), err)
      assert.is_nil(err:find("traceback", 1, true), err)
      assert.is_nil(err:find("%.lua:%d+:"), err)
    end)

    it("--expect TEXT: a body without it is the proxy's tampering, with it a success", function()
      local want = ng.small_text:sub(1, 12)
      local rc, out, err = scatter("fetch " .. q(ng.url("/small.txt")) .. " --proxies " .. q(list)
        .. " --expect " .. q(want) .. " --timeout 20")
      assert.equal(0, rc, err)
      assert.equal(ng.small_text, out)
      rc, out, err = scatter("fetch " .. q(ng.url("/small.txt")) .. " --proxies " .. q(list)
        .. " --expect " .. q("no such text in the page") .. " --timeout 1.5")
      assert.equal(1, rc, err)
      assert.equal("", out)
      assert.truthy(err:find("timeout", 1, true), err)
    end)

    it("--classifier FILE: the file's classifier decides", function()
      local cls = dir .. "/cls.lua"
      write(cls, 'local d = require("scatter.classifier").default\n'
        .. 'return function(r) if r.status == 404 then return "final" end return d(r) end\n')
      local rc, _, err = scatter("fetch " .. q(ng.url("/status/404")) .. " --proxies " .. q(list)
        .. " --classifier " .. q(cls) .. " --timeout 20")
      -- delivered at once as the target's answer (a 4xx exits 1, named)
      assert.equal(1, rc, err)
      assert.truthy(err:find("HTTP 404 (the target's answer", 1, true), err)
      write(cls, "return 42\n")
      rc, _, err = scatter("fetch " .. q(ng.url("/small.txt")) .. " --proxies " .. q(list) .. " --classifier " .. q(cls))
      assert.equal(2, rc)
      assert.truthy(err:find("must return a function", 1, true), err)
    end)
  end)
end)
