-- Every proxy protocol of the free lists (DESIGN.md section 11) through the
-- project's farm: socks4, socks4a, http (absolute-form and CONNECT) and
-- https (TLS to the proxy), each with success, refused, handshake failure,
-- blocked and credentials; the error kinds of bad proxies.
local env = require("support.env")
local scatter = require("scatter")

describe("proxy protocols", function()
  local ng, farm, by

  local PROTOS = { "socks4", "http", "https" }
  setup(function()
    ng = env.nginx()
    local lines = {}
    for _, p in ipairs(PROTOS) do
      for _, prof in ipairs({ "good", "refuse", "handshake_fail", "block" }) do
        lines[#lines + 1] = prof .. " proto=" .. p
      end
      lines[#lines + 1] = "good proto=" .. p .. " user=alice pass=s3cr3t"
    end
    farm = env.farm(lines)
    by = {}
    for i, e in ipairs(farm.entries) do
      local key = e.proto .. "/" .. e.profile
      if by[key] and not by[key .. "+auth"] then key = key .. "+auth" end
      by[key] = farm.proxies[i]
    end
  end)

  teardown(function()
    scatter.close_all()
    env.cleanup()
  end)

  local function get(proxy, url, extra)
    local cfg = { proxies = { proxy }, metrics_log_interval = 0, proxy_ca_file = ng.ca, ca_file = ng.ca,
                  proxy_timeout = 2 }
    for k, v in pairs(extra or {}) do if k ~= "timeout" then cfg[k] = v end end
    local pool = scatter.pool(cfg)
    local resp, err = pool:get(url, { timeout = (extra or {}).timeout or 1.5 })
    pool:close()
    return resp, err
  end

  local function with_auth(addr, user, pass)
    return (addr:gsub("://", "://" .. user .. ":" .. pass .. "@", 1))
  end

  for _, p in ipairs(PROTOS) do
    describe(p, function()
      it("fetches http and https targets", function()
        local resp, err = get(by[p .. "/good"], ng.url("/small.txt"), { timeout = 10 })
        assert.is_nil(err)
        assert.equal(ng.small_text, resp.body)
        assert.equal(by[p .. "/good"], resp.proxy)
        -- https through the proxy: a tunnel (SOCKS, or CONNECT for http/https)
        resp, err = get(by[p .. "/good"], ng.tls_url("127.0.0.1", "/small.txt"), { timeout = 10 })
        assert.is_nil(err)
        assert.equal(ng.small_text, resp.body)
      end)

      it("reports a refused proxy as proxy_refused", function()
        local _, err = get(by[p .. "/refuse"], ng.url("/small.txt"))
        assert.truthy(err:match("^timeout: last error: proxy_refused: "), err)
      end)

      it("reports a broken handshake as proxy_protocol", function()
        local _, err = get(by[p .. "/handshake_fail"], ng.url("/small.txt"))
        assert.truthy(err:match("^timeout: last error: proxy_protocol: "), err)
      end)

      it("classifies a proxy's own block page like any other answer", function()
        local resp, err = get(by[p .. "/block"], ng.url("/small.txt"),
          { classifier = function() return "final" end, timeout = 10 })
        assert.is_nil(err)
        assert.equal(403, resp.status)
        assert.truthy(resp.body:find("Attention Required", 1, true))
      end)

      it("uses credentials, reports refused ones as proxy_auth, never shows them", function()
        local addr = by[p .. "/good+auth"]
        local resp, err = get(with_auth(addr, "alice", "s3cr3t"), ng.url("/small.txt"), { timeout = 10 })
        assert.is_nil(err)
        assert.equal(ng.small_text, resp.body)
        assert.falsy(resp.proxy:find("s3cr3t", 1, true))
        -- socks4 has a user id only: a wrong one is refused; http wants a password
        local wrong = p == "socks4" and with_auth(addr, "mallory", "x") or with_auth(addr, "alice", "wrong")
        local _, err2 = get(wrong, ng.url("/small.txt"))
        assert.truthy(err2:match("^timeout: last error: proxy_auth: "), err2)
        assert.falsy(err2:find("wrong", 1, true) or err2:find("mallory", 1, true))
        if p ~= "socks4" then
          local _, err3 = get(addr, ng.url("/small.txt"))
          assert.truthy(err3:match("^timeout: last error: proxy_auth: .*407"), err3)
          local _, err4 = get(with_auth(addr, "alice", "wrong"), ng.tls_url("127.0.0.1", "/small.txt"))
          assert.truthy(err4:match("^timeout: last error: proxy_auth: .*CONNECT with 407"), err4)
        end
      end)
    end)
  end

  it("verifies an https proxy's certificate (tls_error with the wrong CA)", function()
    local _, err = get(by["https/good"], ng.url("/small.txt"), { proxy_ca_file = ng.wrong_ca })
    assert.truthy(err:match("^timeout: last error: tls_error: "), err)
  end)

  describe("socks4 and names (the socks4 rule)", function()
    it("serves IP targets only with prefer_remote_dns on, with a clear error kind", function()
      local resp, err = get(by["socks4/good"], ng.host_url("foo.test", "/small.txt"))
      assert.is_nil(resp)
      assert.truthy(err:match("^timeout: last error: proxy_protocol: a socks4 proxy resolves no names"), err)
    end)

    it("resolves names locally with prefer_remote_dns = false", function()
      local resp, err = get(by["socks4/good"], ng.host_url("localhost", "/small.txt?local4"),
        { prefer_remote_dns = false, timeout = 10 })
      assert.is_nil(err)
      assert.equal(ng.small_text, resp.body)
      local seen
      for _, e in ipairs(farm.log_lines()) do
        if e.port == farm.ports[1] and e.atyp == 1 and e.host == "127.0.0.1" then seen = true end
      end
      assert.is_true(seen)
    end)

    it("lets a socks4a proxy resolve names itself", function()
      local addr = by["socks4/good"]:gsub("^socks4://", "socks4a://")
      local resp, err = get(addr, ng.host_url("foo.test", "/small.txt"), { timeout = 10 })
      assert.is_nil(err)
      assert.equal(ng.small_text, resp.body)
      local seen
      for _, e in ipairs(farm.log_lines()) do
        if e.atyp == 3 and e.host == "foo.test" then seen = true end
      end
      assert.is_true(seen)
    end)

    it("never takes an IPv6 target, as an error kind and not a crash", function()
      local _, err = get(by["socks4/good"], "http://[::1]:" .. ng.port .. "/small.txt")
      assert.truthy(err:match("^timeout: last error: proxy_protocol: socks4 cannot reach an IPv6 target"), err)
    end)
  end)

  it("http proxies forward absolute-form requests and resolve names themselves", function()
    local resp, err = get(by["http/good"], ng.host_url("bar.test", "/small.txt"), { timeout = 10 })
    assert.is_nil(err)
    assert.equal(ng.small_text, resp.body)
  end)

  it("takes a source's scheme for its bare lines", function()
    local path = env.tmpdir() .. "/http.txt"
    local f = assert(io.open(path, "w"))
    f:write((by["http/good"]:gsub("^http://", "")) .. "\n" .. by["socks4/good"] .. "\n")
    f:close()
    local pool = scatter.pool({ sources = { { url = "file://" .. path, scheme = "http" } },
                                metrics_log_interval = 0 })
    local keys = {}
    for _, px in ipairs(pool:proxies()) do keys[#keys + 1] = px.key end
    table.sort(keys)
    assert.same({ by["http/good"], by["socks4/good"] }, keys)
    local resp, err = pool:get(ng.url("/small.txt"), { timeout = 10 })
    assert.is_nil(err)
    assert.equal(ng.small_text, resp.body)
    pool:close()
  end)
end)
