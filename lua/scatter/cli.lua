-- The `scatter` command line. main(argv) returns the exit code:
-- 0 ok, 1 uncaught error, 2 bad command line.
local scatter = require("scatter")
local runtime = require("scatter.runtime")

local M = {}

local USAGE = [[
usage: scatter <command> [arguments]

commands:
  run FILE [ARGS...]   run a Lua crawl script as the main thread, then the
                       loop until every thread has ended; open pools are
                       closed (their state saved) at the end
  version              print versions
  help                 this text

environment:
  SCATTER_LOG          error, warn, info (default), debug, trace
  SCATTER_LOG_FORMAT   text (default) or json
]]

local function usage_error(msg)
  io.stderr:write("scatter: ", msg, "\n\n", USAGE)
  return 2
end

local function cmd_run(argv)
  local file = argv[2]
  if not file then return usage_error("run: missing FILE") end
  if file == "-h" or file == "--help" then
    io.stdout:write("usage: scatter run FILE [ARGS...]\n")
    return 0
  end
  local chunk, err = loadfile(file)
  if not chunk then
    io.stderr:write("scatter: ", err, "\n")
    return 2
  end
  local args = { [0] = file }
  for i = 3, #argv do args[#args + 1] = argv[i] end
  _G.arg = args
  local ok, rerr = pcall(scatter.run, chunk, unpack(args))
  local cok, cerr = pcall(scatter.close_all)
  if not ok then
    io.stderr:write("scatter: ", tostring(rerr), "\n")
    return 1
  end
  if not cok then
    io.stderr:write("scatter: closing pools: ", tostring(cerr), "\n")
    return 1
  end
  if runtime.uncollected_errors > 0 then return 1 end
  return 0
end

function M.main(argv)
  local cmd = argv[1]
  if cmd == nil then return usage_error("missing command") end
  if cmd == "run" then return cmd_run(argv) end
  if cmd == "version" or cmd == "--version" then
    local v = scatter.versions()
    io.stdout:write(string.format("scatter %s\n%s\nlibuv %s\n%s\n", scatter._VERSION,
      jit and jit.version or _VERSION, v.uv, v.curl))
    return 0
  end
  if cmd == "help" or cmd == "--help" or cmd == "-h" then
    io.stdout:write(USAGE)
    return 0
  end
  return usage_error("unknown command '" .. tostring(cmd) .. "'")
end

return M
