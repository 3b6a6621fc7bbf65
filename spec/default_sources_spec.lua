-- The built-in public SOCKS5 lists (config.DEFAULT_SOURCES, used when a
-- pool names neither sources nor proxies). They live on the internet, so
-- these specs run only with SCATTER_INTEGRATION=1 and are reported as
-- pending otherwise; they depend on third parties and may be flaky.
local scatter = require("scatter")
local config = require("scatter.config")
local sources = require("scatter.sources")

describe("default sources", function()
  if os.getenv("SCATTER_INTEGRATION") ~= "1" then
    pending("fetch the built-in public lists (needs the internet: SCATTER_INTEGRATION=1)")
    return
  end

  teardown(function() scatter.close_all() end)

  it("each built-in list answers with proxies", function()
    for _, url in ipairs(config.DEFAULT_SOURCES) do
      local list, err = sources.load(url)
      assert(list, err)
      assert.is_true(#list.keys > 0, url)
    end
  end)

  it("are what a pool with neither sources nor proxies uses", function()
    local pool = scatter.pool({ metrics_log_interval = 0 })
    scatter.run(function()
      -- the initial fetches end within the fetch timeout
      local deadline = scatter.now() + sources.FETCH_TIMEOUT + 10
      while pool:metrics().total_proxies == 0 and scatter.now() < deadline do scatter.sleep(0.1) end
    end)
    assert.is_true(pool:metrics().total_proxies > 0)
    pool:close()
  end)
end)
