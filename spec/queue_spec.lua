-- scatter.queue on its own (no network): dedup and canonical keys, every
-- state transition through the backend interface, priorities, reopening
-- (leases void, counts kept), the output's committed length, bad input.
local env = require("support.env")
local scatter = require("scatter")
local core = require("scatter.core")

local function queue_record(url) return require("scatter.queue").record(url, nil, "spec") end

local function open(path, opts)
  opts = opts or {}
  opts.path = path
  return assert(scatter.queue(opts))
end

describe("scatter.queue", function()
  local dir
  before_each(function() dir = env.tmpdir() end)
  after_each(function() env.cleanup() end)

  it("keys an item by method, canonical URL and body hash; a key is queued once", function()
    local q = open(dir .. "/q.db")
    assert.is_true(q:push("http://Shop.Example:80/a/./b/../c?x=1#top"))
    assert.is_false(q:push("http://shop.example/a/c?x=1"))
    assert.is_false(q:push("HTTP://SHOP.EXAMPLE/a/c?x=1#other"))
    assert.is_true(q:push("http://shop.example/a/c?x=2"))
    assert.is_true(q:push("https://shop.example:443/a/c?x=1")) -- another scheme
    assert.is_true(q:push("http://shop.example/a/c?x=1", { method = "POST", body = "a" }))
    assert.is_false(q:push("http://shop.example/a/c?x=1", { method = "POST", body = "a" }))
    assert.is_true(q:push("http://shop.example/a/c?x=1", { method = "POST", body = "b" }))
    assert.is_true(q:push("http://shop.example/a/c?x=1", { key = "mine" }))
    assert.is_false(q:push("http://elsewhere.example/", { key = "mine" }))
    assert.equal(2, q:push_many({ "http://shop.example/a/c?x=2", "http://n.example/1",
      { url = "http://n.example/2", priority = 3 } }))
    assert.same({ queued = 8, leased = 0, done = 0, failed = 0, seen = 8 }, q:stats())
    -- a list of plain strings (keyed in one C call) keys exactly as push does
    assert.equal(2, q:push_many({ "HTTP://SHOP.EXAMPLE:80/a/c?x=1#f", "http://n.example/1", "http://N.example/3#a",
      "http://n.example/3", "http://n.example:8080/3" }))
    assert.is_false(q:push("http://n.example/3"))
    assert.is_false(q:push("http://n.example:8080/3#z"))
    assert.has_error(function() q:push_many({ "http://n.example/4", "ftp://n.example/5" }) end,
      'queue:push_many: item 2: "ftp://n.example/5": unsupported scheme \'ftp\' (http or https only)')
    assert.same({ queued = 10, leased = 0, done = 0, failed = 0, seen = 10 }, q:stats())
    assert.equal("http://a.org/d", scatter.url.canonical("http://A.ORG:80/b/../d#f"))
    assert.equal("http://a.org/x/y?q#f", scatter.url.join("http://a.org/x/z", "y?q#f"))
    q:close()
  end)

  it("walks queued -> leased -> done | queued (retry) | failed, highest priority first", function()
    local q = open(dir .. "/q.db")
    local b = q.b
    q:push("http://a.test/low", { priority = -1 })
    q:push("http://a.test/one")
    q:push("http://a.test/two")
    q:push("http://a.test/top", { priority = 9, meta = { n = 1 } })
    local got = assert(b:lease(10, core.now()))
    local urls = {}
    for i, it in ipairs(got) do urls[i] = it.url end
    assert.same({ "http://a.test/top", "http://a.test/one", "http://a.test/two", "http://a.test/low" }, urls)
    assert.equal(1, got[1].tries)
    assert.same({ queued = 0, leased = 4, done = 0, failed = 0, seen = 4 }, q:stats())
    assert.same({}, b:lease(10, core.now())) -- nothing left to take
    -- done, with a push (deduplicated) in the same step
    local rec = require("scatter.queue").record("http://a.test/new", nil, "t")
    local dup = require("scatter.queue").record("http://a.test/one", nil, "t")
    assert.equal(1, b:complete(got[1], { rec, dup }, nil))
    -- retry: queued again, not due before its time
    assert.is_true(b:fail(got[2], "boom", core.now() + 30))
    -- failed for good, keeping its error
    assert.is_true(b:fail(got[3], "gone for good", nil))
    assert.same({ queued = 2, leased = 1, done = 1, failed = 1, seen = 5 }, q:stats())
    local now = core.now()
    local next_up = assert(b:lease(10, now))
    assert.equal(1, #next_up)
    assert.equal("http://a.test/new", next_up[1].url)
    local due = b:next_due(now)
    assert.truthy(due > 25 and due <= 30, tostring(due))
    local later = assert(b:lease(10, now + 31))
    assert.equal("http://a.test/one", later[1].url)
    assert.equal(2, later[1].tries)
    assert.equal("boom", later[1].err)
    -- a done or failed item cannot be finished twice
    assert.is_nil(b:complete(got[1], {}, nil))
    local failed = {}
    for it in q:failed() do failed[#failed + 1] = it.url .. " " .. it.err end
    assert.same({ "http://a.test/two gone for good" }, failed)
    assert.equal(1, q:retry_failed())
    assert.same({ queued = 1, leased = 3, done = 1, failed = 0, seen = 5 }, q:stats())
    q:close()
  end)

  it("keeps everything across a reopen; items leased by the last process are queued again", function()
    local path = dir .. "/q.db"
    local q = open(path)
    q:push_many({ "http://a.test/1", "http://a.test/2", "http://a.test/3" })
    local got = q.b:lease(2, core.now())
    q.b:complete(got[1], {}, nil)
    q:flush()
    -- a process that dies holding leases: simulated by a child that leases and is killed
    local script = env.script("lease.lua", ([[
      local scatter = require("scatter")
      local q = assert(scatter.queue{ path = %q })
      assert(#q.b:lease(5, scatter.now()) == 2)
      q:flush()
      io.open(%q, "w"):close()
      while true do end
    ]]):format(path, dir .. "/leased"))
    q:close()
    local child = env.spawn({ env.build_dir() .. "/scatter", "run", script })
    env.wait_file(dir .. "/leased", child)
    -- while it runs the file is held; readers still see its commits
    local busy, err = scatter.queue({ path = path })
    assert.is_nil(busy)
    assert.matches("in use by another process %(pid " .. child.pid .. "%)", err)
    local ro = open(path, { readonly = true })
    assert.same({ queued = 0, leased = 2, done = 1, failed = 0, seen = 3 }, ro:stats())
    assert.has_error(function() ro:push("http://a.test/4") end)
    ro:close()
    child:stop(0)
    q = open(path)
    assert.same({ queued = 2, leased = 0, done = 1, failed = 0, seen = 3 }, q:stats())
    local again = q.b:lease(5, core.now())
    assert.equal(2, #again)
    -- the try lost with its process counts; the one given back by close does not
    assert.same({ 2, 2 }, { again[1].tries, again[2].tries })
    q:close()
  end)

  it("cuts the output's uncommitted tail at the next attach", function()
    local path, out = dir .. "/q.db", dir .. "/out.jsonl"
    local q = open(path)
    q:push_many({ "http://a.test/1", "http://a.test/2" })
    assert(q.b:output(out))
    local got = q.b:lease(2, core.now())
    q.b:complete(got[1], {}, '{"n":1}')
    q:flush()
    q.b:complete(got[2], {}, '{"n":2}')
    q:close()
    assert.equal('{"n":1}\n{"n":2}\n', env.read_file(out))
    -- a crash between the output write and its commit leaves a tail
    local f = io.open(out, "a")
    f:write('{"n":3, "half')
    f:close()
    q = open(path)
    assert(q.b:output(out))
    assert.equal('{"n":1}\n{"n":2}\n', env.read_file(out))
    q:close()
  end)

  it("syncs a group's output off the loop; completions meanwhile commit with the next group", function()
    local path, out = dir .. "/q.db", dir .. "/out.jsonl"
    local q = open(path, { commit_ms = 60000 })
    local b = q.b
    q:push_many({ "http://a.test/1", "http://a.test/2", "http://a.test/3" })
    assert(b:output(out))
    local got = b:lease(3, core.now())
    local commits = 0
    local function counted() commits = commits + 1 end
    b:on_commit(counted, true)
    scatter.run(function()
      assert.equal(1, b:complete(got[1], { assert(queue_record("http://a.test/1a")) }, '{"n":1}'))
      assert.is_true(b:commit_soon())
      assert.is_true(b:committing())
      assert.equal(1, b:unsettled()) -- (got[1] until its commit lands)
      -- sealed: got[2]'s pushes and line wait for the next group
      local later
      assert.equal(0, b:complete(got[2], { assert(queue_record("http://a.test/2a")),
        assert(queue_record("http://a.test/1a")) }, '{"n":2}', function(n) later = n end))
      assert.equal(2, b:unsettled())
      assert.equal('{"n":1}\n', env.read_file(out)) -- (written, not yet committed)
      for _ = 1, 500 do
        if not b:committing() then break end
        scatter.sleep(0.01)
      end
      assert.is_false(b:committing())
      assert.equal(1, commits)
      assert.equal(1, later) -- 2a new, 1a a duplicate
      assert.equal(1, b:unsettled())
      -- a flush while sealed finishes that group at once, then the next
      b:complete(got[3], {}, '{"n":3}', function() end)
      assert.is_true(b:commit_soon())
      assert.is_true(b:flush())
      assert.is_false(b:committing())
      assert.equal(0, b:unsettled())
    end)
    b:on_commit(counted, false)
    assert.equal('{"n":1}\n{"n":2}\n{"n":3}\n', env.read_file(out))
    assert.same({ queued = 2, leased = 0, done = 3, failed = 0, seen = 5 }, q:stats())
    q:close()
    -- and it was all committed: a reopen sees the same
    q = open(path)
    assert.same({ queued = 2, leased = 0, done = 3, failed = 0, seen = 5 }, q:stats())
    q:close()
  end)

  it("keeps every line when a flush finishes a sealed group whose waiting completions seal the next", function()
    local path, out = dir .. "/q.db", dir .. "/out.jsonl"
    local q = open(path, { commit_ms = 0 }) -- (every write commits: the waiting ones seal at once)
    local b = q.b
    q:push_many({ "http://a.test/1", "http://a.test/2" })
    assert(b:output(out))
    local got = b:lease(2, core.now())
    scatter.run(function()
      assert(b:complete(got[1], {}, '{"n":1}'))
      assert.is_true(b:committing())
      assert.equal(0, b:complete(got[2], {}, '{"n":2}', function() end))
      assert.is_true(b:flush())
      assert.is_false(b:committing())
    end)
    q:close()
    q = open(path)
    assert(q.b:output(out)) -- (an uncommitted tail would be cut here)
    assert.equal('{"n":1}\n{"n":2}\n', env.read_file(out))
    assert.same({ queued = 0, leased = 0, done = 2, failed = 0, seen = 2 }, q:stats())
    q:close()
  end)

  it("finishes a sealed group first when a completion without later wants its count now", function()
    local path, out = dir .. "/q.db", dir .. "/out.jsonl"
    local q = open(path, { commit_ms = 60000 })
    local b = q.b
    q:push_many({ "http://a.test/1", "http://a.test/2" })
    assert(b:output(out))
    local got = b:lease(2, core.now())
    local commits = 0
    local function counted() commits = commits + 1 end
    b:on_commit(counted, true)
    scatter.run(function()
      assert.equal(1, b:complete(got[1], { assert(queue_record("http://a.test/x")) }, '{"n":1}'))
      assert.is_true(b:commit_soon())
      assert.is_true(b:committing())
      -- no later: the count must be known now, so the sealed group is
      -- finished (a blocking sync) and this completion joins a new one
      assert.equal(1, b:complete(got[2], { assert(queue_record("http://a.test/x")),
        assert(queue_record("http://a.test/y")) }, '{"n":2}'))
      assert.is_false(b:committing())
      assert.equal(1, commits)
      assert.equal(1, b:unsettled()) -- (got[2], in the open group)
    end)
    b:on_commit(counted, false)
    assert.equal('{"n":1}\n', env.read_file(out)) -- (got[2]'s line waits for its group)
    q:close()
    q = open(path)
    assert(q.b:output(out))
    assert.equal('{"n":1}\n{"n":2}\n', env.read_file(out))
    assert.same({ queued = 2, leased = 0, done = 2, failed = 0, seen = 4 }, q:stats())
    q:close()
  end)

  it("rolls a group back when its background sync fails, naming the output; nothing is lost", function()
    local path, out, so = dir .. "/q.db", dir .. "/out.jsonl", dir .. "/fail_sync.so"
    assert.is_true(os.execute("cc -shared -fPIC -O2 -o " .. so .. " bench/slow_sync.c -ldl") == 0)
    local script = env.script("failsync.lua", ([[
      local scatter = require("scatter")
      local core = require("scatter.core")
      local q = assert(scatter.queue{ path = %q, commit_ms = 60000 })
      q:push_many({ "http://a.test/1", "http://a.test/2" })
      q:flush()
      local b = q.b
      assert(b:output(%q))
      scatter.run(function()
        local got = b:lease(2, core.now())
        assert(b:complete(got[1], {}, '{"n":1}'))
        assert(b:commit_soon())
        for _ = 1, 500 do
          if not b:committing() then break end
          scatter.sleep(0.01)
        end
        print("complete", b:complete(got[2], {}, '{"n":2}', function() end))
      end)
      print("close", b:close())
    ]]):format(path, out))
    local pre = (env.asan_preload and env.asan_preload .. ":" or "") .. so
    local p = io.popen("SLOW_SYNC_FAIL=/out.jsonl LD_PRELOAD=" .. env.shell_quote(pre) .. " luajit " .. script
      .. " 2>&1; echo rc=$?")
    local got = p:read("*a")
    p:close()
    assert.matches("complete\tnil\toutput " .. out:gsub("%p", "%%%0") .. ": fdatasync: i/o error", got)
    assert.matches("close\ttrue", got)
    assert.matches("rc=0", got)
    assert.equal("", env.read_file(out)) -- (cut back to the committed length)
    local q = open(path)
    assert.same({ queued = 2, leased = 0, done = 0, failed = 0, seen = 2 }, q:stats())
    q:close()
  end)

  it("refuses bad input with an error naming it", function()
    local q = open(dir .. "/q.db")
    assert.has_error(function() q:push("ftp://a.test/x") end,
      'queue:push: "ftp://a.test/x": unsupported scheme \'ftp\' (http or https only)')
    assert.has_error(function() q:push("/relative") end, 'queue:push: "/relative": not an absolute http(s) URL')
    assert.has_error(function() q:push("http://a.test/", { meta = { f = print } }) end,
      "queue:push: meta cannot be encoded as JSON: Cannot serialise function: type not supported")
    -- (cjson copies a string's bytes: a latin-1 name made a line JSON readers refuse)
    assert.has_error(function() q:push("http://a.test/", { meta = { who = { name = "Jos\233" } } }) end,
      "queue:push: meta cannot be encoded as JSON: a string that is not UTF-8 (who.name, byte 4): "
      .. "JSON holds text; encode binary data first (as base64 or hex)")
    assert.has_error(function() q:push("http://a.test/", { priority = 1.5 }) end,
      "queue:push: priority must be an integer from -2^52 to 2^52, got 1.5")
    assert.has_error(function() q:push_many({ "http://a.test/ok", 42 }) end,
      "queue:push_many: item 2: URL string expected, got number")
    assert.equal(0, q:stats().seen) -- push_many checks all before it writes
    local ok, err = q.b:output(dir .. "/no/such/dir/out.jsonl")
    assert.is_nil(ok)
    assert.matches("output .*/no/such/dir/out.jsonl: No such file or directory", err)
    q:close()
    assert.has_error(function() q:push("http://a.test/") end, "queue:push: the queue is closed")

    env.write_file(dir .. "/foreign.txt", "name,price\nshoe,12\n")
    local bad, berr = scatter.queue({ path = dir .. "/foreign.txt" })
    assert.is_nil(bad)
    assert.matches("foreign.txt: not a SQLite database", berr)

    local other = assert(core.sqlite_open(dir .. "/other.db"))
    assert(other:exec("CREATE TABLE songs(title)"))
    other:close()
    bad, berr = scatter.queue({ path = dir .. "/other.db" })
    assert.is_nil(bad)
    assert.matches("a SQLite database but not a scatter queue", berr)

    -- a real queue file, then its pages overwritten with garbage
    local cq = open(dir .. "/corrupt.db")
    local list = {}
    for i = 1, 2000 do list[i] = "http://a.test/" .. i end
    cq:push_many(list)
    cq:close()
    -- every page after the header, and the WAL's too when close left one
    -- (its newer copies of the pages would hide the damage)
    for _, name in ipairs({ "/corrupt.db", "/corrupt.db-wal" }) do
      local f = io.open(dir .. name, "r+b")
      if f then
        local size = f:seek("end")
        f:seek("set", 100)
        f:write(("\255"):rep(size - 100))
        f:close()
      end
    end
    bad, berr = scatter.queue({ path = dir .. "/corrupt.db" })
    assert.is_nil(bad)
    assert.matches("corrupt", berr)

    bad, berr = scatter.queue({ redis = "redis://127.0.0.1:1/0" })
    if not package.searchpath("scatter.queue_redis", package.path) then
      assert.is_nil(bad)
      assert.matches("no Redis backend", berr)
    elseif bad then
      bad:close()
    end
  end)

  it("refuses at open a queue file damaged deep inside, naming the file", function()
    local path = dir .. "/deep.db"
    local q = open(path)
    local list = {}
    for i = 1, 20000 do list[i] = "http://a.test/page/" .. i end
    q:push_many(list)
    q:flush()
    -- every page in the WAL copied into the file first: the WAL's newer
    -- copies of the pages would hide damage done to the file
    assert(q.b.db:exec("PRAGMA wal_checkpoint(TRUNCATE)"))
    -- the key index's pages in the middle of the file: open's count of the
    -- items (a scan of the table) never reads them
    local st = assert(q.b.db:prepare("SELECT pageno FROM dbstat WHERE name = 'sqlite_autoindex_items_1' "
      .. "AND pagetype = 'leaf' ORDER BY pageno"))
    st:bind()
    local pages = {}
    while true do
      local r = st:step()
      assert.is_not_nil(r)
      if not r then break end
      pages[#pages + 1] = r[1]
    end
    st:finalize()
    q:close()
    assert.is_true(#pages > 20)
    local wal = io.open(path .. "-wal", "rb") -- the last close checkpoints and removes it
    assert.is_true(wal == nil or wal:seek("end") == 0)
    if wal then wal:close() end
    local f = assert(io.open(path, "r+b"))
    for i = math.floor(#pages / 2) - 2, math.floor(#pages / 2) + 2 do
      f:seek("set", (pages[i] - 1) * 4096)
      f:write(("\7"):rep(4096))
    end
    f:close()
    local bad, err = scatter.queue({ path = path })
    assert.is_nil(bad)
    assert.matches("queue " .. path:gsub("%p", "%%%0") .. ": corrupt", err)
    assert.matches("quick_check", err)
    -- a reader is refused the same way
    bad, err = scatter.queue({ path = path, readonly = true })
    assert.is_nil(bad)
    assert.matches("corrupt", err)
  end)

  it("exports every item as a JSON line", function()
    local q = open(dir .. "/q.db")
    q:push("http://a.test/1", { meta = { depth = 2 }, headers = { ["X-A"] = "b" } })
    local fh = io.open(dir .. "/items.jsonl", "w")
    assert.equal(1, q:export(fh))
    fh:close()
    local row = require("cjson").decode((env.read_file(dir .. "/items.jsonl")))
    assert.equal("http://a.test/1", row.url)
    assert.equal("queued", row.state)
    assert.same({ depth = 2 }, row.meta)
    assert.same({ ["X-A"] = "b" }, row.headers)
    q:close()
  end)

  it("keeps every number of a meta exact, through the file and the export", function()
    -- (cjson writes 14 significant digits: a 16-digit id came back another)
    local meta = { id = 1234567890123456, ratio = 1 / 3, big = 2 ^ 60, nest = { 9007199254740993 - 1, 0.1 } }
    local q = open(dir .. "/q.db")
    q:push("http://a.test/1", { meta = meta })
    q:close()
    q = open(dir .. "/q.db")
    local it = require("scatter.queue").item(q.b:lease(1, core.now())[1])
    assert.same(meta, it.meta)
    local fh = io.open(dir .. "/items.jsonl", "w")
    assert.equal(1, q:export(fh))
    fh:close()
    assert.same(meta, require("cjson").decode((env.read_file(dir .. "/items.jsonl"))).meta)
    q:close()
  end)

  it("works in memory the same way", function()
    local q = assert(scatter.queue{})
    assert.is_true(q:push("http://a.test/1"))
    assert.is_false(q:push("http://a.test/1#x"))
    assert.equal(1, #q.b:lease(5, core.now()))
    assert.same({ queued = 0, leased = 1, done = 0, failed = 0, seen = 1 }, q:stats())
    q:close()
  end)

  it("is shown, listed, requeued and exported by `scatter queue`", function()
    local path = dir .. "/q.db"
    local q = open(path)
    q:push_many({ "http://a.test/1", "http://a.test/2", { url = "http://a.test/3", meta = { d = 1 } } })
    local got = q.b:lease(3, core.now())
    q.b:complete(got[1], {}, nil)
    q.b:fail(got[3], "timeout: last error: proxy_refused", nil)
    q:close()
    local cjson = require("cjson")
    local rc, out, err = env.cli("queue stats " .. path .. " --json")
    assert.equal(0, rc, err)
    assert.same({ queued = 1, leased = 0, done = 1, failed = 1, seen = 3 }, cjson.decode(out))
    rc, out = env.cli("queue stats " .. path)
    assert.equal(0, rc)
    assert.matches("queued%s+1\nleased%s+0\ndone%s+1\nfailed%s+1\nseen%s+3\n", out)
    rc, out = env.cli("queue failed " .. path)
    assert.equal(0, rc)
    assert.equal("1\thttp://a.test/3\ttimeout: last error: proxy_refused\n", out)
    rc, out = env.cli("queue failed " .. path .. " --json")
    assert.equal(0, rc)
    local row = cjson.decode(out)
    assert.same({ d = 1 }, row.meta)
    assert.equal(1, row.tries)
    rc, out, err = env.cli("queue export " .. path .. " " .. dir .. "/items.jsonl")
    assert.equal("", out)
    assert.equal(0, rc, err)
    assert.matches("exported 3 items", err)
    local states = {}
    for line in env.read_file(dir .. "/items.jsonl"):gmatch("[^\n]+") do
      local r = cjson.decode(line)
      states[r.url] = r.state
    end
    assert.same({ ["http://a.test/1"] = "done", ["http://a.test/2"] = "queued", ["http://a.test/3"] = "failed" }, states)
    rc, out = env.cli("queue retry " .. path)
    assert.equal(0, rc)
    assert.equal("1 failed items queued again\n", out)
    rc, out = env.cli("queue stats " .. path .. " --json")
    assert.equal(0, rc)
    assert.same({ queued = 2, leased = 0, done = 1, failed = 0, seen = 3 }, cjson.decode(out))
    -- bad command lines and bad queues
    local bad_out
    rc, bad_out, err = env.cli("queue frobnicate " .. path)
    assert.equal("", bad_out)
    assert.equal(2, rc)
    assert.matches("unknown action 'frobnicate'", err)
    rc, out, err = env.cli("queue export " .. path)
    assert.equal("", out)
    assert.equal(2, rc)
    assert.matches("give QUEUE and FILE", err)
    rc, bad_out, err = env.cli("queue stats " .. dir .. "/missing.db")
    assert.equal("", bad_out)
    assert.equal(1, rc)
    assert.matches("missing.db: no such queue file", err)
    env.write_file(dir .. "/notes.txt", "not a queue")
    rc, bad_out, err = env.cli("queue stats " .. dir .. "/notes.txt")
    assert.equal("", bad_out)
    assert.equal(1, rc)
    assert.matches("not a SQLite database", err)
    rc, bad_out, err = env.cli("queue export " .. path .. " " .. dir .. "/no/dir/x.jsonl")
    assert.equal("", bad_out)
    assert.equal(1, rc)
    assert.matches("No such file or directory", err)
    assert.equal("", bad_out)
    rc, out = env.cli("help")
    assert.equal(0, rc)
    assert.matches("queue%s+show, list, requeue or export a crawl queue", out)
  end)

  it("keeps the last pushes of a script that ends without close, under scatter run and plain luajit", function()
    local path = dir .. "/q.db"
    local script = env.script("noclose.lua", ([[
      local scatter = require("scatter")
      local q = assert(scatter.queue{ path = %q, commit_ms = 60000 })
      for i = 1, 10 do q:push("http://a.test/" .. (... or "") .. i) end
    ]]):format(path))
    local rc, _, err = env.cli("run " .. script .. " run")
    assert.equal(0, rc, err)
    -- the ASan build's module needs its runtime preloaded into luajit
    local pre = env.asan_preload and ("LD_PRELOAD=" .. env.shell_quote(env.asan_preload) .. " ") or ""
    local p = io.popen(pre .. "luajit " .. script .. " plain 2>&1; echo rc=$?")
    local out = p:read("*a")
    p:close()
    assert.matches("rc=0", out)
    local q = open(path)
    assert.equal(20, q:stats().queued)
    q:close()
  end)
end)
