-- `scatter check --detect` (the protocol of bare host:port lines) and
-- `--anonymity --judge` (what an HTTP proxy tells the target), against the
-- farm's proxies of every protocol and the spec nginx's /judge echo.
local env = require("support.env")
local cjson = require("cjson")

describe("scatter check --detect / --anonymity", function()
  local ng, farm, dir

  local function check(args) return env.cli("check " .. args) end

  setup(function()
    ng = env.nginx()
    farm = env.farm({
      "good",                                -- 1 socks5
      "good proto=socks4",                   -- 2
      "good proto=http",                     -- 3 elite
      "good proto=http anon=anonymous",      -- 4
      "good proto=http anon=transparent",    -- 5
      "refuse",                              -- 6
    })
    dir = env.tmpdir()
  end)

  teardown(env.cleanup)

  local function bare(i) return (farm.proxies[i]:gsub("^%a[%w]*://", "")) end

  local function results(out)
    local doc = cjson.decode(out)
    local by = {}
    for _, r in ipairs(doc.results) do by[r.proxy] = r end
    return doc, by
  end

  it("finds the protocol of bare lines and writes scheme-qualified ones", function()
    local list = dir .. "/bare.txt"
    local lines = {}
    for i = 1, 6 do lines[i] = bare(i) end
    env.write_file(list, table.concat(lines, "\n") .. "\n")
    local out_file = dir .. "/found.txt"
    local rc, out = check(env.shell_quote(list) .. " --detect --json --timeout 2 --url "
      .. env.shell_quote(ng.url("/small.txt")) .. " --out " .. env.shell_quote(out_file))
    assert.equal(0, rc, out)
    local doc, by = results(out)
    assert.equal(5, doc.ok)
    assert.equal("socks5", by["socks5://" .. bare(1)] and by["socks5://" .. bare(1)].protocol
      or (by[bare(1)] or {}).protocol)
    assert.truthy(by["socks4://" .. bare(2)], out)
    assert.truthy(by["http://" .. bare(3)], out)
    assert.is_false(by[bare(6)].ok)
    assert.truthy(by[bare(6)].reason:find("no protocol answered", 1, true), by[bare(6)].reason)
    local written = {}
    for l in env.read_file(out_file):gmatch("[^\n]+") do written[l] = true end
    assert.is_true(written["socks5://" .. bare(1)])
    assert.is_true(written["socks4://" .. bare(2)])
    assert.is_true(written["http://" .. bare(3)])
    assert.is_nil(written[bare(6)])
    -- a list with schemes is taken as it says
    env.write_file(list, farm.proxies[3] .. "\n")
    rc, out = check(env.shell_quote(list) .. " --detect --json --url " .. env.shell_quote(ng.url("/small.txt")))
    assert.equal(0, rc, out)
    assert.equal("http", results(out).results[1].protocol)
  end)

  it("classifies HTTP proxies against a judge, transparent ones failing by default", function()
    local list = dir .. "/http.txt"
    env.write_file(list, table.concat({ farm.proxies[1], farm.proxies[3], farm.proxies[4], farm.proxies[5] }, "\n") .. "\n")
    local rc, out = check(env.shell_quote(list) .. " --anonymity --json --judge " .. env.shell_quote(ng.url("/judge")))
    assert.equal(0, rc, out)
    local doc, by = results(out)
    assert.equal("elite", by[farm.proxies[1]].anonymity) -- socks: a tunnel
    assert.equal("elite", by[farm.proxies[3]].anonymity)
    assert.equal("anonymous", by[farm.proxies[4]].anonymity)
    assert.is_true(by[farm.proxies[4]].ok)
    assert.equal("transparent", by[farm.proxies[5]].anonymity)
    assert.is_false(by[farm.proxies[5]].ok)
    assert.equal(3, doc.ok)
    rc, out = check(env.shell_quote(list) .. " --anonymity --allow-transparent --json --judge "
      .. env.shell_quote(ng.url("/judge")))
    assert.equal(0, rc, out)
    assert.equal(4, results(out).ok)
  end)

  it("rejects --anonymity without a judge, and a judge without --anonymity", function()
    local rc, _, err = check("x.txt --anonymity")
    assert.equal(2, rc)
    assert.truthy(err:find("--judge", 1, true), err)
    rc, _, err = check("x.txt --judge " .. env.shell_quote(ng.url("/judge")))
    assert.equal(2, rc)
    assert.truthy(err:find("--anonymity", 1, true), err)
  end)
end)
