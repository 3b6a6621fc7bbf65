-- What the `scatter serve` specs share: a shell, quoting, and serve itself
-- started on a config made of Lua source.
local env = require("support.env")

local M = {}

M.PY = "/usr/bin/python3"

function M.sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("*a")
  p:close()
  return out
end

function M.q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Starts `scatter serve` with a config file made of cfg (Lua source of a
-- table) and extra args; returns the process and its port.
function M.serve(cfg_src, args)
  local cfgf = env.script("pool" .. math.random(1e9) .. ".lua", "return " .. cfg_src)
  local argv = { env.build_dir() .. "/scatter", "serve", "--listen", "127.0.0.1:0",
                 "--config", cfgf, "--quiet" }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local p = env.spawn(argv, { name = "serve" })
  local port = env.wait_until(function()
    return tonumber((env.read_file(p.log) or ""):match("listening on http://127%.0%.0%.1:(%d+)"))
  end, "serve to listen", p)
  return p, port
end

-- A Lua list literal of the proxy addresses.
function M.proxies_lua(list)
  local parts = {}
  for _, a in ipairs(list) do parts[#parts + 1] = ("%q"):format(a) end
  return "{" .. table.concat(parts, ",") .. "}"
end

return M
