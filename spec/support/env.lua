-- Test-support layer for the scatter specs (DESIGN.md section 7).
--
-- Provides temp dirs, free ports, child-process control and the real servers
-- the specs talk to: nginx (HTTP + HTTPS target), microsocks (independent
-- SOCKS5 server) and scatter-farm (fault-injecting SOCKS5 farm). Everything
-- started here is stopped by env.cleanup(), or, when a spec file dies before
-- calling it, when the Lua state closes (see the sentinel at the bottom).
--
-- Usage from a spec:
--   package.path = "spec/?.lua;" .. package.path
--   local env = require("support.env")

local ffi = require("ffi")
local bit = require("bit")
local socket = require("socket")
local cjson = require("cjson.safe")

local env = {}

local C = ffi.C

-- One declaration per pcall: busted reloads this module for every spec file
-- and other FFI code may declare the same functions, and a repeated
-- declaration would otherwise raise "attempt to redefine".
for _, decl in ipairs({
  "int fork(void);",
  "int execvp(const char *file, char *const argv[]);",
  "void _exit(int status);",
  "int open(const char *path, int flags, ...);",
  "int close(int fd);",
  "int close_range(unsigned int first, unsigned int last, int flags);",
  "int dup2(int oldfd, int newfd);",
  "long write(int fd, const void *buf, size_t n);",
  "void *signal(int sig, void *handler);",
  "int kill(int pid, int sig);",
  "int waitpid(int pid, int *status, int options);",
  "int getpid(void);",
  "char *mkdtemp(char *template);",
  "int mkdir(const char *path, unsigned int mode);",
  "int symlink(const char *target, const char *linkpath);",
  "char *strerror(int errnum);",
  "int unsetenv(const char *name);",
  "int setenv(const char *name, const char *value, int overwrite);",
}) do
  pcall(ffi.cdef, decl)
end

-- The sanitizer run preloads the ASan runtime into luajit; the servers and
-- tools the specs start (curl, nginx) must not inherit it: curl deadlocks
-- under it. Specs that start an instrumented program with extra preloads
-- (security_spec) put env.asan_preload first.
-- (busted reloads this module per spec file: keep the value in our own
-- variable, which children may inherit harmlessly)
if os.getenv("LD_PRELOAD") then
  ffi.C.setenv("SCATTER_ASAN_PRELOAD", os.getenv("LD_PRELOAD"), 1)
  ffi.C.unsetenv("LD_PRELOAD")
end
env.asan_preload = os.getenv("SCATTER_ASAN_PRELOAD")

-- Linux values (x86_64 and aarch64 agree on all of these).
local O_RDONLY, O_WRONLY, O_CREAT, O_APPEND, O_CLOEXEC = 0, 1, 0x40, 0x400, 0x80000
local SIGKILL, SIGTERM, SIGPIPE = 9, 15, 13
local WNOHANG = 1
local ESRCH, ECHILD, EINTR, EPERM = 3, 10, 4, 1

local STARTUP_TIMEOUT = 10   -- seconds to wait for a server to become ready
local STOP_GRACE = 2         -- seconds between SIGTERM and SIGKILL

local function errstr(e)
  return ffi.string(C.strerror(e or ffi.errno()))
end

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function now() return socket.gettime() end

function env.sleep(s) socket.sleep(s) end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  f:close()
end

-- For specs: shell quoting and whole-file reads (nil when missing) and writes.
env.shell_quote, env.read_file, env.write_file = shell_quote, read_file, write_file

