-- `scatter check`: one probe per proxy of the lists, the table, the
-- summary, --json, --out, exit codes, and credentials kept out of sight.
local env = require("support.env")
local cjson = require("cjson")

local q = env.shell_quote

local slurp = env.read_file

local write = env.write_file

local SECRET = "pr0xyPW"

describe("scatter check", function()
  local ng, farm, dir, list, cred

  -- Runs the CLI; returns exit code, stdout, stderr.
  local function check(args, stdin) return env.cli("check " .. args, { stdin = stdin }) end

  local function stats()
    return cjson.decode(assert(farm.control("stats")):match("^OK (.*)$"))
  end

  setup(function()
    ng = env.nginx()
    farm = env.farm({
      "good count=2",                     -- 1, 2
      "slow latency=0.3",                 -- 3
      "refuse",                           -- 4
      "blackhole",                        -- 5
      "handshake_fail",                   -- 6
      "block",                            -- 7
      "tamper",                           -- 8
      "flaky p=1",                        -- 9
      "good user=carol pass=" .. SECRET,  -- 10
    })
    dir = env.tmpdir()
    cred = "socks5h://carol:" .. SECRET .. "@" .. farm.proxies[10]
    local lines = { "# the farm", "" }
    for i = 1, 9 do lines[#lines + 1] = farm.proxies[i] end
    lines[#lines + 1] = cred
    lines[#lines + 1] = farm.proxies[1] -- a duplicate
    lines[#lines + 1] = "not a proxy"
    list = dir .. "/list.txt"
    write(list, table.concat(lines, "\n") .. "\n")
  end)

  teardown(env.cleanup)

  -- table rows: proxy -> { result, latency, reason }
  local function rows(out)
    local t = {}
    for line in out:gmatch("[^\n]+") do
      local proxy, result, ms, reason = line:match("^(%S+)%s+(%a+)%s+(%d+) ms  (.+)$")
      if proxy then t[proxy] = { result = result, ms = tonumber(ms), reason = reason } end
    end
    return t
  end

  it("probes each proxy once and tells the working ones from each kind of failure", function()
    local before = stats()
    local url = ng.url("/small.txt")
    local rc, out, err = check(q(list) .. " --url " .. q(url) .. " --timeout 1.5 --expect scatter --out "
      .. q(dir .. "/good.txt"))
    assert.equal(0, rc, err)
    assert.truthy(out:match("^PROXY%s+RESULT%s+LATENCY%s+REASON\n"), out)
    local r = rows(out)
    local p = farm.proxies
    local masked = "***@" .. p[10]
    local want = {
      [p[1]] = { "ok", "HTTP 200" }, [p[2]] = { "ok", "HTTP 200" }, [p[3]] = { "ok", "HTTP 200" },
      [p[4]] = { "fail", "proxy_refused" }, [p[5]] = { "fail", "proxy_timeout" },
      [p[6]] = { "fail", "socks_error [no_auth]" }, [p[7]] = { "fail", "HTTP 403" },
      [p[8]] = { "fail", "unexpected body" }, [p[9]] = { "fail", "socks_error [reply_connection_refused]" },
      [masked] = { "ok", "HTTP 200" },
    }
    local n = 0
    for proxy, w in pairs(want) do
      n = n + 1
      assert.is_table(r[proxy], "no row for " .. proxy .. "\n" .. out)
      assert.same(w, { r[proxy].result, r[proxy].reason }, proxy)
    end
    local nrows = 0
    for _ in pairs(r) do nrows = nrows + 1 end
    assert.equal(n, nrows) -- the duplicate merged, the bad line skipped
    assert.is_true(r[p[3]].ms >= 300, "the slow proxy's latency: " .. r[p[3]].ms)
    -- fastest first: the slow one is the last of the working ones
    local order = {}
    for line in out:gmatch("[^\n]+") do
      local proxy, result = line:match("^(%S+)%s+(%a+)%s+%d+ ms")
      if proxy then order[#order + 1] = { proxy, result } end
    end
    assert.same({ p[3], "ok" }, order[4])
    assert.equal("fail", order[5][2])
    assert.truthy(out:find("\n10 proxies checked against " .. url .. ": 4 ok, 6 failed (", 1, true), out)
    assert.truthy(out:find("1 proxy_refused", 1, true), out)
    assert.truthy(err:find("skipped 1 bad line", 1, true), err)

    -- --out: the working proxies, fastest first, credentials kept (mode 0600)
    local good = {}
    for line in slurp(dir .. "/good.txt"):gmatch("[^\n]+") do good[#good + 1] = line end
    assert.equal(4, #good)
    assert.equal(p[3], good[4])
    local has_cred = false
    for _, g in ipairs(good) do if g == "carol:" .. SECRET .. "@" .. p[10] then has_cred = true end end
    assert.is_true(has_cred, table.concat(good, ","))
    local mode = io.popen("stat -c %a " .. q(dir .. "/good.txt")):read("*l")
    assert.equal("600", mode)

    -- no password on screen
    assert.is_nil((out .. err):find(SECRET, 1, true))

    -- one SOCKS connection per accepting proxy, none left open
    local after = env.wait_until(function()
      local s = stats()
      return s.active == 0 and s
    end, "every probe connection closed", nil, 10)
    for i = 1, 10 do
      if farm.profiles[i] ~= "refuse" then
        assert.equal(1, after.per_proxy[i].accepted - before.per_proxy[i].accepted, p[i] .. " " .. farm.profiles[i])
      end
    end
  end)

  it("writes one JSON document with --json and reads lists from stdin", function()
    local rc, out, err = check("- --url " .. q(ng.url("/small.txt")) .. " --timeout 1 --json", list)
    assert.equal(0, rc, err)
    local doc = cjson.decode(out)
    assert.equal(10, doc.checked)
    assert.equal(5, doc.ok) -- the tamperer passes without --expect
    assert.equal(5, doc.failed)
    assert.equal(10, #doc.results)
    assert.equal(1, doc.reasons["HTTP 403"])
    for _, res in ipairs(doc.results) do
      assert.is_boolean(res.ok)
      assert.is_number(res.latency_ms)
      assert.is_string(res.reason)
      if not res.ok and res.reason:find("proxy_", 1, true) then assert.is_string(res.error) end
    end
    assert.is_nil(out:find(SECRET, 1, true))
  end)

  it("exits 1 when no proxy works, and with an empty list", function()
    local only_bad = dir .. "/bad.txt"
    write(only_bad, farm.proxies[4] .. "\n" .. farm.proxies[7] .. "\n")
    local rc, out = check(q(only_bad) .. " --url " .. q(ng.url("/small.txt")))
    assert.equal(1, rc)
    assert.truthy(out:find("2 proxies checked against .-: 0 ok, 2 failed"), out)
    local empty = dir .. "/empty.txt"
    write(empty, "# nothing\n")
    local err
    rc, out, err = check(q(empty) .. " --url " .. q(ng.url("/small.txt")) .. " --json")
    assert.equal(1, rc)
    assert.equal("", out)
    assert.truthy(err:find("no proxies", 1, true), err)
  end)

  it("probes a long list with bounded concurrency", function()
    local big = env.farm({ "good count=120", "refuse count=80" })
    local path = dir .. "/long.txt"
    write(path, table.concat(big.proxies, "\n") .. "\n")
    local rc, out, err = check(q(path) .. " --url " .. q(ng.url("/small.txt")) .. " --concurrency 16 --json")
    assert.equal(0, rc, err)
    local doc = cjson.decode(out)
    assert.same({ 200, 120, 80 }, { doc.checked, doc.ok, doc.failed })
    assert.equal(80, doc.reasons.proxy_refused)
  end)

  it("has --help and rejects bad command lines with exit 2", function()
    local rc, out = check("--help")
    assert.equal(0, rc)
    assert.truthy(out:find("usage: scatter check", 1, true))
    rc, out = check(q(list) .. " --url x --help")
    assert.equal(0, rc)
    assert.truthy(out:find("usage: scatter check", 1, true))
    for _, args in ipairs({
      q(list), "--url " .. q(ng.url("/")), q(list) .. " --url ftp://x/",
      q(list) .. " --url " .. q(ng.url("/")) .. " --concurrency 0",
      q(list) .. " --url " .. q(ng.url("/")) .. " --timeout -1", q(list) .. " --bogus",
    }) do
      local code, _, err = check(args)
      assert.equal(2, code, args .. "\n" .. err)
      assert.truthy(err:find("usage: scatter check", 1, true), err)
    end
    local code, _, err = check(q(dir .. "/missing.txt") .. " --url " .. q(ng.url("/")))
    assert.equal(1, code)
    assert.truthy(err:find("missing.txt", 1, true), err)
  end)
end)
