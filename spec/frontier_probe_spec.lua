-- The embedded crawl frontier used as a careless user would (found by
-- probing): lists with holes, an output file named another way on resume.
-- Each case failed before its fix: an item lost without a word, a line
-- written twice.
local env = require("support.env")
local scatter = require("scatter")

describe("frontier, probed as a user", function()
  local dir

  before_each(function() dir = env.tmpdir() end)
  teardown(function() env.cleanup() end)

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
end)
