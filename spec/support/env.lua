-- Test-support layer for the scatter specs (DESIGN.md section 7).
--
-- Provides temp dirs, free ports, child-process control (proc.lua) and the
-- real servers the specs talk to (servers.lua): nginx (HTTP + HTTPS target),
-- microsocks (independent SOCKS5 server) and scatter-farm (fault-injecting
-- SOCKS5 farm). Everything started here is stopped by env.cleanup(), or,
-- when a spec file dies before calling it, when the Lua state closes (see
-- the sentinel at the bottom).
--
-- Usage from a spec:
--   package.path = "spec/?.lua;" .. package.path
--   local env = require("support.env")
--
-- The process registry (proc.lua) and the fixtures cache (servers.lua) each
-- live in one part only; busted drops all three modules after a spec file,
-- so the next file gets a fresh registry and fresh fixtures.

local env = {}

for _, part in ipairs({ require("support.proc"), require("support.servers") }) do
  for k, v in pairs(part) do
    if k ~= "lib" then
      assert(env[k] == nil, "support.env: two parts define " .. k)
      env[k] = v
    end
  end
end

-- A spec file that errors out never reaches its teardown. This userdata is
-- collected when the module is dropped (busted reloads modules per file) or
-- when the Lua state closes, and its finaliser stops what is still running.
local sentinel = newproxy(true)
getmetatable(sentinel).__gc = function() pcall(env.cleanup) end
env._sentinel = sentinel

return env
