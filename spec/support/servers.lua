-- The server half of the test-support layer (spec/support/env.lua builds
-- the `env` table specs use from proc.lua and this): the TLS fixtures and
-- the real servers the specs talk to, nginx (HTTP + HTTPS target),
-- microsocks (independent SOCKS5 server) and scatter-farm (fault-injecting
-- SOCKS5 farm). They are started through proc.lua's spawn (`support`
-- below), so env.cleanup() stops them.

local ffi = require("ffi")
local bit = require("bit")
local socket = require("socket")
local cjson = require("cjson.safe")
local support = require("support.proc")

local env = {}   -- this file's part of support.env

local C = ffi.C
local lib = support.lib
local errstr, shell_quote = lib.errstr, lib.shell_quote
local read_file, write_file, file_exists = lib.read_file, lib.write_file, lib.file_exists
local mkdir, run, method, free_ports = lib.mkdir, lib.run, lib.method, lib.free_ports

-- Starts a server on fresh ports, retrying with new ports when the server
-- died because another process took a port between free_port() and bind.
-- start(ports) must spawn and return the Proc; ready(proc, ports) waits.
local function start_on_free_ports(nports, start, ready)
  local last_err
  for _ = 1, 3 do
    local ports = free_ports(nports)
    local p = start(ports)
    local ok, err = pcall(ready, p, ports)
    if ok then return p, ports end
    p:stop()
    last_err = err
    if not tostring(err):find("in use", 1, true) then break end
  end
  error(last_err, 0)
end

---------------------------------------------------------------------------
-- Fixtures shared by every nginx of this process: TLS certs, big.bin
---------------------------------------------------------------------------

local SMALL_TEXT = "hello from scatter\n"
local BIG_SIZE = 4 * 1024 * 1024

-- SANs of the server cert. OpenSSL and curl do not honour a wildcard directly
-- under a single-label TLD ("*.test" does not match foo.test), so the names
-- specs use are also listed one by one, plus *.scatter.test which does work.
local TLS_NAMES = {
  "localhost", "*.test", "scatter.test", "*.scatter.test",
  "foo.test", "bar.test", "baz.test", "anything.test", "example.test",
  "target.test", "origin.test", "a.test", "b.test", "c.test",
}
env.tls_names = TLS_NAMES

local fixtures
-- Their files are in a temp dir env.cleanup() removes.
lib.on_cleanup(function() fixtures = nil end)

-- The 4 MiB body: xorshift32 (seed 0x5CA77E12), low byte of each step.
-- Random-looking so that reordered or duplicated chunks change the hash.
local function big_content()
  local buf = ffi.new("uint8_t[?]", BIG_SIZE)
  local x = 0x5CA77E12
  for i = 0, BIG_SIZE - 1 do
    x = bit.bxor(x, bit.lshift(x, 13))
    x = bit.bxor(x, bit.rshift(x, 17))
    x = bit.bxor(x, bit.lshift(x, 5))
    buf[i] = bit.band(x, 0xff)
  end
  return ffi.string(buf, BIG_SIZE)
end

local function openssl(args, dir)
  local ok, out = run("cd " .. shell_quote(dir) .. " && openssl " .. args)
  if not ok then error("openssl " .. args .. " failed:\n" .. out, 0) end
end

local function make_ca(dir, name, cn)
  write_file(dir .. "/" .. name .. ".cnf", table.concat({
    "[req]", "distinguished_name = dn", "prompt = no",
    "x509_extensions = v3_ca",
    "[dn]", "CN = " .. cn,
    "[v3_ca]", "basicConstraints = critical,CA:TRUE",
    "keyUsage = critical,keyCertSign,cRLSign",
    "subjectKeyIdentifier = hash", "",
  }, "\n"))
  -- EC keys: generation is instant, unlike RSA.
  openssl("req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1"
    .. " -nodes -days 3650 -config " .. name .. ".cnf -keyout " .. name
    .. ".key -out " .. name .. ".pem", dir)
end

