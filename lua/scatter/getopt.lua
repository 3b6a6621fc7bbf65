-- Command-line options for the CLI commands (lua/scatter/cmd/*.lua).
--
-- getopt.parse(args, spec) with spec = { ["--url"] = "value",
-- ["--json"] = "flag", ["--proxies"] = "list", ["-k"] = "value", ... }
-- returns opts, positionals or nil, err. opts is keyed by the option's name
-- without leading dashes ("url", "json", "k"); "list" options collect every
-- occurrence. "--name=value" and "--name value" both work, options and
-- operands may be mixed, "--" ends the options, and "-h"/"--help" anywhere
-- sets opts.help (so `scatter check x --help` helps rather than runs).
local M = {}

local function key(name) return (name:gsub("^%-+", "")) end

function M.parse(args, spec)
  local opts, pos = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--" then
      for j = i + 1, #args do pos[#pos + 1] = args[j] end
      break
    elseif a == "-h" or a == "--help" then
      opts.help = true
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      local name, value = a:match("^(%-%-[%w-]+)=(.*)$")
      name = name or a
      local kind = spec[name]
      if not kind then return nil, "unknown option " .. name end
      if kind == "flag" then
        if value then return nil, name .. " takes no value" end
        opts[key(name)] = true
      else
        if not value then
          i = i + 1
          value = args[i]
          if value == nil then return nil, name .. " needs a value" end
        end
        if kind == "list" then
          local t = opts[key(name)] or {}
          t[#t + 1] = value
          opts[key(name)] = t
        else
          opts[key(name)] = value
        end
      end
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return opts, pos
end

-- A number option: its value (default when absent), or nil, err.
function M.number(opts, name, default, what, min, integer)
  local v = opts[name]
  if v == nil then return default end
  local n = tonumber(v)
  if not n or n ~= n or n == math.huge or n < min or (integer and n ~= math.floor(n)) then
    return nil, "-" .. (#name > 1 and "-" or "") .. name .. " must be " .. what .. ", got " .. ("%q"):format(v)
  end
  return n
end

return M
