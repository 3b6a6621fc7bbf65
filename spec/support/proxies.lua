-- Independent proxy servers from Debian for the interop specs: tinyproxy
-- (HTTP, absolute-form and CONNECT) and dante's danted (SOCKS4 and SOCKS5).
-- Each runs in the foreground as a child of the spec, in a temp dir, on
-- 127.0.0.1, and is stopped by PID (env.cleanup stops what is left).
local env = require("support.env")

local M = {}

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function bin(name, paths)
  for _, p in ipairs(paths) do
    local f = io.open(p, "r")
    if f then f:close() return p end
  end
  return name
end

-- opts: connect_ports (CONNECT is allowed to these only), user, pass
-- (BasicAuth), filter (host names answered 403 by tinyproxy's filter).
function M.tinyproxy(opts)
  opts = opts or {}
  local dir = env.tmpdir()
  local port = env.free_port()
  local lines = {
    -- root starts it, it runs as nobody (GUIDE); no log file: stderr
    "User nobody", "Group nogroup", "Port " .. port, "Listen 127.0.0.1",
    "Timeout 30", "MaxClients 256", "Allow 127.0.0.1", "LogLevel Info",
    "DisableViaHeader Yes",
  }
  for _, p in ipairs(opts.connect_ports or {}) do lines[#lines + 1] = "ConnectPort " .. p end
  if opts.user then lines[#lines + 1] = "BasicAuth " .. opts.user .. " " .. opts.pass end
  if opts.filter then
    write(dir .. "/filter", table.concat(opts.filter, "\n") .. "\n")
    lines[#lines + 1] = 'Filter "' .. dir .. '/filter"'
  end
  write(dir .. "/tinyproxy.conf", table.concat(lines, "\n") .. "\n")
  local proc = env.spawn({ bin("tinyproxy", { "/usr/bin/tinyproxy", "/usr/sbin/tinyproxy" }),
    "-d", "-c", dir .. "/tinyproxy.conf" }, { name = "tinyproxy", log = dir .. "/tinyproxy.log" })
  env.wait_port(port, proc)
  return { proc = proc, pid = proc.pid, port = port, addr = "http://127.0.0.1:" .. port,
           stop = function() return proc:stop() end }
end

-- opts: block (a CIDR dante refuses to connect to).
function M.dante(opts)
  opts = opts or {}
  local dir = env.tmpdir()
  local port = env.free_port()
  local lines = {
    "logoutput: stderr",
    "internal: 127.0.0.1 port = " .. port,
    "external: 127.0.0.1",
    "socksmethod: none", "clientmethod: none",
    "user.privileged: root", "user.unprivileged: nobody",
    "client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }",
  }
  if opts.block then lines[#lines + 1] = "socks block { from: 0.0.0.0/0 to: " .. opts.block .. " }" end
  lines[#lines + 1] = "socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }"
  write(dir .. "/danted.conf", table.concat(lines, "\n") .. "\n")
  local proc = env.spawn({ bin("danted", { "/usr/sbin/danted" }), "-f", dir .. "/danted.conf",
    "-p", dir .. "/danted.pid" }, { name = "danted", log = dir .. "/danted.log" })
  env.wait_port(port, proc)
  return { proc = proc, pid = proc.pid, port = port, hostport = "127.0.0.1:" .. port,
           stop = function() return proc:stop() end }
end

return M