-- This process's open descriptors: their count and "fd=target" words,
-- found with fcntl (io.popen("ls") would add its own pipe, and for a moment
-- both of its ends). `match` (a plain substring, e.g. "socket:") counts only
-- the descriptors whose target contains it.
function env.open_fds(match)
  pcall(ffi.cdef, "int fcntl(int fd, int cmd, ...);")
  pcall(ffi.cdef, "long readlink(const char *path, char *buf, size_t n);")
  local n, what, buf = 0, {}, ffi.new("char[512]")
  for fd = 0, 65535 do
    if ffi.C.fcntl(fd, 1 --[[F_GETFD]]) >= 0 then
      local len = ffi.C.readlink("/proc/self/fd/" .. fd, buf, 512)
      local target = len > 0 and ffi.string(buf, len) or "?"
      if not match or target:find(match, 1, true) then
        n = n + 1
        what[#what + 1] = fd .. "=" .. target
      end
    end
  end
  return n, table.concat(what, " ")
end

-- This process's resident set in KiB (VmRSS).
function env.rss_kib()
  local s = read_file("/proc/self/status") or ""
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

local function file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local function mkdir(path)
  if C.mkdir(path, 448) ~= 0 then       -- 0700
    error("mkdir " .. path .. ": " .. errstr(), 2)
  end
end

-- Runs a shell command with its output captured; returns ok, output.
-- (os.execute returns a number in plain LuaJIT, true/false in 5.2 mode.)
local function run(cmd)
  local out = os.tmpname()
  local r = os.execute(cmd .. " >" .. shell_quote(out) .. " 2>&1")
  local output = read_file(out) or ""
  os.remove(out)
  return r == 0 or r == true, output
end

-- Lets handle functions be called both as h.f(x) and h:f(x).
local function method(self, f)
  return function(a, ...)
    if a == self then return f(...) end
    return f(a, ...)
  end
end

-- The process that loaded this module; a forked child whose exec failed must
-- never run cleanup on the parent's processes.
local owner_pid = C.getpid()

---------------------------------------------------------------------------
-- Paths, temp dirs, ports
---------------------------------------------------------------------------

function env.build_dir()
  local d = os.getenv("SCATTER_BUILD_DIR")
  if d and d ~= "" then return d end
  return "./build"
end

local cli_dir -- a temp dir for the runs' output, made on first use

-- Runs the scatter executable with `args` (already shell-quoted where it
-- matters); opts.env is a prefix of VAR=value words, opts.stdin a file
-- (default /dev/null). Returns exit code, stdout, stderr.
function env.cli(args, opts)
  opts = opts or {}
  cli_dir = cli_dir or env.tmpdir()
  local out, err = cli_dir .. "/out", cli_dir .. "/err"
  local cmd = (opts.env and (opts.env .. " ") or "") .. shell_quote(env.build_dir() .. "/scatter") .. " " .. args
    .. " >" .. shell_quote(out) .. " 2>" .. shell_quote(err) .. " <" .. shell_quote(opts.stdin or "/dev/null")
    .. "; echo $?"
  local p = io.popen(cmd)
  local rc = tonumber(p:read("*a"):match("(%d+)"))
  p:close()
  return rc, read_file(out) or "", read_file(err) or ""
end

-- Writes a script file into a temp dir; returns its path.
function env.script(name, text)
  cli_dir = cli_dir or env.tmpdir()
  local path = cli_dir .. "/" .. name
  write_file(path, text)
  return path
end

local tmpdirs = {}

function env.tmpdir()
  local base = os.getenv("TMPDIR")
  if not base or base == "" then base = "/tmp" end
  local template = base .. "/scatter-spec-XXXXXX"
  local buf = ffi.new("char[?]", #template + 1, template)
  if C.mkdtemp(buf) == nil then
    error("mkdtemp " .. template .. ": " .. errstr(), 2)
  end
  local dir = ffi.string(buf)
  tmpdirs[#tmpdirs + 1] = dir
  return dir
end

-- The kernel picks a free port; we release it straight away, so a racing
-- process could grab it before our server binds: starters retry on EADDRINUSE.
function env.free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

-- A port that refuses every connection for the rest of the spec file: bound
-- and never listened on, so no other process (a parallel spec's daemon on
-- a free_port()) can take it, which made "nothing listens there" cases
-- meet a working proxy under ctest -j2.
local held = {}
function env.dead_port()
  local s = assert(socket.tcp())
  assert(s:bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  held[#held + 1] = s
  return tonumber(port)
end

-- Distinct free ports (two quick free_port() calls may return the same one).
local function free_ports(n)
  local seen, ports = {}, {}
  while #ports < n do
    local p = env.free_port()
    if not seen[p] then seen[p] = true ports[#ports + 1] = p end
  end
  return ports
end

function env.port_open(port, host)
  local c = socket.tcp()
  c:settimeout(0.25)
  local ok = c:connect(host or "127.0.0.1", port)
  c:close()
  return ok == 1
end

---------------------------------------------------------------------------
-- Processes
---------------------------------------------------------------------------

local procs = {}          -- live Proc handles, in start order
local Proc = {}
Proc.__index = Proc

local function unregister(p)
  for i = #procs, 1, -1 do
    if procs[i] == p then table.remove(procs, i) end
  end
end

local function decode_status(st)
  local sig = bit.band(st, 0x7f)
  if sig == 0 then return "exit " .. bit.band(bit.rshift(st, 8), 0xff) end
  return "signal " .. sig
end

-- Reaps the child if it has exited; returns true when it is gone.
function Proc:reap()
  if self.status then return true end
  local st = ffi.new("int[1]")
  local r = C.waitpid(self.pid, st, WNOHANG)
  if r == self.pid then
    self.status = decode_status(st[0])
  elseif r < 0 and ffi.errno() == ECHILD then
    self.status = "gone"   -- not (or no longer) our child
  else
    return false
  end
  unregister(self)
  return true
end

function Proc:alive()
  return not self:reap()
end

-- SIGTERM, SIGKILL after the grace period, always reaped. Only ever this PID.
function Proc:stop(grace)
  if self:reap() then return self.status end
  if C.kill(self.pid, SIGTERM) ~= 0 and ffi.errno() == ESRCH then
    self:reap()
    return self.status
  end
  local deadline = now() + (grace or STOP_GRACE)
  while now() < deadline do
    if self:reap() then return self.status end
    socket.sleep(0.01)
  end
  C.kill(self.pid, SIGKILL)
  local st = ffi.new("int[1]")
  local r
  repeat
    r = C.waitpid(self.pid, st, 0)
  until r >= 0 or ffi.errno() ~= EINTR
  self.status = r == self.pid and decode_status(st[0]) or "gone"
  unregister(self)
  return self.status
end

-- Last n lines of the process output and any extra logs (e.g. nginx's
-- error.log), for error messages.
function Proc:tail(n)
  n = n or 20
  local parts = {}
  local files = { self.log }
  for _, f in ipairs(self.logs or {}) do files[#files + 1] = f end
  for _, path in ipairs(files) do
    local s = read_file(path) or ""
    local lines = {}
    for line in s:gmatch("[^\n]*") do
      if line ~= "" then lines[#lines + 1] = line end
    end
    local from = math.max(1, #lines - n + 1)
    parts[#parts + 1] = "--- " .. path .. " (last " .. (#lines - from + 1)
      .. " lines)\n" .. table.concat(lines, "\n", from)
  end
  return table.concat(parts, "\n")
end

local spawn_dir, spawn_count = nil, 0

-- Starts argv (argv[1] looked up in PATH) with stdin from /dev/null and
-- stdout+stderr appended to opts.log. fork/exec through the FFI rather than
-- "cmd &" in a shell, so the server is our own child: we get its real PID and
-- can reap it, and no shell sits in between.
-- opts: log (path), logs (extra log paths for tail()), name.
function env.spawn(argv, opts)
  opts = opts or {}
  local name = opts.name or argv[1]:match("[^/]*$")
  local log = opts.log
  if not log then
    spawn_dir = spawn_dir or env.tmpdir()
    spawn_count = spawn_count + 1
    log = spawn_dir .. "/" .. name .. "-" .. spawn_count .. ".log"
  end
  -- Everything the child needs is prepared before fork: between fork and
  -- exec the child only makes plain syscalls.
  local logfd = C.open(log, bit.bor(O_WRONLY, O_CREAT, O_APPEND, O_CLOEXEC),
                       ffi.cast("int", 420))          -- 0644
  if logfd < 0 then error("open " .. log .. ": " .. errstr(), 2) end
  local nullfd = C.open("/dev/null", bit.bor(O_RDONLY, O_CLOEXEC))
  local n = #argv
  local cargv = ffi.new("char *[?]", n + 1)
  local anchor = {}
  for i = 1, n do
    local s = tostring(argv[i])
    anchor[i] = ffi.new("char[?]", #s + 1, s)
    cargv[i - 1] = anchor[i]
  end
  cargv[n] = nil
  local failmsg = "env.spawn: cannot exec " .. argv[1] .. "\n"
  local has_close_range = pcall(function() return C.close_range end)

  local pid = C.fork()
  if pid == 0 then
    C.dup2(nullfd, 0)
    C.dup2(logfd, 1)
    C.dup2(logfd, 2)
    -- Don't leak our sockets/pipes into the server (a leaked pipe end can
    -- keep a reader such as io.popen waiting forever).
    if not (has_close_range and C.close_range(3, 0xffffffff, 0) == 0) then
      for fd = 3, 4095 do C.close(fd) end
    end
    -- luasocket sets SIGPIPE to SIG_IGN, and exec would pass that on; run
    -- servers with the default disposition, as from a shell.
    C.signal(SIGPIPE, nil)
    C.execvp(cargv[0], cargv)
    C.write(2, failmsg, #failmsg)
    C._exit(127)
  end
  local e = ffi.errno()
  C.close(logfd)
  if nullfd >= 0 then C.close(nullfd) end
  if pid < 0 then error("fork: " .. errstr(e), 2) end

  local p = setmetatable({
    pid = pid, argv = argv, name = name, log = log, logs = opts.logs,
  }, Proc)
  procs[#procs + 1] = p
  return p
end

-- Polls fn() until it returns a truthy value (which is returned). Raises
-- after `timeout` seconds, or as soon as `proc` (optional) exits, with the
-- process's log tail in the message.
function env.wait_until(fn, what, proc, timeout)
  local deadline = now() + (timeout or STARTUP_TIMEOUT)
  while true do
    local v = fn()
    if v then return v end
    if proc and not proc:alive() then
      error(string.format("%s exited (%s) while waiting for %s\n%s",
        proc.name, proc.status, what, proc:tail()), 0)
    end
    if now() > deadline then
      local msg = string.format("timed out after %gs waiting for %s",
        timeout or STARTUP_TIMEOUT, what)
      if proc then msg = proc.name .. ": " .. msg .. "\n" .. proc:tail() end
      error(msg, 0)
    end
    socket.sleep(0.02)
  end
end

function env.wait_port(port, proc, timeout)
  return env.wait_until(function() return env.port_open(port) end,
    "127.0.0.1:" .. port .. " to accept connections", proc, timeout)
end

function env.wait_file(path, proc, timeout)
  return env.wait_until(function() return file_exists(path) end,
    path .. " to appear", proc, timeout)
end

-- True if any process with this PID exists (ours or not; zombies count).
function env.pid_alive(pid)
  if C.kill(pid, 0) == 0 then return true end
  return ffi.errno() == EPERM
end

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
  local dir = env.tmpdir()
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
  or error("support.env: cannot read " .. here .. "nginx/nginx.conf.tmpl")

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
  local dir = env.tmpdir()
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
    return env.spawn({ nginx_bin(), "-p", dir .. "/", "-c", conf, "-e", error_log },
      { name = "nginx", log = dir .. "/nginx.out", logs = { error_log } })
  end, function(p, ports)
    env.wait_port(ports[1], p)
    env.wait_port(ports[2], p)
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
  local dir = env.tmpdir()
  local proc, ports = start_on_free_ports(1, function(ports)
    local argv = { bin, "-i", "127.0.0.1", "-p", ports[1] }
    if opts.user then
      argv[#argv + 1] = "-u"; argv[#argv + 1] = opts.user
      argv[#argv + 1] = "-P"; argv[#argv + 1] = opts.pass or ""
    end
    if opts.auth_once then argv[#argv + 1] = "-1" end
    return env.spawn(argv, { name = "microsocks", log = dir .. "/microsocks.log" })
  end, function(p, ports) env.wait_port(ports[1], p) end)
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
  return env.build_dir() .. "/spec/support/farm/scatter-farm"
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
  local dir = env.tmpdir()
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

  local proc = env.spawn(argv, { name = "scatter-farm", log = out, logs = { log } })
  local ok, entries, control_port = pcall(function()
    -- The farm renames the file into place, so existing means complete;
    -- decoding inside the poll is just belt and braces.
    local e = env.wait_until(function()
      local s = read_file(ports_file)
      return s and cjson.decode(s)
    end, ports_file .. " (ports-out)", proc, opts.timeout)
    local cp = env.wait_until(function()
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

---------------------------------------------------------------------------
-- Cleanup
---------------------------------------------------------------------------

-- Stops every process env started that is still running (newest first) and
-- removes every temp dir env created.
function env.cleanup()
  if C.getpid() ~= owner_pid then return end
  for i = #procs, 1, -1 do
    local p = procs[i]
    if p then p:stop() end
  end
  for i = #tmpdirs, 1, -1 do
    run("rm -rf -- " .. shell_quote(tmpdirs[i]))
    tmpdirs[i] = nil
  end
  for i = #held, 1, -1 do
    held[i]:close()
    held[i] = nil
  end
  fixtures, spawn_dir, cli_dir = nil, nil, nil
end

-- A spec file that errors out never reaches its teardown. This userdata is
-- collected when the module is dropped (busted reloads modules per file) or
-- when the Lua state closes, and its finaliser stops what is still running.
local sentinel = newproxy(true)
getmetatable(sentinel).__gc = function() pcall(env.cleanup) end
env._sentinel = sentinel

return env
