-- The embedded crawl frontier used as a careless user would (found by
-- probing): lists with holes, an output file named another way on resume.
-- Each case failed before its fix: an item lost without a word, a line
-- written twice.
local env = require("support.env")
local scatter = require("scatter")

describe("frontier, probed as a user", function()
  local dir, ng, ms

  setup(function()
    local files = {}
    for i = 1, 8 do files["p" .. i .. ".html"] = "page " .. i end
    -- an older site's pages: Latin-1 titles, one linking on
    files["latin1.html"] = "<html><head><title>Caf\233 cr\232me</title></head>"
      .. "<body><a href='next.html'>next</a></body></html>"
    files["next.html"] = "<html><head><title>Suite \226\128\148 fin</title></head><body></body></html>"
    ng = env.nginx({ files = files })
    ms = env.microsocks()
  end)
  before_each(function() dir = env.tmpdir() end)
  teardown(function() env.cleanup() end)

  local function new_pool()
    return scatter.pool({ proxies = { ms.url }, metrics_log_interval = 0, rate_limit = { default_interval = 0 } })
  end

  local function lines(path)
    local out = {}
    for l in io.lines(path) do out[#out + 1] = l end
    return out
  end

  it("push_many refuses a list with a hole or a map instead of dropping what follows", function()
    local q = assert(scatter.queue({ path = dir .. "/q.db" }))
    local function refused(list)
      local ok, err = pcall(q.push_many, q, list)
      assert.is_false(ok)
      return err
    end
    -- plain URL strings (the C path) and records (the per-record path)
    assert.matches("item 2 is nil", refused({ "http://a.org/1", nil, "http://a.org/3" }))
    assert.matches("item 2 is nil", refused({ "http://a.org/1", nil, { url = "http://a.org/3" } }))
    local holed = { "http://a.org/1" }
    holed[5] = "http://a.org/5"
    assert.matches("item 2 is nil but item 5 follows", refused(holed))
    assert.matches("not a list: it has the key 'home'", refused({ home = "http://a.org/" }))
    assert.matches("not a list: it has the key 'x' beside items 1 to 1", refused({ "http://a.org/1", x = "http://a.org/x" }))
    -- nothing of a refused list is written
    assert.equal(0, q:stats().seen)
    assert.equal(2, q:push_many({ "http://a.org/1", { url = "http://a.org/2" } }))
    assert.equal(0, q:push_many({}))
    assert.equal(2, q:stats().seen)
    q:close()
  end)

  it("cuts a killed run's tail from the output however its name is spelt on resume", function()
    scatter.run(function()
      local pool = new_pool()
      local handle = function(_, item) return { url = item.url } end
      local q = assert(scatter.queue({ path = dir .. "/q.db" }))
      q:push(ng.url("/p1.html"))
      q:push(ng.url("/p2.html"))
      assert.equal(2, scatter.crawl({ queue = q, pool = pool, output = dir .. "/out.jsonl", handle = handle }).done)
      q:close()
      -- what a run killed before its commit leaves: a line past the
      -- committed length, for an item the queue will do again
      local f = assert(io.open(dir .. "/out.jsonl", "ab"))
      f:write('{"ghost":1}\n')
      f:close()
      -- the next runs name the same file otherwise: ./, a symlink
      assert(os.execute("ln -s out.jsonl " .. dir .. "/link.jsonl") == 0)
      for i, name in ipairs({ dir .. "/./out.jsonl", dir .. "/link.jsonl" }) do
        q = assert(scatter.queue({ path = dir .. "/q.db" }))
        q:push(ng.url("/p" .. (2 + i) .. ".html"))
        assert.equal(1, scatter.crawl({ queue = q, pool = pool, output = name, handle = handle }).done)
        q:close()
        local got = lines(dir .. "/out.jsonl")
        assert.equal(2 + i, #got)
        for _, l in ipairs(got) do assert.not_matches("ghost", l) end
        f = assert(io.open(dir .. "/out.jsonl", "ab"))
        f:write('{"ghost":2}\n')
        f:close()
      end
      pool:close()
    end)
  end)

  it("reads a backslash before the query as a slash, as a browser does", function()
    local join = scatter.url.join
    assert.equal("http://a.org/b/x/y.html", join("http://a.org/b/c", "x\\y.html"))
    assert.equal("http://a.org/x", join("http://a.org/b/c", "..\\x"))
    assert.equal("http://evil.org/x", join("http://a.org/b/c", "\\\\evil.org\\x"))
    assert.equal("http://evil.org/", join("http://a.org/b/c", "/\\evil.org"))
    assert.equal("https://e.org/a", join("http://a.org/", "https:\\\\e.org\\a"))
    -- the query and the fragment keep theirs
    assert.equal("http://a.org/p/q?x\\y#z\\w", join("http://a.org/", "p\\q?x\\y#z\\w"))
    -- another host's link is not the page's own
    local page = { url = "http://a.org/b/c", body = '<a href="\\\\evil.org\\x">1</a><a href="img\\1.png">2</a>' }
    assert.same({ "http://a.org/b/img/1.png" }, scatter.links(page, { same_host = true }))
    assert.same({ "http://evil.org/x", "http://a.org/b/img/1.png" }, scatter.links(page))
  end)

  it("says the priority's range and shows the number given", function()
    local q = assert(scatter.queue({}))
    local function refused(v)
      local ok, err = pcall(q.push, q, "http://a.org/", { priority = v })
      assert.is_false(ok)
      return err
    end
    assert.matches("priority must be an integer from %-2%^52 to 2%^52, got 4611686018427387904$", refused(2 ^ 62))
    assert.matches("got %-9007199254740994$", refused(-2 ^ 53 - 2))
    assert.matches("got 0.5$", refused(0.5))
    assert.matches("got string 5$", refused("5"))
    assert.is_true(q:push("http://a.org/", { priority = 2 ^ 52 }))
    assert.is_true(q:push("http://b.org/", { priority = -2 ^ 52 }))
    q:close()
  end)

  it("takes a header given as a list of values, as a request does", function()
    scatter.run(function()
      local pool = new_pool()
      local q = assert(scatter.queue({ path = dir .. "/q.db" }))
      assert.is_true(q:push(ng.url("/echo"), { headers = { ["x-test"] = { "a", "b" }, ["x-n"] = 5 } }))
      for _, bad in ipairs({ { ["x-test"] = { "a", {} } }, { ["x-test"] = { "a", nil, "c" } }, { ["x-test"] = { k = "v" } } }) do
        local ok, err = pcall(q.push, q, ng.url("/other"), { headers = bad })
        assert.is_false(ok)
        assert.matches("headers must map names to strings %(or lists of strings%)", err)
      end
      local seen, body
      local s = scatter.crawl({ queue = q, pool = pool, handle = function(resp, item)
        seen, body = item.headers, resp.body
        return resp.body
      end })
      assert.equal(1, s.done)
      assert.same({ "a", "b" }, seen["x-test"])
      assert.matches("x%-test=a", body) -- (nginx's $http_x_test: the first, or both joined)
      assert.equal(0, q:stats().failed)
      q:close()
      pool:close()
    end)
  end)

  it("examples/crawl.lua keeps a page whose title is not UTF-8, and follows its links", function()
    local function abs(path) return path:match("^/") and path or (os.getenv("PWD") .. "/" .. path) end
    local example = abs(debug.getinfo(1, "S").source:match("^@(.*/)") .. "../examples/crawl.lua")
    env.write_file(dir .. "/proxies.txt", ms.url .. "\n")
    local cmd = "cd " .. env.shell_quote(dir) .. " && " .. env.shell_quote(abs(env.build_dir()) .. "/scatter")
      .. " run " .. env.shell_quote(example) .. " proxies.txt " .. ng.url("/latin1.html") .. " 2 4 2>&1"
    local p = io.popen(cmd)
    local said = p:read("*a")
    p:close()
    assert.matches("crawled 2 pages %(0 failed, 1 new links%)", said)
    local titles = {}
    for _, l in ipairs(lines(dir .. "/crawl.jsonl")) do
      local r = require("cjson").decode(l)
      titles[r.url:match("[^/]*$")] = r.title
    end
    -- Latin-1 read as Latin-1; UTF-8 kept as it is
    assert.same({ ["latin1.html"] = "Caf\195\169 cr\195\168me", ["next.html"] = "Suite \226\128\148 fin" }, titles)
  end)

  it("exports and lists items whose body, URL or error is not UTF-8 (FIELD_base64, \\xNN in errors)", function()
    local function unbase64(s)
      local B = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
      local bits = s:gsub("=", ""):gsub(".", function(c)
        local n, r = B:find(c, 1, true) - 1, ""
        for i = 5, 0, -1 do r = r .. (math.floor(n / 2 ^ i) % 2) end
        return r
      end)
      bits = bits:sub(1, #bits - #bits % 8) -- (the padding's bits)
      return (bits:gsub("%d%d%d%d%d%d%d%d", function(b) return string.char(tonumber(b, 2)) end))
    end
    local path = dir .. "/q.db"
    scatter.run(function()
      local pool = new_pool()
      local q = assert(scatter.queue({ path = path }))
      q:push(ng.url("/echo"), { method = "POST", body = "a\0b\255c" })
      q:push(ng.url("/p1.html?x=\255"))
      q:push(ng.url("/p2.html"))
      scatter.crawl({ queue = q, pool = pool, max_tries = 1, handle = function(resp, item)
        if item.url:find("p2") then error("the page said \255\254") end
        return resp.status
      end })
      pool:close()
      local f = assert(io.open(dir .. "/in.jsonl", "w"))
      assert.equal(3, q:export(f))
      f:close()
      q:close()
    end)
    local cjson = require("cjson")
    local rc, _, err = env.cli("queue export " .. path .. " " .. dir .. "/cli.jsonl")
    assert.equal(0, rc, err)
    for _, file in ipairs({ dir .. "/in.jsonl", dir .. "/cli.jsonl" }) do
      local got = {}
      for _, l in ipairs(lines(file)) do got[#got + 1] = cjson.decode(l) end
      assert.equal(3, #got)
      assert.is_nil(got[1].body)
      assert.equal("a\0b\255c", unbase64(got[1].body_base64))
      assert.is_nil(got[2].url)
      assert.equal(ng.url("/p1.html?x=\255"), unbase64(got[2].url_base64))
      assert.equal("done", got[2].state)
      assert.equal("failed", got[3].state)
      assert.matches("the page said \\xFF\\xFE$", got[3].err)
    end
    local out
    rc, out, err = env.cli("queue failed " .. path .. " --json")
    assert.equal(0, rc, err)
    assert.matches("the page said \\xFF\\xFE$", cjson.decode(out).err)
  end)

  it("push_many refuses a plain URL string no request could send, as push does", function()
    local q = assert(scatter.queue({}))
    local long = "http://a.org/" .. string.rep("x", 65536)
    local ok, err = pcall(q.push_many, q, { "http://a.org/", long })
    assert.is_false(ok)
    assert.matches("item 2: url longer than 65536 bytes", err)
    assert.equal(0, q:stats().seen)
    -- the longest a request takes is queued
    assert.equal(1, q:push_many({ long:sub(1, 65536) }))
    q:close()
  end)

  it("gives back what a crawl ended by an error held, so the next crawl on the queue ends", function()
    scatter.run(function()
      local q = assert(scatter.queue({ path = dir .. "/q.db" }))
      for i = 1, 8 do q:push(ng.url("/p" .. i .. ".html"), { meta = { i = i } }) end
      local pool = new_pool()
      -- the first handlers wait for item 2's to close the pool, so items remain that need it
      -- (before, a slow item 2 could close it after every other item was done)
      local closed = false
      local ok, err = pcall(scatter.crawl, { queue = q, pool = pool, concurrency = 4, handle = function(_, item)
        if item.meta.i == 2 then
          pool:close()
          closed = true
        end
        for _ = 1, 400 do
          if closed then break end
          scatter.sleep(0.025)
        end
        return item.meta.i
      end })
      assert.is_false(ok)
      assert.matches("the pool was closed during the crawl", err)
      local s = q:stats()
      assert.equal(0, s.leased)
      assert.equal(8, s.queued + s.done)
      local pool2 = new_pool()
      local second
      local th = scatter.spawn(function()
        second = scatter.crawl({ queue = q, pool = pool2, concurrency = 4, handle = function(_, item) return item.meta.i end })
      end)
      -- (a guard, not a timing: before, it waited for those leases for ever)
      for _ = 1, 200 do
        if th.status == "dead" then break end
        scatter.sleep(0.05)
      end
      assert.equal("dead", th.status)
      assert.equal(8 - s.done, second.done)
      s = q:stats()
      assert.same({ 8, 0, 0 }, { s.done, s.leased, s.queued })
      -- the leases given back were no try
      local f = assert(io.open(dir .. "/all.jsonl", "w"))
      q:export(f)
      f:close()
      for _, l in ipairs(lines(dir .. "/all.jsonl")) do assert.equal(1, require("cjson").decode(l).tries) end
      q:close()
      pool2:close()
    end)
  end)

  it("refuses readonly without a path instead of an empty in-memory queue", function()
    local q, err = scatter.queue({ readonly = true })
    assert.is_nil(q)
    assert.equal("scatter.queue: readonly = true needs path = (the queue file to read)", err)
    q = assert(scatter.queue({ readonly = false }))
    assert.is_true(q:push("http://a.org/"))
    q:close()
  end)

  it("examples/crawl.lua says at once that the proxy list or the start URL is wrong", function()
    local function abs(path) return path:match("^/") and path or (os.getenv("PWD") .. "/" .. path) end
    local example = abs(debug.getinfo(1, "S").source:match("^@(.*/)") .. "../examples/crawl.lua")
    env.write_file(dir .. "/proxies.txt", ms.url .. "\n")
    local function run(args)
      -- (timeout: a guard; before, a missing list meant minutes of requests that could only time out)
      local p = io.popen("cd " .. env.shell_quote(dir) .. " && timeout 20 " .. env.shell_quote(abs(env.build_dir()) .. "/scatter")
        .. " run " .. env.shell_quote(example) .. " " .. args .. " 2>&1; echo rc=$?")
      local said = p:read("*a")
      p:close()
      return said
    end
    local said = run("missing.txt " .. ng.url("/p1.html"))
    assert.matches("PROXY_LIST: missing.txt: No such file or directory", said)
    assert.matches("rc=1\n$", said)
    said = run("proxies.txt 'not a url'")
    assert.matches('START_URL "not a url": url contains spaces', said)
    assert.matches("rc=1\n$", said)
    -- nothing was made for a run that never started
    assert.is_nil(io.open(dir .. "/crawl.db"))
  end)

  it("takes a path beginning with file: as a file name, so its lock guards that file", function()
    local path = dir .. "/file:q.db"
    -- (relative: "file:q.db" is the form SQLite read as a URI)
    -- the ASan build's module needs its runtime preloaded into luajit
    local pre = env.asan_preload and ("LD_PRELOAD=" .. env.shell_quote(env.asan_preload) .. " ") or ""
    local p = io.popen("cd " .. env.shell_quote(dir) .. " && " .. pre .. "luajit -e " .. env.shell_quote(
      "package.path = " .. ("%q"):format(package.path) .. " package.cpath = " .. ("%q"):format(package.cpath)
      .. " local q = assert(require('scatter').queue({ path = 'file:q.db' })) q:push('http://a.org/') q:close()"
      .. " print(io.open('file:q.db') ~= nil, io.open('q.db') ~= nil)") .. " 2>&1")
    local said = p:read("*a")
    p:close()
    assert.equal("true\tfalse\n", said)
    local q = assert(scatter.queue({ path = path, readonly = true }))
    assert.equal(1, q:stats().seen)
    q:close()
  end)
end)
