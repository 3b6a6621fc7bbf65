-- Interop with proxy servers no one here wrote (Debian's tinyproxy, dante
-- and microsocks), per protocol: success, refused, handshake failure
-- (the wrong protocol), blocked, credentials (DESIGN.md section 11).
local env = require("support.env")
local proxies = require("support.proxies")
local scatter = require("scatter")

describe("interop", function()
  local ng, tp, tp_auth, tp_filter, dante, ms

  setup(function()
    ng = env.nginx()
    tp = proxies.tinyproxy({ connect_ports = { ng.tls_port } })
    tp_auth = proxies.tinyproxy({ connect_ports = { ng.tls_port }, user = "alice", pass = "s3cr3t" })
    tp_filter = proxies.tinyproxy({ filter = { "localhost" } })
    dante = proxies.dante({ block = "127.0.0.2/32" })
    ms = env.microsocks({ user = "alice", pass = "s3cr3t" })
  end)

  teardown(function()
    scatter.close_all()
    env.cleanup()
  end)

  local function get(proxy, url, extra)
    extra = extra or {}
    local cfg = { proxies = { proxy }, metrics_log_interval = 0, ca_file = ng.ca,
                  proxy_timeout = extra.proxy_timeout or 3,
                  classifier = extra.classifier, prefer_remote_dns = extra.prefer_remote_dns }
    local pool = scatter.pool(cfg)
    local resp, err = pool:get(url, { timeout = extra.timeout or 1.5 })
    pool:close()
    return resp, err
  end

  local function ok_body(proxy, url, extra)
    local resp, err = get(proxy, url, { timeout = 10, prefer_remote_dns = (extra or {}).prefer_remote_dns })
    assert.is_nil(err)
    assert.equal(ng.small_text, resp.body)
  end

  local final = function() return "final" end
  local nobody = "127.0.0.1:" .. env.dead_port() -- nothing listens there, ever

  describe("http (tinyproxy)", function()
    it("succeeds: absolute-form for http, CONNECT for https", function()
      ok_body(tp.addr, ng.url("/small.txt"))
      ok_body(tp.addr, ng.tls_url("localhost", "/small.txt"))
    end)

    it("refused", function()
      local _, err = get("http://" .. nobody, ng.url("/small.txt"))
      assert.truthy(err:match("^timeout: last error: proxy_refused: "), err)
    end)

    it("handshake failure: a plain HTTP proxy listed as https or socks5 fails the attempt", function()
      -- tinyproxy waits for a request line that a TLS hello or a SOCKS
      -- greeting never ends: the handshake deadline ends the attempt
      local hostport = tp.addr:gsub("^http://", "")
      for _, proxy in ipairs({ "https://" .. hostport, hostport }) do
        local _, err = get(proxy, ng.url("/small.txt"), { timeout = 5 })
        local kind = err:match("^timeout: last error: ([%w_]+): ")
        assert.truthy(kind == "proxy_timeout" or kind == "tls_error" or kind == "proxy_protocol", err)
      end
    end)

    it("blocked: its filter's 403 is classified, a CONNECT it refuses is proxy_error", function()
      -- (a loaded CI machine once kept tinyproxy's filter answer past 3 s)
      local resp, err = get(tp_filter.addr, ng.host_url("localhost", "/small.txt"),
        { classifier = final, timeout = 10, proxy_timeout = 8 })
      assert.is_nil(err)
      assert.equal(403, resp.status)
      -- CONNECT to a port that is no ConnectPort of it
      local _, err2 = get(tp.addr, "https://127.0.0.1:" .. ng.port .. "/small.txt")
      assert.truthy(err2:match("^timeout: last error: proxy_error: the proxy answered CONNECT with 403"), err2)
    end)

    it("credentials: Basic auth; refused ones are proxy_auth, never shown", function()
      local hostport = tp_auth.addr:gsub("^http://", "")
      ok_body("http://alice:s3cr3t@" .. hostport, ng.url("/small.txt"))
      ok_body("http://alice:s3cr3t@" .. hostport, ng.tls_url("localhost", "/small.txt"))
      local _, err = get(tp_auth.addr, ng.url("/small.txt"))
      assert.truthy(err:match("^timeout: last error: proxy_auth: the proxy answered 407"), err)
      _, err = get(tp_auth.addr, ng.tls_url("localhost", "/small.txt"))
      assert.truthy(err:match("^timeout: last error: proxy_auth: the proxy answered CONNECT with 407"), err)
      -- tinyproxy answers wrong credentials with 401: through a tunnel that
      -- is the proxy's answer; in absolute-form it reads like the target's
      _, err = get("http://alice:nope@" .. hostport, ng.tls_url("localhost", "/small.txt"))
      assert.truthy(err:match("^timeout: last error: proxy_auth: the proxy answered CONNECT with 401"), err)
      assert.falsy(err:find("nope", 1, true))
      _, err = get("http://alice:nope@" .. hostport, ng.url("/small.txt"))
      assert.truthy(err:match("^timeout: last error: proxy_blocked: HTTP 401"), err)
      assert.falsy(err:find("nope", 1, true))
    end)
  end)

  for _, scheme in ipairs({ "socks4", "socks5" }) do
    describe(scheme .. " (dante)", function()
      local addr = function() return scheme .. "://" .. dante.hostport end

      it("succeeds for http and https targets", function()
        ok_body(addr(), ng.url("/small.txt"))
        ok_body(addr(), ng.tls_url("127.0.0.1", "/small.txt"))
        -- a name: dante resolves it for socks5h; socks4 resolves locally
        ok_body(addr(), ng.host_url("localhost", "/small.txt"), { prefer_remote_dns = scheme == "socks5" })
      end)

      it("refused", function()
        local _, err = get(scheme .. "://" .. nobody, ng.url("/small.txt"))
        assert.truthy(err:match("^timeout: last error: proxy_refused: "), err)
      end)

      it("handshake failure: a SOCKS server listed as http", function()
        local _, err = get("http://" .. dante.hostport, ng.url("/small.txt"))
        assert.truthy(err:match("^timeout: last error: %a+"), err)
        assert.falsy(err:find("proxy_refused", 1, true), err)
      end)

      it("blocked: a destination its rules refuse", function()
        local _, err = get(addr(), "http://127.0.0.2:" .. ng.port .. "/small.txt")
        assert.truthy(err:match("^timeout: last error: socks_error: .*%[(%a[%w_]*)%]"), err)
      end)
    end)
  end

  describe("socks5 credentials (microsocks)", function()
    it("uses them, reports refused ones as proxy_auth", function()
      ok_body("socks5h://alice:s3cr3t@" .. ms.addr, ng.url("/small.txt"))
      local _, err = get("socks5h://alice:nope@" .. ms.addr, ng.url("/small.txt"))
      assert.truthy(err:match("^timeout: last error: proxy_auth: .*%[user_rejected%]"), err)
      assert.falsy(err:find("nope", 1, true))
    end)
  end)
end)
