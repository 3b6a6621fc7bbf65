-- The embedded queue's output file (DESIGN.md section 8): attaching the
-- file complete's lines go to, and cutting what a killed run wrote past
-- the last commit. Apart from queue_sqlite.lua to keep it under 600 lines.
local fileio = require("scatter.fileio")

local M = {}

-- self: the open, writable queue_sqlite backend with nothing uncommitted.
function M.attach(self, path)
  if self.path ~= ":memory:" then
    -- lines written over the database (or its WAL) would destroy the queue
    local own = fileio.database_file(self.path, path)
    if own then
      self:flush()
      return nil, "output " .. path .. ": that is the queue's own file " .. own
    end
  end
  if self.out then self.out:close() end
  local f, ferr = fileio.open_write(path)
  if not f then
    self:flush()
    return nil, "output " .. ferr
  end
  local size, serr = f:size()
  if not size then
    f:close()
    return nil, "output " .. serr
  end
  local _, prev = self.st.meta_get:one("output")
  local _, len = self.st.meta_get:one("output_len")
  -- one file however it is spelt ("out.jsonl", "./out.jsonl", absolute):
  -- taken for a new file, a killed run's tail stayed and was written again
  local real = fileio.resolve(path)
  if prev ~= nil and prev ~= path and fileio.resolve(prev) == real then prev = path end
  if prev ~= nil and prev ~= path and type(len) == "number" then
    local old = io.open(prev, "rb")
    local osize = old and old:seek("end")
    if old then old:close() end
    if osize and osize > len then
      require("scatter.log").warn("queue: the previous output has uncommitted lines: their items are done again into the new one",
        { previous = prev, path = path, bytes = osize - len })
    end
  end
  if prev == path and type(len) == "number" then
    if size > len then
      local tok, terr = f:truncate(len)
      if not tok then
        f:close()
        return nil, "output " .. terr
      end
      require("scatter.log").info("queue: cut the output's uncommitted tail", { path = path, bytes = size - len })
    elseif size < len then
      -- shortened behind our back: keep what is there, append after it
      require("scatter.log").warn("queue: the output is shorter than committed", { path = path, bytes = len - size })
      len = size
    end
  else
    len = size -- a file new to this queue: append after what it holds
  end
  self.out, self.out_len = f, len
  self.st.meta_set:exec("output", real)
  self.st.meta_set:exec("output_len", len)
  return self:flush()
end

return M
