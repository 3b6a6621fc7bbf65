-- scatter.links, scatter.url.join and scatter.url.canonical: an HTML5
-- parser's view of a page's links, resolved and canonical.
local scatter = require("scatter")

local function page(url, body) return { url = url, body = body } end

describe("scatter.links", function()
  it("returns absolute canonical http(s) links, each once, in document order", function()
    local resp = page("http://Shop.Example/cat/shoes.html?p=1", [[
      <html><body>
        <a href="item1.html#reviews">one</a>
        <a href=" ../about.html ">about</a>
        <A HREF="//CDN.Example:80/img">cdn</A>
        <a href="https://shop.example:443/secure">secure</a>
        <a href="item1.html">one again</a>
        <a href="#top">top</a>
        <a href="mailto:sales@shop.example">mail</a>
        <a href="javascript:void(0)">js</a>
        <a href="ftp://files.shop.example/x">ftp</a>
        <a href="?p=2">next</a>
        <a>no href</a>
        <map><area href="/map/area1" alt=""></map>
        <p><a href="deep.html">unclosed <b>markup
    ]])
    assert.same({
      "http://shop.example/cat/item1.html",
      "http://shop.example/about.html",
      "http://cdn.example/img",
      "https://shop.example/secure",
      "http://shop.example/cat/shoes.html?p=1", -- #top: this page itself
      "http://shop.example/cat/shoes.html?p=2",
      "http://shop.example/map/area1",
      "http://shop.example/cat/deep.html",
    }, scatter.links(resp))
  end)

  it("honours <base href>", function()
    local resp = page("http://a.example/x/y.html",
      '<html><head><base href="http://b.example/base/"></head><body><a href="z.html">z</a>'
      .. '<a href="/root">r</a></body></html>')
    assert.same({ "http://b.example/base/z.html", "http://b.example/root" }, scatter.links(resp))
    local rel = page("http://a.example/x/y.html", '<base href="/other/"><a href="z">z</a>')
    assert.same({ "http://a.example/other/z" }, scatter.links(rel))
  end)

  it("filters by host and by patterns", function()
    local resp = page("http://a.example/", '<a href="/p/1">1</a><a href="http://b.example/p/2">2</a>'
      .. '<a href="/p/3?print=1">3</a><a href="/q/4">4</a>')
    assert.same({ "http://a.example/p/1", "http://a.example/p/3?print=1", "http://a.example/q/4" },
      scatter.links(resp, { same_host = true }))
    assert.same({ "http://a.example/p/1", "http://b.example/p/2" },
      scatter.links(resp, { match = "/p/", exclude = { "print=" } }))
    assert.same({}, scatter.links(page("http://a.example/", "")))
    assert.same({}, scatter.links(page("http://a.example/", "\0\255<<<a href=")))
  end)

  -- (Gumbo's time grows with the square of the depth: 10^4 levels take a
  -- second, so this stays at what real pages reach)
  it("survives a deeply nested document", function()
    local body = ("<div>"):rep(3000) .. '<a href="/deep">d</a>'
    assert.same({ "http://a.example/deep" }, scatter.links(page("http://a.example/", body)))
  end)

  -- 200,000 levels took about a minute, holding the loop; the bound is the
  -- parse's own time (parse_timeout), checked where Gumbo allocates
  it("gives up on a hostile nesting depth after parse_timeout, with the page in the error", function()
    local body = ("<div>"):rep(200000) .. '<a href="/deep">d</a>'
    local links, err = scatter.links(page("http://a.example/deep", body), { parse_timeout = 0.2 })
    assert.is_nil(links)
    assert.truthy(err:find("^scatter.links: http://a.example/deep: the HTML took over 0.2 s to parse"), err)
    -- a big flat page with as many tags is parsed whole under the same bound
    local flat = ('<p><a href="/x">x</a></p>'):rep(60000)
    assert.same({ "http://a.example/x" }, scatter.links(page("http://a.example/", flat), { parse_timeout = 30 }))
    -- and the parser is still sound after an abandoned parse
    assert.same({ "http://a.example/ok" }, scatter.links(page("http://a.example/", '<a href="/ok">k</a>')))
    assert.has_error(function() scatter.links(page("http://a/", ""), { parse_timeout = 0 }) end,
      "scatter.links: parse_timeout must be a number of seconds in (0, 3600], got 0")
  end)

  it("refuses what is not a response", function()
    assert.has_error(function() scatter.links("<a href=x>") end,
      "scatter.links: bad argument #1 (a response with url and body expected)")
    assert.has_error(function() scatter.links(page("http://a/", ""), { match = 3 }) end,
      "scatter.links: match must be a Lua pattern or a list of them")
    -- a misspelt option, a wrong kind, a bad pattern: named, before any
    -- link (a bad pattern raised from inside links.lua at the first link)
    local resp = page("http://a/", "<a href=x>")
    assert.has_error(function() scatter.links(resp, { same_hots = true }) end, "scatter.links: unknown option 'same_hots'")
    assert.has_error(function() scatter.links(resp, { same_host = "yes" }) end,
      "scatter.links: same_host must be a boolean, got string")
    assert.has_error(function() scatter.links(resp, { match = "[" }) end,
      [[scatter.links: match: bad Lua pattern "[" (malformed pattern (missing ']'))]])
    assert.has_error(function() scatter.links(resp, { exclude = { "ok", "%" } }) end,
      [[scatter.links: exclude: bad Lua pattern "%" (malformed pattern (ends with '%'))]])
  end)

  it("keeps a link however it is written: spaces, non-ASCII, wrapped over lines", function()
    -- (an absolute href with a space was dropped, a relative one kept)
    local resp = page("http://a.example/d/", [[
      <a href="http://a.example/a b.pdf">1</a><a href="c d.pdf">2</a>
      <a href="http://a.example/caf]] .. "\195\169" .. [[">3</a><a href="/x
/y">4</a><a href="	../z
">5</a>]])
    assert.same({ "http://a.example/a%20b.pdf", "http://a.example/d/c%20d.pdf", "http://a.example/caf%C3%A9",
      "http://a.example/x/y", "http://a.example/z" }, scatter.links(resp))
  end)
end)

describe("scatter.url", function()
  it("joins as a browser does", function()
    local base = "http://a.example/b/c/d;p?q"
    for ref, want in pairs({
      ["g"] = "http://a.example/b/c/g", ["./g"] = "http://a.example/b/c/g", ["g/"] = "http://a.example/b/c/g/",
      ["/g"] = "http://a.example/g", ["//g.example"] = "http://g.example/", ["?y"] = "http://a.example/b/c/d;p?y",
      ["g?y#s"] = "http://a.example/b/c/g?y#s", ["../g"] = "http://a.example/b/g", ["../../../g"] = "http://a.example/g",
      ["https://x.example/"] = "https://x.example/", ["#s"] = "http://a.example/b/c/d;p?q#s",
      [""] = "http://a.example/b/c/d;p?q",
    }) do
      assert.equal(want, scatter.url.join(base, ref), ref)
    end
    -- what a browser strips or removes before it parses an href
    assert.equal("http://b.example/", scatter.url.join(base, " http://b.example/ "))
    assert.equal("http://a.example/g/h", scatter.url.join(base, "\t/g\n/h\r\n"))
    assert.equal("http://a.example/a%20b", scatter.url.join(base, "http://a.example/a b"))
    local u, err = scatter.url.join("http://a.example/", "mailto:x@y")
    assert.is_nil(u)
    assert.truthy(err)
    u, err = scatter.url.join("not a url", "x")
    assert.is_nil(u)
    assert.equal("url contains spaces or control characters", err)
  end)

  it("makes the canonical form the dedup key uses", function()
    assert.equal("http://a.example/x", scatter.url.canonical("HTTP://A.Example:80/x#frag"))
    assert.equal("https://a.example/", scatter.url.canonical("https://a.example:443"))
    assert.equal("http://a.example:8080/a/c", scatter.url.canonical("http://a.example:8080/a/b/../c"))
    assert.equal("http://a.example/P?Q=1", scatter.url.canonical("http://a.example/P?Q=1"))
    -- one page however its link wrote it: raw UTF-8, lower or upper escapes
    -- (a seed pushed raw and the same page found by scatter.links were two)
    local cafe = "http://a.example/caf%C3%A9?q=%2F"
    for _, v in ipairs({ "http://a.example/caf\195\169?q=%2f", "http://a.example/caf%c3%a9?q=%2F", cafe }) do
      assert.equal(cafe, scatter.url.canonical(v), v)
    end
    assert.equal("http://a.example/%zz%4", scatter.url.canonical("http://a.example/%zz%4"))
    local q = scatter.queue({})
    assert.equal(1, q:push_many({ "http://a.example/caf\195\169", "http://a.example/caf%c3%a9" }))
    assert.is_false(q:push("http://a.example/caf%C3%A9"))
    assert.equal((cafe:gsub("%?.*", "")), scatter.links(page("http://a.example/",
      '<a href="/caf\195\169">x</a>'))[1])
    q:close()
    local u, err = scatter.url.canonical("ftp://a.example/")
    assert.is_nil(u)
    assert.equal("unsupported scheme 'ftp' (http or https only)", err)
  end)
end)
