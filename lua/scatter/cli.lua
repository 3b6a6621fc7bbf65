-- The `scatter` command line. main(argv) returns the exit code:
-- 0 ok, 1 uncaught error (or a command's failure), 2 bad command line.
-- Each command is a module lua/scatter/cmd/<name>.lua returning
-- { summary = "...", usage = "...", run = function(args) -> exit code },
-- where args are the words after the command name.
local M = {}

-- The order `scatter help` lists them in.
M.COMMANDS = { "run", "serve", "check", "fetch", "stats", "queue", "version", "help" }

local function load_cmd(name)
  if not name:match("^[%w_-]+$") then return nil end
  local ok, mod = pcall(require, "scatter.cmd." .. name)
  if ok then return mod end
  if not tostring(mod):find("module 'scatter.cmd." .. name .. "' not found", 1, true) then
    error(mod, 0) -- a broken command module is our bug: say so
  end
  return nil
end

function M.usage()
  local lines = { "usage: scatter <command> [arguments]", "", "commands:" }
  for _, name in ipairs(M.COMMANDS) do
    local c = load_cmd(name)
    if c then lines[#lines + 1] = string.format("  %-10s %s", name, c.summary) end
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "`scatter <command> --help` describes one command."
  lines[#lines + 1] = ""
  lines[#lines + 1] = "environment:"
  lines[#lines + 1] = "  SCATTER_LOG          error, warn, info (default), debug, trace"
  lines[#lines + 1] = "  SCATTER_LOG_FORMAT   text (default) or json"
  return table.concat(lines, "\n") .. "\n"
end

-- For commands: report a bad command line and return 2.
function M.usage_error(msg, cmd)
  io.stderr:write("scatter: ", msg, "\n\n", cmd and cmd.usage or M.usage())
  return 2
end

-- The options of a command with C.OPTIONS (name -> function(value) ->
-- true | nil, err) and C.FLAGS (name -> function()): "--name value" and
-- "--name=value". Operands are collected, or (operands_end) end the
-- options: `scatter run FILE ARGS` hands what follows FILE to the script.
-- Returns the operands and the index after the options, or nil and the
-- exit code of the usage error it printed.
function M.options(cmd, args, C, operands_end)
  local operands, i = {}, 1
  while args[i] do
    local a = args[i]
    if a == "--" then
      -- the end of the options: a FILE (or operand) may then begin with --
      if operands_end then return operands, i + 1 end
      for j = i + 1, #args do operands[#operands + 1] = args[j] end
      return operands, #args + 1
    elseif a:sub(1, 2) ~= "--" then
      if operands_end then break end
      operands[#operands + 1] = a
    else
      local name, value = a:match("^(%-%-[%w-]+)=(.*)$")
      name = name or a
      if C.FLAGS[name] and not value then
        C.FLAGS[name]()
      elseif C.OPTIONS[name] then
        if not value then
          i = i + 1
          value = args[i]
        end
        if value == nil then return nil, M.usage_error(cmd .. ": " .. name .. " needs a value", C) end
        local ok, err = C.OPTIONS[name](value)
        if not ok then return nil, M.usage_error(cmd .. ": " .. name .. ": " .. err, C) end
      else
        return nil, M.usage_error(cmd .. ": unknown option " .. a, C)
      end
    end
    i = i + 1
  end
  return operands, i
end

-- Output lost on the way (a full disk, a file size limit) is no success,
-- but print() and io.write() never say that a write failed: stdout is
-- flushed here and its error flag read. Returns why, or nil.
local function stdout_error()
  local ok, err = io.stdout:flush()
  local ffi = require("ffi")
  -- pcall: another module may have declared them already
  pcall(ffi.cdef, "typedef struct FILE FILE;")
  pcall(ffi.cdef, "int ferror(FILE *stream);")
  if ok and ffi.C.ferror(io.stdout) == 0 then return nil end
  return err or "some output was not written (a full disk?)"
end

function M.main(argv)
  local name = argv[1]
  if name == nil then return M.usage_error("missing command") end
  if name == "--help" or name == "-h" then name = "help" end
  if name == "--version" then name = "version" end
  local cmd = load_cmd(name)
  if not cmd then return M.usage_error("unknown command '" .. tostring(name) .. "'") end
  local args = {}
  for i = 2, #argv do args[#args + 1] = argv[i] end
  if args[1] == "--help" or args[1] == "-h" then
    io.stdout:write(cmd.usage)
    return 0
  end
  local rc = cmd.run(args)
  -- (a command that failed has said why; `scatter queue` names this too)
  local werr = stdout_error()
  if werr and rc == 0 then
    io.stderr:write("scatter: cannot write to stdout: ", werr, "\n")
    rc = 1
  end
  return rc
end

return M
