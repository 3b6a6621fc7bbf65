-- The process half of the test-support layer (spec/support/env.lua builds
-- the `env` table specs use from this and servers.lua): FFI declarations,
-- files, temp dirs, ports, child processes and the registry env.cleanup()
-- empties. Everything here is reached as env.X; the `lib` field holds the
-- helpers servers.lua shares and is not copied into env.

local ffi = require("ffi")
local bit = require("bit")
local socket = require("socket")

local env = {}   -- this file's part of support.env
local lib = {}

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

---------------------------------------------------------------------------
-- Cleanup
-- What kills made a crawl redo, from a file each run appends "# run" to at
-- its start and then every URL handed to its handle: a URL handled in run r
-- and handled again later was lost with run r's process. Returns the total
-- redone, the most lost with one run, and the number of runs.
function env.redone(path)
  local runs, last = 0, {}
  for line in io.lines(path) do
    if line == "# run" then
      runs = runs + 1
    else
      last[#last + 1] = { line, runs }
    end
  end
  local later, per = {}, {}
  for i = #last, 1, -1 do
    local url, r = last[i][1], last[i][2]
    if later[url] then per[r] = (per[r] or 0) + 1 end
    later[url] = true
  end
  local total, most = 0, 0
  for _, n in pairs(per) do
    total = total + n
    if n > most then most = n end
  end
  return total, most, runs
end

---------------------------------------------------------------------------

-- Per-spec-file caches of other support modules (servers.lua's TLS
-- fixtures), which live in temp dirs cleanup removes: each registers a
-- reset here rather than this module requiring it back.
local resets = {}

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
  spawn_dir, cli_dir = nil, nil
  for _, reset in ipairs(resets) do reset() end
end

function lib.on_cleanup(fn) resets[#resets + 1] = fn end

lib.errstr, lib.shell_quote = errstr, shell_quote
lib.read_file, lib.write_file, lib.file_exists = read_file, write_file, file_exists
lib.mkdir, lib.run, lib.method, lib.free_ports = mkdir, run, method, free_ports
env.lib = lib

return env
