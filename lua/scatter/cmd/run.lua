-- scatter run [options] FILE [ARGS...]
local cli = require("scatter.cli")
local log = require("scatter.log")

local C = {
  summary = "run a Lua crawl script",
  usage = [[
usage: scatter run [options] FILE [ARGS...]

Runs FILE as the main thread with ARGS in `...` and arg[], then the loop
until every thread has ended; open pools are closed at the end.
Exit code 0, 1 on an uncaught error, 2 on a bad command line.
The first SIGINT, SIGTERM, SIGHUP or SIGPIPE (`| head -1`) stops
dispatching, cancels what is in flight, saves state and exits 130, 143,
129 or 141; a second one exits at once.

options:
  --log-level LEVEL    error, warn, info, debug or trace (SCATTER_LOG)
  --log-format FORMAT  text or json (SCATTER_LOG_FORMAT)
  --metrics ADDR       serve every pool's metrics for Prometheus at
                       http://ADDR/metrics (e.g. 127.0.0.1:9464)
  --quiet              no progress line (shown only when stderr is a
                       terminal: tasks, throughput, success, proxies, K)
]],
}

-- This run's settings from the options below; reset by each C.run.
local state = {}

-- Options that take a value: name -> function(value) -> true | nil, err.
C.OPTIONS = {
  ["--log-level"] = log.set_level,
  ["--log-format"] = log.set_format,
  ["--metrics"] = function(addr)
    local ok, err = require("scatter.metrics").parse_addr(addr)
    if not ok then return nil, err end
    state.metrics = addr
    return true
  end,
}
-- Options without a value: name -> function().
C.FLAGS = {
  ["--quiet"] = function() state.quiet = true end,
}

-- The open pools, in a stable order (for the metrics endpoint).
local function open_pools()
  local list = {}
  for p in pairs(require("scatter.pool").open) do list[#list + 1] = p end
  table.sort(list, function(a, b)
    local x, y = a.name or "", b.name or ""
    if x ~= y then return x < y end
    return a.c:id() < b.c:id()
  end)
  return list
end

function C.run(args)
  state = {}
  local parsed, i = cli.options("run", args, C, true)
  if not parsed then return i end
  local file = args[i]
  if not file then return cli.usage_error("run: missing FILE", C) end
  local chunk, err = loadfile(file)
  if not chunk then
    io.stderr:write("scatter: ", err, "\n")
    return 2
  end
  local scatter = require("scatter")
  local runtime = require("scatter.runtime")
  local sargs = { [0] = file }
  for j = i + 1, #args do sargs[#sargs + 1] = args[j] end
  _G.arg = sargs
  local metrics, mtok = require("scatter.metrics"), nil
  if state.metrics then
    local merr
    mtok, merr = metrics.serve(state.metrics, open_pools)
    if not mtok then
      io.stderr:write("scatter: --metrics: ", merr, "\n")
      return 1
    end
  end
  local progress = require("scatter.progress")
  local display
  if not state.quiet and progress.isatty(2) then
    display = progress.start({
      render = progress.pools_renderer(require("scatter.pool"), require("scatter.core").now),
    })
  end
  require("scatter.signals").watch(function()
    if display then display:stop() end
    metrics.unserve(mtok)
  end)
  -- os.exit(code) in the script ends the run as its last line would, with
  -- its code: the pools are closed first (state saved, a queue's leased
  -- pages given back). It used to lose all the run had learnt.
  local exit = os.exit
  rawset(os, "exit", function(...)
    rawset(os, "exit", exit)
    if display then display:stop() end
    -- best effort: where nothing may wait (a classifier) they cannot close
    pcall(scatter.close_all)
    metrics.unserve(mtok)
    pcall(io.stdout.flush, io.stdout)
    return exit(...)
  end)
  local ok, rerr = pcall(scatter.run, chunk, unpack(sargs))
  rawset(os, "exit", exit)
  if display then display:stop() end
  local cok, cerr = pcall(scatter.close_all)
  metrics.unserve(mtok)
  local rc = 0
  if not ok then
    io.stderr:write("scatter: ", tostring(rerr), "\n")
    rc = 1
  elseif not cok then
    io.stderr:write("scatter: closing pools: ", tostring(cerr), "\n")
    rc = 1
  elseif runtime.uncollected_errors > 0 then
    rc = 1
  end
  -- What the script printed goes out now, not at exit: a closed pipe is
  -- then the SIGPIPE stop below. A signal that came while the loop was not
  -- turning (a script that never yields, this flush) is only noticed by
  -- one more pass; it is the stop all the same: the signal's exit code.
  -- (A pass with a wait, however short: with nothing else alive, a pass
  -- without one does not poll at all.)
  pcall(io.stdout.flush, io.stdout)
  pcall(runtime.sleep, 0.001)
  if require("scatter.signals").stopping() then runtime.loop() end
  return rc
end

return C
