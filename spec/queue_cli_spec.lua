-- `scatter queue` and scatter.queue{} given what a user gets wrong: options
-- misspelt, a directory or someone else's file for a queue, an export onto
-- the queue's own files or a full disk, a damaged row, a Redis queue name
-- that does not exist. Each is refused with an error naming it, and the
-- queue (or the other file) is left as it was.
local env = require("support.env")
local scatter = require("scatter")
local core = require("scatter.core")
local RS = require("support.redis")

local function md5(path)
  local p = io.popen("md5sum " .. path)
  local s = p:read("*a")
  p:close()
  return s:match("^(%x+)")
end

-- Exit code of a shell command line (its own redirections hold: the
-- subshell's output goes nowhere else).
local function sh(cmd)
  local p = io.popen("(" .. cmd .. ") >/dev/null 2>&1; echo $?")
  local rc = tonumber(p:read("*a"):match("(%d+)"))
  p:close()
  return rc
end

describe("scatter queue, bad input", function()
  local dir
  before_each(function() dir = env.tmpdir() end)
  after_each(function() env.cleanup() end)

  local function make(n)
    local path = dir .. "/q.db"
    local q = assert(scatter.queue({ path = path }))
    local urls = {}
    for i = 1, n do urls[i] = "http://a.test/" .. i end
    q:push_many(urls)
    q:close()
    return path
  end

  it("refuses misspelt and mistyped options instead of giving an in-memory queue", function()
    local cases = {
      { { pth = dir .. "/x.db" }, "unknown option 'pth'" },
      { { commit_ms = "x" }, "commit_ms must be a number of milliseconds >= 0, got 'x'" },
      { { path = dir .. "/x.db", cache_kib = -1 }, "cache_kib must be a number of KiB >= 1, got %-1" },
      { { cache_kib = "big" }, "cache_kib must be" },
      { { commit_items = 1.5 }, "commit_items must be an integer >= 1" },
      { { path = "" }, "path must be a non%-empty file name" },
      { { path = dir .. "/x.db", lease = 5 }, "option 'lease' is for a Redis queue" },
      { { redis = "redis://127.0.0.1:1/0", name = "n", commit_ms = 5 }, "option 'commit_ms' is for a queue file" },
      { { readonly = 1 }, "readonly must be true or false" },
    }
    for _, c in ipairs(cases) do
      local q, err = scatter.queue(c[1])
      assert.is_nil(q)
      assert.matches(c[2], err)
    end
    -- nothing was made on disk by a refused open
    assert.is_nil(io.open(dir .. "/x.db"))
    assert.is_nil(io.open(dir .. "/x.db-lock"))
  end)

  it("says a directory, an empty file or someone else's SQLite file is not a queue, and changes none", function()
    os.execute("mkdir " .. dir .. "/d")
    local rc, out, err = env.cli("queue stats " .. dir .. "/d")
    assert.equal(1, rc)
    assert.equal("", out)
    assert.matches("d: a directory, not a queue file", err)
    local q, qerr = scatter.queue({ path = dir .. "/d" })
    assert.is_nil(q)
    assert.matches("a directory, not a queue file", qerr)
    assert.is_nil(io.open(dir .. "/d-lock"))

    env.write_file(dir .. "/empty.db", "")
    for _, action in ipairs({ "stats", "retry" }) do
      rc, out, err = env.cli("queue " .. action .. " " .. dir .. "/empty.db")
      assert.equal(1, rc)
      assert.equal("", out)
      assert.matches("empty.db: an empty file, not a scatter queue", err)
    end

    -- a real SQLite database with a table of its own (made by our binding)
    local db = assert(core.sqlite_open(dir .. "/foreign.db", false))
    assert(db:exec("CREATE TABLE t(x); INSERT INTO t VALUES(1)"))
    db:close()
    local before = md5(dir .. "/foreign.db")
    for _, action in ipairs({ "stats", "failed", "retry" }) do
      rc, out, err = env.cli("queue " .. action .. " " .. dir .. "/foreign.db")
      assert.equal(1, rc)
      assert.equal("", out)
      assert.matches("a SQLite database but not a scatter queue %(no meta table%)", err)
    end
    q, qerr = scatter.queue({ path = dir .. "/foreign.db" })
    assert.is_nil(q)
    assert.matches("not a scatter queue", qerr)
    -- refused before anything was written: not switched to WAL, no lock left
    assert.equal(before, md5(dir .. "/foreign.db"))
    assert.is_nil(io.open(dir .. "/foreign.db-wal"))
    assert.is_nil(io.open(dir .. "/foreign.db-lock"))
  end)

  it("refuses to export onto the queue's own files, and the queue stays whole", function()
    local path = make(20)
    os.execute("ln -s " .. path .. " " .. dir .. "/link.db")
    for _, target in ipairs({ path, path .. "-wal", path .. "-shm", path .. "-lock", dir .. "/link.db",
                              dir .. "/./q.db" }) do
      local rc, out, err = env.cli("queue export " .. path .. " " .. target)
      assert.equal(1, rc, target)
      assert.equal("", out)
      assert.matches("that is the queue's own file", err)
    end
    local rc, out = env.cli("queue stats " .. path .. " --json")
    assert.equal(0, rc)
    assert.same({ queued = 20, leased = 0, done = 0, failed = 0, seen = 20 }, require("cjson").decode(out))
  end)

  it("fails, naming the file, when the export or standard output cannot be written", function()
    local path = make(5)
    local rc, _, err = env.cli("queue export " .. path .. " /dev/full")
    assert.equal(1, rc)
    assert.equal("scatter queue: /dev/full: No space left on device\n", err)
    local scatter_bin = env.build_dir() .. "/scatter"
    -- (a shell line of its own: env.cli sends standard output to a file)
    assert.equal(1, sh(scatter_bin .. " queue export " .. path .. " - >/dev/full"))
    assert.equal(1, sh(scatter_bin .. " queue stats " .. path .. " >/dev/full"))
    assert.equal(1, sh(scatter_bin .. " queue stats " .. path .. " --json >/dev/full"))
    assert.equal(0, sh(scatter_bin .. " queue stats " .. path .. " >/dev/null"))
  end)

  it("names a damaged row in an export and leaves no half file behind", function()
    local path = make(30)
    local db = assert(core.sqlite_open(path, false))
    assert(db:exec("UPDATE items SET meta = 'not json' WHERE url = 'http://a.test/17'"))
    db:close()
    local rc, out, err = env.cli("queue export " .. path .. " " .. dir .. "/items.jsonl")
    assert.equal(1, rc)
    assert.equal("", out)
    assert.matches("scatter queue: export: item %d+ %(http://a.test/17%): meta is not JSON", err)
    assert.is_nil(io.open(dir .. "/items.jsonl"))
    -- the rest of the queue still reads
    rc = env.cli("queue stats " .. path)
    assert.equal(0, rc)
  end)

  it("says a Redis queue needs --name, and that a name nothing was pushed to is no queue", function()
    if not RS.available() then
      pending("redis-server is not installed")
      return
    end
    local srv = RS.start()
    local ok, perr = pcall(function()
      local rc, out, err = env.cli("queue stats " .. srv.url)
      assert.equal(1, rc)
      assert.equal("", out)
      assert.matches("a Redis queue needs %-%-name NAME", err)
      rc, out, err = env.cli("queue stats " .. srv.url .. " --name shp")
      assert.equal(1, rc)
      assert.equal("", out)
      assert.matches("no queue named 'shp' there %(nothing was ever pushed to it%)", err)
      local q = assert(scatter.queue({ redis = srv.url, name = "shop" }))
      q:push("http://a.test/1")
      q:close()
      rc, out, err = env.cli("queue stats " .. srv.url .. " --name shop --json")
      assert.equal(0, rc, err)
      assert.same({ queued = 1, leased = 0, done = 0, failed = 0, seen = 1 }, require("cjson").decode(out))
    end)
    srv:stop()
    assert(ok, perr)
  end)
end)