local function get_fixtures()
  if fixtures then return fixtures end
  local dir = support.tmpdir()
  make_ca(dir, "ca", "scatter test CA")
  make_ca(dir, "wrong-ca", "scatter unrelated CA")
  local alt = {}
  for i, name in ipairs(TLS_NAMES) do alt[#alt + 1] = "DNS." .. i .. " = " .. name end
  alt[#alt + 1] = "IP.1 = 127.0.0.1"
  write_file(dir .. "/server.cnf", table.concat({
    "[req]", "distinguished_name = dn", "prompt = no",
    "[dn]", "CN = localhost",
    "[v3_leaf]", "basicConstraints = CA:FALSE",
    "keyUsage = critical,digitalSignature,keyEncipherment",
    "extendedKeyUsage = serverAuth", "subjectAltName = @alt",
    "authorityKeyIdentifier = keyid",
    "[alt]", table.concat(alt, "\n"), "",
  }, "\n"))
  openssl("req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    .. " -config server.cnf -keyout server.key -out server.csr", dir)
  openssl("x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 2"
    .. " -days 825 -extfile server.cnf -extensions v3_leaf -out server.pem", dir)

  local big = big_content()
  write_file(dir .. "/big.bin", big)
  local ok, out = run("sha256sum " .. shell_quote(dir .. "/big.bin"))
  if not ok then error("sha256sum failed: " .. out, 0) end

  fixtures = {
    dir = dir,
    ca = dir .. "/ca.pem",
    wrong_ca = dir .. "/wrong-ca.pem",
    cert = dir .. "/server.pem",
    key = dir .. "/server.key",
    big_path = dir .. "/big.bin",
    big_sha256 = out:match("^(%x+)"),
    big_head = big:sub(1, 16),
    big_tail = big:sub(-16),
  }
  return fixtures
end

-- The exact bytes of /big.bin (4 MiB string), for byte-wise comparisons.
function env.big_content()
  return read_file(get_fixtures().big_path)
end

---------------------------------------------------------------------------
-- nginx
---------------------------------------------------------------------------

-- Read now, not at nginx() time, so a later chdir cannot break it.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local NGINX_TEMPLATE = read_file(here .. "nginx/nginx.conf.tmpl")
  or error("support.servers: cannot read " .. here .. "nginx/nginx.conf.tmpl")

-- /status/<code>: nginx's return needs a literal code, so one location each.
local STATUS_CODES = {
  200, 201, 202, 204, 301, 302, 303, 307, 308, 400, 401, 403, 404, 405,
  407, 409, 410, 413, 418, 429, 500, 502, 503, 504,
}
env.status_codes = STATUS_CODES

local function status_locations()
  local out = {}
  for _, code in ipairs(STATUS_CODES) do
    local body
    if code >= 300 and code < 400 then
      body = "return " .. code .. " /small.txt;"
    elseif code == 204 then
      body = "return 204;"
    else
      body = string.format('return %d "status %d\\n";', code, code)
    end
    local extra = ""
    if code == 429 or code == 503 then
      extra = "add_header Retry-After 1 always; "
    elseif code == 401 then
      extra = "add_header WWW-Authenticate 'Basic realm=\"scatter\"' always; "
    end
    out[#out + 1] = string.format(
      "        location = /status/%d { default_type text/plain; %s%s }",
      code, extra, body)
  end
  return table.concat(out, "\n")
end

local function nginx_bin()
  local b = os.getenv("SCATTER_NGINX")
  if b and b ~= "" then return b end
  if file_exists("/usr/sbin/nginx") then return "/usr/sbin/nginx" end
  return "nginx"
end

-- opts.files: { ["name"] = content } extra files written into the docroot.
function env.nginx(opts)
  opts = opts or {}
  local fx = get_fixtures()
  local dir = support.tmpdir()
  local root = dir .. "/root"
  mkdir(dir .. "/tmp")
  mkdir(root)
  write_file(root .. "/small.txt", SMALL_TEXT)
  write_file(root .. "/index.html", "<html><body>scatter</body></html>\n")
  if C.symlink(fx.big_path, root .. "/big.bin") ~= 0 then
    error("symlink big.bin: " .. errstr(), 2)
  end
  for name, content in pairs(opts.files or {}) do
    write_file(root .. "/" .. name, content)
  end
  local conf = dir .. "/nginx.conf"
  local error_log = dir .. "/error.log"

  local proc, ports = start_on_free_ports(2, function(ports)
    local vars = {
      DIR = dir, ROOT = root, CERT = fx.cert, KEY = fx.key,
      PORT = ports[1], TLS_PORT = ports[2],
      STATUS_LOCATIONS = status_locations(),
    }
    write_file(conf, (NGINX_TEMPLATE:gsub("{{([%w_]+)}}", function(k)
      return tostring(assert(vars[k], "template variable " .. k))
    end)))
    -- Start error.log afresh so a retry's tail shows only this attempt.
    write_file(error_log, "")
    return support.spawn({ nginx_bin(), "-p", dir .. "/", "-c", conf, "-e", error_log },
      { name = "nginx", log = dir .. "/nginx.out", logs = { error_log } })
  end, function(p, ports)
    support.wait_port(ports[1], p)
    support.wait_port(ports[2], p)
  end)

  local port, tls_port = ports[1], ports[2]
  local srv = {
    pid = proc.pid, proc = proc, dir = dir, root = root, conf = conf,
    port = port, tls_port = tls_port,
    access_log = dir .. "/access.log", error_log = error_log,
    ca = fx.ca, wrong_ca = fx.wrong_ca, cert = fx.cert, key = fx.key,
    small_text = SMALL_TEXT,
    big_size = BIG_SIZE, big_sha256 = fx.big_sha256, big_path = fx.big_path,
    big_head = fx.big_head, big_tail = fx.big_tail,
  }
  -- url(path): http://127.0.0.1:P/path
  srv.url = method(srv, function(path)
    return "http://127.0.0.1:" .. port .. (path or "/")
  end)
  -- host_url(host, path): plain HTTP under a name (e.g. for remote DNS).
  srv.host_url = method(srv, function(host, path)
    return "http://" .. host .. ":" .. port .. (path or "/")
  end)
  -- tls_url(host, path) / tls_url(path): https, host defaults to localhost.
  srv.tls_url = method(srv, function(host, path)
    if path == nil and host and host:sub(1, 1) == "/" then host, path = nil, host end
    return "https://" .. (host or "localhost") .. ":" .. tls_port .. (path or "/")
  end)
  -- access_lines(): parsed access log entries {addr, method, uri, status,
  -- bytes, host, scheme, port, x_test, ua, body}. nginx writes the entry
  -- just after the response, so poll (env.wait_until) when counting.
  srv.access_lines = method(srv, function()
    local entries = {}
    for line in (read_file(srv.access_log) or ""):gmatch("[^\n]+") do
      local e = cjson.decode(line)
      if e then entries[#entries + 1] = e end
    end
    return entries
  end)
  srv.stop = method(srv, function() return proc:stop() end)
  return srv
end

---------------------------------------------------------------------------
-- microsocks
---------------------------------------------------------------------------

-- opts: user, pass, auth_once (-1), bin.
function env.microsocks(opts)
  opts = opts or {}
  local bin = opts.bin or os.getenv("SCATTER_MICROSOCKS") or "/usr/bin/microsocks"
  local dir = support.tmpdir()
  local proc, ports = start_on_free_ports(1, function(ports)
    local argv = { bin, "-i", "127.0.0.1", "-p", ports[1] }
    if opts.user then
      argv[#argv + 1] = "-u"; argv[#argv + 1] = opts.user
      argv[#argv + 1] = "-P"; argv[#argv + 1] = opts.pass or ""
    end
    if opts.auth_once then argv[#argv + 1] = "-1" end
    return support.spawn(argv, { name = "microsocks", log = dir .. "/microsocks.log" })
  end, function(p, ports) support.wait_port(ports[1], p) end)
  local port = ports[1]
  local ms = {
    pid = proc.pid, proc = proc, port = port, addr = "127.0.0.1:" .. port,
    user = opts.user, pass = opts.pass, log = proc.log,
  }
  local cred = opts.user and (opts.user .. ":" .. (opts.pass or "") .. "@") or ""
  ms.url = "socks5h://" .. cred .. "127.0.0.1:" .. port
  ms.stop = method(ms, function() return proc:stop() end)
  return ms
end

---------------------------------------------------------------------------
-- scatter-farm
---------------------------------------------------------------------------

function env.farm_bin()
  local b = os.getenv("SCATTER_FARM")
  if b and b ~= "" then return b end
  return support.build_dir() .. "/spec/support/farm/scatter-farm"
end

function env.have_farm()
  return file_exists(env.farm_bin())
end

local LOG_NUMBERS = { port = true, atyp = true, dstport = true }

-- lines: config lines, e.g. { "good count=3", "slow latency=200" }.
-- opts: seed, map ({ name = ip }), args (extra argv), timeout.
function env.farm(lines, opts)
  opts = opts or {}
  local bin = env.farm_bin()
  if not file_exists(bin) then
    error("scatter-farm not found at " .. bin
      .. " (build it, or point SCATTER_FARM / SCATTER_BUILD_DIR at it)", 2)
  end
  local dir = support.tmpdir()
  local config, ports_file = dir .. "/farm.conf", dir .. "/ports.json"
  local log, out = dir .. "/farm.log", dir .. "/farm.out"
  write_file(config, table.concat(lines, "\n") .. "\n")
  local argv = { bin, "--config", config, "--ports-out", ports_file,
                 "--log", log, "--control-port", "0" }
  if opts.seed then
    argv[#argv + 1] = "--seed"; argv[#argv + 1] = tostring(opts.seed)
  end
  if opts.map then
    local names = {}
    for name in pairs(opts.map) do names[#names + 1] = name end
    table.sort(names)      -- deterministic argv
    for _, name in ipairs(names) do
      argv[#argv + 1] = "--map"; argv[#argv + 1] = name .. "=" .. opts.map[name]
    end
  end
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end
  -- https proxies present the nginx fixtures' certificate (CA: ng.ca)
  for _, l in ipairs(lines) do
    if l:find("proto=https", 1, true) then
      local fx = get_fixtures()
      for _, a in ipairs({ "--tls-cert", fx.cert, "--tls-key", fx.key }) do argv[#argv + 1] = a end
      break
    end
  end

  local proc = support.spawn(argv, { name = "scatter-farm", log = out, logs = { log } })
  local ok, entries, control_port = pcall(function()
    -- The farm renames the file into place, so existing means complete;
    -- decoding inside the poll is just belt and braces.
    local e = support.wait_until(function()
      local s = read_file(ports_file)
      return s and cjson.decode(s)
    end, ports_file .. " (ports-out)", proc, opts.timeout)
    local cp = support.wait_until(function()
      return tonumber((read_file(out) or ""):match("CONTROL (%d+)"))
    end, "'CONTROL <port>' on stdout (is it flushed?)", proc, opts.timeout)
    return e, cp
  end)
  if not ok then
    proc:stop()
    error(entries, 0)
  end
  table.sort(entries, function(a, b) return a.index < b.index end)

  local farm = {
    pid = proc.pid, proc = proc, dir = dir, config = config,
    log = log, stdout = out, control_port = control_port,
    entries = entries, proxies = {}, ports = {}, profiles = {}, by_profile = {},
  }
  for i, e in ipairs(entries) do
    -- SOCKS5 proxies are bare host:port; the others carry their scheme
    local addr = (e.proto and e.proto ~= "socks5" and (e.proto .. "://") or "") .. "127.0.0.1:" .. e.port
    farm.proxies[i], farm.ports[i], farm.profiles[i] = addr, e.port, e.profile
    local list = farm.by_profile[e.profile] or {}
    list[#list + 1] = addr
    farm.by_profile[e.profile] = list
  end

  -- log_lines(): one table per SOCKS CONNECT with the log's key=value pairs
  -- (port, atyp, dstport as numbers; host, action as strings) plus raw.
  farm.log_lines = method(farm, function()
    local entries_out = {}
    for line in (read_file(log) or ""):gmatch("[^\n]+") do
      local e = { raw = line }
      for k, v in line:gmatch("([%w_]+)=(%S*)") do
        e[k] = LOG_NUMBERS[k] and tonumber(v) or v
      end
      entries_out[#entries_out + 1] = e
    end
    return entries_out
  end)

  -- control(cmd): sends one line, returns the reply line ("OK ..."/"ERR ..."),
  -- or nil, err (e.g. after "quit" the farm may close without a reply).
  farm.control = method(farm, function(cmd)
    local c = socket.tcp()
    c:settimeout(5)
    local okc, cerr = c:connect("127.0.0.1", control_port)
    if not okc then c:close() return nil, "control connect: " .. tostring(cerr) end
    c:send(cmd .. "\n")
    local line, rerr = c:receive("*l")
    c:close()
    return line, rerr
  end)
  farm.stop = method(farm, function() return proc:stop() end)
  return farm
end

return env
