-- SIGINT and SIGTERM under `scatter run`: the first one stops dispatching,
-- cancels the in-flight attempts and saves state (closing every pool),
-- then exits 128 + the signal's number (130, 143); a second one exits at
-- once, from C (src/lua/signal.c), even if Lua is busy.
local core = require("scatter.core")
local runtime = require("scatter.runtime")
local log = require("scatter.log")

local M = {}
local NAMES = { [2] = "SIGINT", [15] = "SIGTERM" }

-- before_exit(): called after the pools are closed, just before exiting.
function M.watch(before_exit)
  local id = core.signal_watch()
  runtime.on_op(id, function(res)
    runtime.on_op(id, nil)
    local sig = res.status
    log.emit("warn", nil, (NAMES[sig] or ("signal " .. sig))
      .. ": stopping and saving state (again to exit at once)")
    runtime.spawn(function()
      local ok, err = pcall(require("scatter").close_all)
      if before_exit then pcall(before_exit) end
      if not ok then io.stderr:write("scatter: closing pools: ", tostring(err), "\n") end
      io.stderr:flush()
      io.stdout:flush()
      os.exit(128 + sig)
    end)
  end)
  return id
end

return M
