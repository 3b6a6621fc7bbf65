-- scatter serve [options] [SOURCE...]: a local racing HTTP proxy.
local cli = require("scatter.cli")
local log = require("scatter.log")

local C = {
  summary = "run a local HTTP proxy that races every request",
  usage = [[
usage: scatter serve [options] [SOURCE...]

An HTTP/1.1 forward proxy for any tool (curl -x, Scrapy, Crawlee,
browsers). Absolute-form http:// requests are raced across the pool's
proxies and classified like pool:request (GET/HEAD/OPTIONS race, other
methods take one path at a time); CONNECT host:port tunnels are raced at
setup and then relayed. No usable answer: 502; a timeout: 504; the reason
is in the X-Scatter-Error header. `X-Scatter-Session: NAME` on a request
(or proxy credentials http://NAME:x@HOST:PORT) keeps that client's
requests and tunnels on one proxy and one cookie jar.
SOURCE: a proxy list (a file, or a file:// or http(s):// URL).
The first SIGINT or SIGTERM stops accepting, lets the requests in flight
finish (up to --timeout), saves state and exits 130 or 143.

options:
  --listen ADDR        HOST:PORT or PORT (default 127.0.0.1:8080; a bare
                       PORT binds loopback)
  --config FILE        a Lua file returning a pool configuration (section
                       4 of the docs; classifier included), plus two
                       serve-only fields: connect_ports (list, default
                       {443}) and session (pool:session options)
  --timeout S          each request's timeout in seconds (default 30)
  --session-idle S     close an X-Scatter-Session session after S seconds
                       without a request (default 300); the name's next
                       request starts a new one
  --tunnel-idle S      close a CONNECT tunnel after S seconds without a
                       byte either way (default 300)
  --log-level LEVEL    error, warn, info, debug or trace (SCATTER_LOG)
  --log-format FORMAT  text or json (SCATTER_LOG_FORMAT)
  --metrics ADDR       Prometheus metrics at http://ADDR/metrics
  --quiet              no progress line
]],
}

local state

local function parse_listen(v)
  if v:match("^%d+$") then v = "127.0.0.1:" .. v end
  local host, port = require("scatter.metrics").parse_addr(v)
  if not host then return nil, port end
  state.host, state.port = host, port
  return true
end

-- An option taking a number of seconds > 0 into state[field].
local function seconds(field)
  return function(v)
    local t = tonumber(v)
    if not t or t ~= t or t <= 0 or t == math.huge then return nil, "a number of seconds > 0 expected" end
    state[field] = t
    return true
  end
end

C.OPTIONS = {
  ["--log-level"] = log.set_level,
  ["--log-format"] = log.set_format,
  ["--listen"] = parse_listen,
  ["--config"] = function(v) state.config = v return true end,
  ["--timeout"] = seconds("timeout"),
  ["--session-idle"] = seconds("session_idle"),
  ["--tunnel-idle"] = seconds("tunnel_idle"),
  ["--metrics"] = function(addr)
    local ok, err = require("scatter.metrics").parse_addr(addr)
    if not ok then return nil, err end
    state.metrics = addr
    return true
  end,
}
C.FLAGS = { ["--quiet"] = function() state.quiet = true end }

-- The pool configuration: --config's table (serve fields taken out) and
-- the SOURCEs. Returns cfg, serve options or nil, err.
local function load_config(sources)
  local cfg = {}
  if state.config then
    local chunk, err = loadfile(state.config)
    if not chunk then return nil, err end
    local ok, res = pcall(chunk)
    if not ok then return nil, state.config .. ": " .. tostring(res) end
    if type(res) ~= "table" then
      return nil, state.config .. ": must return a pool configuration table, got " .. type(res)
    end
    cfg = res
  end
  local opts = { timeout = state.timeout, connect_ports = cfg.connect_ports, session = cfg.session,
                  session_idle = state.session_idle, tunnel_idle = state.tunnel_idle }
  cfg.connect_ports, cfg.session = nil, nil
  if opts.connect_ports ~= nil then
    if type(opts.connect_ports) ~= "table" then
      return nil, "connect_ports: a list of ports expected"
    end
    for i, p in ipairs(opts.connect_ports) do
      if type(p) ~= "number" or p ~= math.floor(p) or p < 1 or p > 65535 then
        return nil, "connect_ports[" .. i .. "]: a port from 1 to 65535 expected"
      end
    end
  end
  if opts.session ~= nil and type(opts.session) ~= "table" then
    return nil, "session: a table of pool:session options expected"
  end
  if #sources > 0 then
    local list = {}
    for _, s in ipairs(cfg.sources or {}) do list[#list + 1] = s end
    for _, s in ipairs(sources) do
      list[#list + 1] = s:match("^%a[%w+.-]*://") and s or ("file://" .. s)
    end
    cfg.sources = list
  end
  return cfg, opts
end

local function open_pools()
  local list = {}
  for p in pairs(require("scatter.pool").open) do list[#list + 1] = p end
  table.sort(list, function(a, b) return a.c:id() < b.c:id() end)
  return list
end

function C.run(args)
  state = { host = "127.0.0.1", port = 8080 }
  local sources, uerr = cli.options("serve", args, C)
  if not sources then return uerr end
  local cfg, opts = load_config(sources)
  if not cfg then
    io.stderr:write("scatter: serve: ", opts, "\n")
    return 2
  end
  local scatter = require("scatter")
  local runtime = require("scatter.runtime")
  local core = require("scatter.core")
  local serve = require("scatter.serve")
  local metrics = require("scatter.metrics")
  local code, fatal = 0, nil
  local ok, err = pcall(scatter.run, function()
    -- the user's mistakes (a bad config, a port in use) end the run with
    -- their message alone: scatter.run adds a traceback to what it raises
    local pok, pool = pcall(scatter.pool, cfg)
    if not pok then
      fatal = tostring(pool)
      return
    end
    local srv, port = serve.start(pool, state.host, state.port, opts)
    if not srv then
      fatal = port:gsub("^serve: ", "") -- the command's prefix is ours
      return
    end
    local mtok
    if state.metrics then
      local merr
      mtok, merr = metrics.serve(state.metrics, open_pools)
      if not mtok then
        fatal = "--metrics: " .. merr
        srv:close()
        return
      end
    end
    local display
    if not state.quiet and require("scatter.progress").isatty(2) then
      local progress = require("scatter.progress")
      display = progress.start({ render = progress.pools_renderer(require("scatter.pool"), core.now) })
    end
    local shown = state.host:find(":", 1, true) and ("[" .. state.host .. "]") or state.host
    log.emit("info", nil, "serve: listening on http://" .. shown .. ":" .. port)
    io.stdout:write("listening on http://", shown, ":", port, "\n")
    io.stdout:flush()
    local stop = runtime.waiter()
    local sig_op = core.signal_watch()
    runtime.on_op(sig_op, function(res)
      runtime.on_op(sig_op, nil)
      runtime.wake(stop, res.status)
    end)
    local sig = runtime.block(stop)
    log.emit("warn", nil, (sig == 2 and "SIGINT" or sig == 15 and "SIGTERM" or ("signal " .. sig))
      .. ": draining (again to exit at once)")
    srv:close(opts.timeout or serve.DEFAULT_TIMEOUT)
    -- what still waits on a pool ends now ("closed"), so the loop can end
    scatter.close_all()
    if display then display:stop() end
    metrics.unserve(mtok)
    code = 128 + sig
  end)
  local cok, cerr = pcall(scatter.close_all)
  if fatal then
    io.stderr:write("scatter: serve: ", fatal, "\n")
    return 1
  end
  if not ok then
    io.stderr:write("scatter: serve: ", tostring(err), "\n")
    return 1
  end
  if not cok then
    io.stderr:write("scatter: closing pools: ", tostring(cerr), "\n")
    return 1
  end
  return code
end

return C
