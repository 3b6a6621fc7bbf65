-- A live one-line status display on a terminal: `scatter run` shows the
-- pools' progress with it, `scatter check` its count of probed proxies.
--
-- The line is redrawn at most 4 times a second (one redraw per tick of a
-- runtime timer), cut to the terminal's width so it never wraps (a wrapped
-- line cannot be redrawn in place), taken away before any log line or
-- error report and put back at the next tick, and cleared at stop.
local ffi = require("ffi")
local runtime = require("scatter.runtime")
local log = require("scatter.log")

local M = {}

M.INTERVAL = 0.25

-- pcall: another module in the process may have declared them already
for _, decl in ipairs({
  "int isatty(int fd);",
  "int ioctl(int fd, unsigned long request, ...);",
  "struct scatter_winsize { unsigned short row, col, xpixel, ypixel; };",
}) do
  pcall(ffi.cdef, decl)
end
local TIOCGWINSZ = 0x5413 -- Linux (x86_64 and aarch64)

function M.isatty(fd) return ffi.C.isatty(fd) == 1 end

local function width(fd)
  local ws = ffi.new("struct scatter_winsize")
  if ffi.C.ioctl(fd, TIOCGWINSZ, ws) == 0 and ws.col > 0 then return ws.col end
  return tonumber(os.getenv("COLUMNS")) or 80
end

local CLEAR = "\r\27[K"

local Display = {}
Display.__index = Display

-- opts: render (function -> string, or nil to show nothing this tick),
-- stream (default io.stderr), fd (its descriptor, default 2), interval.
-- Returns a display, already ticking; display:stop() clears and ends it.
function M.start(opts)
  if type(opts) ~= "table" or type(opts.render) ~= "function" then
    error("progress.start: bad argument #1 ({ render = function } expected)", 2)
  end
  local self = setmetatable({
    render = opts.render, stream = opts.stream or io.stderr, fd = opts.fd or 2,
    interval = opts.interval or M.INTERVAL, shown = false, redraws = 0,
  }, Display)
  -- Everything scatter writes to the terminal first takes the line away.
  self.old_sink, self.old_report = log.sink, runtime.report
  log.sink = function(line)
    self:clear()
    self.old_sink(line)
  end
  runtime.report = function(msg)
    self:clear()
    self.old_report(msg)
  end
  -- print() from the crawl script too, when stdout shares the terminal
  if M.isatty(1) and self.fd ~= 1 then
    self.old_print = _G.print
    _G.print = function(...)
      self:clear()
      return self.old_print(...)
    end
  end
  self:arm()
  return self
end

function Display:arm()
  self.timer = runtime.after(self.interval, function()
    if self.stopped then return end
    self:draw()
    self:arm()
  end)
end

function Display:draw()
  local ok, line = pcall(self.render)
  if not ok then
    line = "progress: " .. tostring(line)
  end
  if not line then return end
  line = log.redact(tostring(line)):gsub("[%c]", " ")
  local w = width(self.fd) - 1
  if #line > w then line = line:sub(1, math.max(0, w)) end
  self.stream:write(CLEAR, line)
  self.stream:flush()
  self.shown = true
  self.redraws = self.redraws + 1
end

function Display:clear()
  if not self.shown then return end
  self.stream:write(CLEAR)
  self.stream:flush()
  self.shown = false
end

function Display:stop()
  if self.stopped then return end
  self.stopped = true
  if self.timer then self.timer.cancelled = true end
  self:clear()
  log.sink, runtime.report = self.old_sink, self.old_report
  if self.old_print then _G.print = self.old_print end
end

-- ---- the `scatter run` line ----

local function clock(s)
  s = math.floor(s)
  return string.format("%d:%02d:%02d", math.floor(s / 3600), math.floor(s / 60) % 60, s % 60)
end

-- A render function over every pool the run opens (lua/scatter/pool.lua
-- keeps them in pool.open). Pools closed during the run still count in
-- "done"; the other figures are those of the open pools.
-- "[0:01:23] tasks 120 done / 30 pending | 2.1/s | success 18% |
--  proxies 4016 healthy, 12 cooldown, 300 dead | K=4"
function M.pools_renderer(pool_mod, now)
  local seen, order = {}, {}
  local t0 = now()
  local window = {} -- { t, {pool -> attempts_finished} }, the last minute
  -- { t, tasks done } over the last 10 s: the rate shown, the line's own
  -- (pools come and go; summing their throughput_10s once read "9.7/s"
  -- for a crawl doing 50/s, when a window ignored a pool's age).
  local dones = {}
  return function()
    for p in pairs(pool_mod.open) do
      if not seen[p] then
        seen[p] = true
        order[#order + 1] = p
      end
    end
    if #order == 0 then return nil end
    local t = now()
    local done, failed, pending = 0, 0, 0
    local healthy, untested, failing, cool, dead = 0, 0, 0, 0, 0
    local kmin, kmax
    local fin = {}
    local srate_num, srate_den, plain, nplain = 0, 0, 0, 0
    while window[1] and window[1][1] < t - 60 do table.remove(window, 1) end
    local old = window[1] and window[1][2] or {}
    for _, p in ipairs(order) do
      local m = p:metrics()
      if m then
        done = done + (m.completed_tasks or 0)
        failed = failed + (m.failed_tasks or 0)
        if not p.closed then
          pending = pending + m.pending_tasks
          healthy, cool, dead = healthy + m.healthy_proxies, cool + m.cooldown_proxies, dead + m.dead_proxies
          untested = untested + (m.untested_proxies or 0)
          failing = failing + (m.failing_proxies or 0)
          kmin = math.min(kmin or m.k_current, m.k_current)
          kmax = math.max(kmax or m.k_current, m.k_current)
          fin[p] = m.attempts_finished or 0
          -- weigh each pool's success rate by its recent attempts
          local w = fin[p] - (old[p] or 0)
          srate_num, srate_den = srate_num + w * m.success_rate_1m, srate_den + w
          plain, nplain = plain + m.success_rate_1m, nplain + 1
        end
      end
    end
    window[#window + 1] = { t, fin }
    dones[#dones + 1] = { t, done }
    while dones[2] and dones[2][1] <= t - 10 do table.remove(dones, 1) end
    local from = dones[1]
    if from[1] >= t then from = { t0, 0 } end -- the first sample
    local tput = t > from[1] and math.max(0, done - from[2]) / (t - from[1]) or 0
    local rate = srate_den > 0 and srate_num / srate_den or (nplain > 0 and plain / nplain or 0)
    local parts = {
      string.format("[%s] tasks %d done%s / %d pending", clock(t - t0), done,
        failed > 0 and (", " .. failed .. " failed") or "", pending),
      string.format("%.1f/s", tput),
      string.format("success %d%%", math.floor(rate * 100 + 0.5)),
    }
    if kmin then
      parts[#parts + 1] = string.format("proxies %d healthy, %d untested, %d failing, %d cooldown, %d dead",
        healthy, untested, failing, cool, dead)
      parts[#parts + 1] = kmin == kmax and ("K=" .. kmin) or ("K=" .. kmin .. "-" .. kmax)
    end
    -- a running scatter.crawl: its queue's counts and an ETA
    local crawl = package.loaded["scatter.crawl"]
    local cpart = crawl and crawl.progress_part(clock)
    if cpart then parts[#parts + 1] = cpart end
    return table.concat(parts, " | ")
  end
end

return M
