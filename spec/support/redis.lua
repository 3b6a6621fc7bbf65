-- A redis-server of the spec's own: 127.0.0.1 on a free port, in a temp
-- dir, AOF on and no RDB snapshots (so a restart replays the AOF), stopped
-- by PID through env (env.cleanup stops it too). Never the system instance
-- nor port 6379.
--
--   local R = require("support.redis")
--   local srv = R.start()            -- { port, url, dir, proc }
--   srv:cli("XLEN", "k")             -- redis-cli's answer, trimmed
--   srv:restart()                    -- SIGTERM (AOF flushed), same port
--   srv:kill()                       -- SIGKILL
--   srv:stop()
local env = require("support.env")

local M = {}
local Srv = {}
Srv.__index = Srv

local BIN = os.getenv("SCATTER_REDIS_SERVER") or "/usr/bin/redis-server"

function M.available()
  local f = io.open(BIN, "r")
  if f then f:close() return true end
  return false
end

local function spawn(self)
  self.proc = env.spawn({ BIN, "--port", tostring(self.port), "--bind", "127.0.0.1",
    "--dir", self.dir, "--save", "", "--appendonly", "yes", "--daemonize", "no",
    "--protected-mode", "no", "--logfile", "" },
    { name = "redis-server", log = self.dir .. "/redis.log" })
  env.wait_port(self.port, self.proc)
end

function M.start()
  local self = setmetatable({ dir = env.tmpdir() }, Srv)
  for _ = 1, 3 do
    self.port = env.free_port()
    if self.port ~= 6379 then
      local ok, err = pcall(spawn, self)
      if ok then break end
      if self.proc then self.proc:stop() end
      self.proc = nil
      if not tostring(err):find("in use", 1, true) then error(err, 0) end
    end
  end
  assert(self.proc, "redis-server did not start")
  self.url = "redis://127.0.0.1:" .. self.port .. "/0"
  return self
end

function Srv:cli(...)
  local args = { "redis-cli", "-p", tostring(self.port), "--no-raw" }
  for _, a in ipairs({ ... }) do args[#args + 1] = env.shell_quote(tostring(a)) end
  local p = io.popen(table.concat(args, " ") .. " 2>&1")
  local out = p:read("*a")
  p:close()
  return (out:gsub("%s+$", ""))
end

-- The integer of a redis-cli answer such as "(integer) 3".
function Srv:int(...)
  local out = self:cli(...)
  return tonumber(out:match("%(integer%) (%-?%d+)") or out:match("^%-?%d+$"))
end

function Srv:stop()
  if self.proc then self.proc:stop(5) end
  self.proc = nil
end

function Srv:kill()
  if self.proc then
    require("ffi").C.kill(self.proc.pid, 9) -- declared by support.env
    self.proc:stop(5)
  end
  self.proc = nil
end

function Srv:restart(pause)
  self:stop()
  if pause then env.sleep(pause) end
  spawn(self)
end

return M
