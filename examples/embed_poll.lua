-- Driving scatter from a program that owns its event loop: a plain
-- poll(2) loop (through LuaJIT's FFI) that also runs its own timer, a
-- once-a-second status line, and never blocks inside scatter.
--   luajit examples/embed_poll.lua PROXY_LIST URL [N]
-- PROXY_LIST is a file (one proxy a line) or a list URL; URL is fetched N
-- times (default 10). Prints one line per response and a summary.
--
-- The whole contract: poll scatter.fd() for readability, wait at most
-- scatter.timeout() seconds (nil: no deadline of scatter's own), then call
-- scatter.step(), which does what is due and returns at once.
local ffi = require("ffi")
local scatter = require("scatter")

pcall(ffi.cdef, [[
struct pollfd { int fd; short events; short revents; };
int poll(struct pollfd *fds, unsigned long nfds, int timeout);
]])
local POLLIN = 1

local list, url, n = ...
n = tonumber(n) or 10
if not list or not url then
  io.stderr:write("usage: luajit examples/embed_poll.lua PROXY_LIST URL [N]\n")
  os.exit(2)
end

local pool = scatter.pool({
  sources = { list:match("^%a+://") and list or ("file://" .. list) },
  metrics_log_interval = 0,
})

-- The work: scatter threads, started before the loop runs them.
local ok, failed = 0, 0
for i = 1, n do
  scatter.spawn(function()
    local resp, err = pool:get(url, { timeout = 30 })
    if resp then
      ok = ok + 1
      print(("response %d: status=%d bytes=%d via %s"):format(i, resp.status, #resp.body, resp.proxy))
    else
      failed = failed + 1
      print(("response %d: %s"):format(i, err))
    end
  end)
end

-- The host program's own timer, on its own clock.
local ticks, next_tick = 0, scatter.now() + 1

local pfd = ffi.new("struct pollfd[1]")
pfd[0].fd = scatter.fd()
pfd[0].events = POLLIN
while ok + failed < n do
  scatter.step()
  local wait = next_tick - scatter.now()
  local t = scatter.timeout()
  if t and t < wait then wait = t end
  if wait < 0 then wait = 0 end
  ffi.C.poll(pfd, 1, math.ceil(wait * 1000))
  if scatter.now() >= next_tick then
    ticks = ticks + 1
    next_tick = next_tick + 1
    io.stderr:write(("tick %d: %d/%d done\n"):format(ticks, ok + failed, n))
  end
end

pool:close()
print(("done: %d ok, %d failed"):format(ok, failed))
os.exit(failed == 0 and 0 or 1)
