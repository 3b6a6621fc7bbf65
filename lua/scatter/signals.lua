-- The stop on a signal: the first SIGINT, SIGTERM, SIGHUP or SIGPIPE
-- marks the process as stopping (scatter.stopping()), runs the hooks of
-- scatter.on_signal, closes every pool (dispatching stops, in-flight
-- attempts are cancelled, waiting calls return nil, "closed", state is
-- saved), gives the threads it woke one pass to record that, then exits
-- 128 + the signal's number (130, 143, 129, 141). A second signal exits at
-- once, from C (src/lua/signal.c), even if Lua is busy. `scatter run`
-- installs this for every script; a library user calls scatter.on_signal.
local core = require("scatter.core")
local runtime = require("scatter.runtime")
local log = require("scatter.log")

local M = {}
local NAMES = { [1] = "SIGHUP", [2] = "SIGINT", [13] = "SIGPIPE", [15] = "SIGTERM" }
M.NAMES = NAMES

local stopping -- nil, or the name of the signal that began the stop
local hooks = {} -- on_signal functions, in order
local watching, before = false, nil

function M.stopping() return stopping ~= nil, stopping end

local function stop(sig)
  local name = NAMES[sig] or ("signal " .. sig)
  stopping = name
  log.emit("warn", nil, name .. ": stopping and saving state (again to exit at once)")
  runtime.spawn(function()
    for _, fn in ipairs(hooks) do
      local ok, err = pcall(fn, name, sig)
      if not ok then io.stderr:write("scatter: on_signal hook: ", runtime.show(err), "\n") end
    end
    local ok, err = pcall(require("scatter").close_all)
    -- the threads woken with "closed" record it (release a queue item...)
    runtime.sleep(0)
    runtime.sleep(0)
    if before then pcall(before) end
    if not ok then io.stderr:write("scatter: closing pools: ", runtime.show(err), "\n") end
    io.stderr:flush()
    pcall(io.stdout.flush, io.stdout) -- stdout may be the closed pipe
    os.exit(128 + sig)
  end)
end

-- Starts watching (once). before_exit(): called after the pools are
-- closed, just before exiting (scatter run's progress line).
function M.watch(before_exit)
  if before_exit then before = before_exit end
  if watching then return end
  watching = true
  local id = core.signal_watch()
  runtime.on_op(id, function(res)
    runtime.on_op(id, nil)
    stop(res.status)
  end)
end

-- scatter.on_signal([fn]): the stop above for a library user; fn(name,
-- number) runs first, in a thread of its own, and may still use the pools.
function M.on_signal(fn)
  if fn ~= nil and type(fn) ~= "function" then
    error("scatter.on_signal: bad argument #1 (function or nil expected, got " .. type(fn) .. ")", 2)
  end
  if fn then hooks[#hooks + 1] = fn end
  M.watch()
end

return M
